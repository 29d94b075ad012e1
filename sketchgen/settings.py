"""Connection settings shared by every command: flags, then environment, then defaults.

``--kafka BOOTSTRAP`` falls back to ``SKETCHGEN_KAFKA`` then ``localhost:9092``;
``--redis URL`` to ``SKETCHGEN_REDIS`` then ``redis://localhost:6379/0``. Kafka TLS/SASL settings
(``--kafka-security-protocol`` … or ``SKETCHGEN_KAFKA_SECURITY_PROTOCOL`` …) are resolved and validated
by :class:`ingest.kafka_security.KafkaSecurity`, for the commands that talk to Kafka.

The Redis password, besides the URL's, comes from ``--redis-password-file PATH``, else
``SKETCHGEN_REDIS_PASSWORD``, else the file named by ``SKETCHGEN_REDIS_PASSWORD_FILE``, and then
replaces the URL's; it is never a flag value (it would show in ``ps``).

Every sub-command accepts all of these (:func:`add_connection_args`); one that does not use Kafka or
Redis ignores the corresponding settings and never reads or validates them.

The HTTP servers of ``learn`` and ``ingest`` take bearer tokens (:func:`add_http_auth_args`):
``--api-token-file PATH``, else the file named by ``SKETCHGEN_API_TOKEN_FILE``, guards the data
endpoints; ``--metrics-token-file PATH``, else ``SKETCHGEN_METRICS_TOKEN_FILE``, guards ``/metrics``
(open without one). Tokens are never flag values (docs/deploy.md, "API tokens").
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping

from ingest.config import DEFAULT_KAFKA
from ingest.kafka_security import (
    ENV_CA_FILE,
    ENV_MECHANISM,
    ENV_PROTOCOL,
    ENV_USERNAME,
    MECHANISMS,
    PROTOCOLS,
    KafkaSecurity,
)
from service_http.auth import HttpAuth
from sketch_store.errors import SketchgenError
from sketch_store.replication import DURABILITY_MODES, check_durability

DEFAULT_REDIS = "redis://localhost:6379/0"
ENV_REDIS_PASSWORD = "SKETCHGEN_REDIS_PASSWORD"
ENV_REDIS_PASSWORD_FILE = "SKETCHGEN_REDIS_PASSWORD_FILE"
ENV_REDIS_DURABILITY = "SKETCHGEN_REDIS_DURABILITY"
DEFAULT_REDIS_DURABILITY = "claims"
#: The environment variables that carry Redis credentials (dropped for children talking to another Redis).
REDIS_SECRET_ENV = (ENV_REDIS_PASSWORD, ENV_REDIS_PASSWORD_FILE)
ENV_API_TOKEN_FILE = "SKETCHGEN_API_TOKEN_FILE"
ENV_METRICS_TOKEN_FILE = "SKETCHGEN_METRICS_TOKEN_FILE"


@dataclasses.dataclass(frozen=True)
class Connections:
    """Where Kafka and Redis are, and their credentials, resolved once per process (passwords never shown)."""

    kafka: str
    redis: str
    kafka_security: KafkaSecurity = dataclasses.field(default_factory=KafkaSecurity)
    #: Replaces the password of the Redis URL when set (``None``: the URL's, if any).
    redis_password: str | None = dataclasses.field(default=None, repr=False)
    #: Which Redis writes wait for the primary's replicas (``sketch_store.replication``).
    redis_durability: str = DEFAULT_REDIS_DURABILITY

    @classmethod
    def from_args(cls, args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Connections:
        """Resolve flags, then environment (default ``os.environ``), then defaults.

        Kafka security is resolved (and validated) only for a command that uses Kafka, the Redis password
        (and its file read) only for one that uses Redis: see :func:`add_connection_args`.
        """
        env = os.environ if env is None else env
        return cls(
            kafka=getattr(args, "kafka", None) or env.get("SKETCHGEN_KAFKA") or DEFAULT_KAFKA,
            redis=getattr(args, "redis", None) or env.get("SKETCHGEN_REDIS") or DEFAULT_REDIS,
            kafka_security=KafkaSecurity.resolve(
                protocol=args.kafka_security_protocol, mechanism=args.kafka_sasl_mechanism,
                username=args.kafka_username, password_file=args.kafka_password_file, ca_file=args.kafka_ca_file,
                env=env,
            ) if getattr(args, "uses_kafka", False) else KafkaSecurity(),
            redis_password=resolve_redis_password(args.redis_password_file, env)
            if getattr(args, "uses_redis", False) else None,
            redis_durability=check_durability(
                getattr(args, "redis_durability", None) or env.get(ENV_REDIS_DURABILITY) or DEFAULT_REDIS_DURABILITY
            ),
        )


def resolve_redis_password(password_file: str | None, env: Mapping[str, str]) -> str | None:
    """The Redis password from ``password_file``, else ``SKETCHGEN_REDIS_PASSWORD``, else the file named by
    ``SKETCHGEN_REDIS_PASSWORD_FILE``; ``None`` when none is set (empty values count as unset)."""
    if password_file:
        return read_redis_password_file(password_file)
    if env.get(ENV_REDIS_PASSWORD):
        return env[ENV_REDIS_PASSWORD]
    if env.get(ENV_REDIS_PASSWORD_FILE):
        return read_redis_password_file(env[ENV_REDIS_PASSWORD_FILE])
    return None


def read_redis_password_file(path: str) -> str:
    """The password in ``path`` (a mounted Secret) without its trailing newline; one clear error if unusable."""
    try:
        with open(path, encoding="utf-8") as f:
            password = f.read().rstrip("\r\n")
    except OSError as exc:
        raise SketchgenError(f"cannot read the Redis password file {path!r}: {exc.strerror or exc}") from None
    if not password:
        raise SketchgenError(f"the Redis password file {path!r} is empty")
    return password


def add_connection_args(parser: argparse.ArgumentParser, kafka: bool = True, redis: bool = True) -> None:
    """Add every connection option to a sub-command: ``--kafka`` and Kafka security, ``--redis`` and its password.

    ``kafka`` / ``redis`` say whether the command uses that service (``args.uses_kafka``, ``args.uses_redis``);
    the options of an unused one are accepted and ignored, so one set of flags fits every command.
    """
    parser.set_defaults(uses_kafka=kafka, uses_redis=redis)
    unused = "" if kafka else "; not used by this command"
    parser.add_argument("--kafka", metavar="BOOTSTRAP",
                        help=f"Kafka bootstrap (env SKETCHGEN_KAFKA, default {DEFAULT_KAFKA}{unused})")
    add_kafka_security_args(parser)
    unused = "" if redis else "; not used by this command"
    parser.add_argument("--redis", metavar="URL",
                        help=f"Redis URL (env SKETCHGEN_REDIS, default {DEFAULT_REDIS}{unused})")
    parser.add_argument("--redis-durability", metavar="MODE",
                        help=f"which writes wait for the Redis primary's replicas: {', '.join(DURABILITY_MODES)} "
                             f"(env {ENV_REDIS_DURABILITY}, default {DEFAULT_REDIS_DURABILITY}: claims and the "
                             f"learner lease; replicated: every flush too){unused}")
    add_redis_password_args(parser)


def add_redis_password_args(parser: argparse.ArgumentParser) -> None:
    """``--redis-password-file``; ``--redis-password VALUE`` is refused."""
    parser.add_argument("--redis-password", nargs="?", action=RefusePassword, help=argparse.SUPPRESS)
    parser.add_argument("--redis-password-file", metavar="PATH",
                        help=f"file holding the Redis password, replacing the URL's (env {ENV_REDIS_PASSWORD}, or "
                             f"a file named by {ENV_REDIS_PASSWORD_FILE})")


def add_kafka_security_args(parser: argparse.ArgumentParser) -> None:
    """Kafka TLS/SASL flags; the password is read from the environment or a file, never from a flag value."""
    group = parser.add_argument_group("Kafka security (flags override the environment)")
    group.add_argument("--kafka-security-protocol", metavar="PROTOCOL",
                       help=f"{', '.join(PROTOCOLS)} (env {ENV_PROTOCOL}, default PLAINTEXT)")
    group.add_argument("--kafka-sasl-mechanism", metavar="MECHANISM",
                       help=f"{', '.join(MECHANISMS)} (env {ENV_MECHANISM})")
    group.add_argument("--kafka-username", metavar="USER", help=f"SASL user name (env {ENV_USERNAME})")
    group.add_argument("--kafka-password", nargs="?", action=RefusePassword, help=argparse.SUPPRESS)
    group.add_argument("--kafka-password-file", metavar="PATH",
                       help="file holding the SASL password (env SKETCHGEN_KAFKA_PASSWORD, or a file named by "
                            "SKETCHGEN_KAFKA_PASSWORD_FILE)")
    group.add_argument("--kafka-ca-file", metavar="PEM",
                       help=f"CA certificate(s) to verify the brokers (env {ENV_CA_FILE})")


class RefusePassword(argparse.Action):
    """``--kafka-password VALUE`` / ``--redis-password VALUE`` is refused (the value would show in ``ps``),
    without echoing the value.

    Declared so that argparse does not take it as an abbreviation of ``--…-password-file``.
    """

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        service = "redis" if option_string and option_string.startswith("--redis") else "kafka"
        parser.error(f"--{service}-password is not accepted (it would show in `ps`): set "
                     f"SKETCHGEN_{service.upper()}_PASSWORD or give a file with --{service}-password-file")


def add_http_auth_args(parser: argparse.ArgumentParser) -> None:
    """``--api-token-file`` and ``--metrics-token-file`` of a command that serves HTTP; a token as a flag value
    (``--api-token VALUE``, ``--metrics-token VALUE``) is refused."""
    group = parser.add_argument_group("HTTP authentication (docs/deploy.md, \"API tokens\")")
    group.add_argument("--api-token-file", metavar="PATH",
                       help=f"file of bearer tokens, one a line, re-read when it changes: the data endpoints answer "
                            f"401 without one (env {ENV_API_TOKEN_FILE}; default: open)")
    group.add_argument("--metrics-token-file", metavar="PATH",
                       help=f"file of bearer tokens for /metrics alone (env {ENV_METRICS_TOKEN_FILE}; default: "
                            f"/metrics open)")
    for flag in ("--api-token", "--metrics-token"):
        group.add_argument(flag, nargs="?", action=RefuseToken, help=argparse.SUPPRESS)


def resolve_http_auth(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> HttpAuth:
    """The token sets of :func:`add_http_auth_args`' flags, else the environment; the files are read now, so a
    missing or empty one fails at start (:class:`~service_http.auth.TokenConfigError`)."""
    env = os.environ if env is None else env
    return HttpAuth.from_files(getattr(args, "api_token_file", None) or env.get(ENV_API_TOKEN_FILE),
                               getattr(args, "metrics_token_file", None) or env.get(ENV_METRICS_TOKEN_FILE))


class RefuseToken(argparse.Action):
    """``--api-token VALUE`` / ``--metrics-token VALUE`` is refused without echoing the value (it would show in
    ``ps``); declared so that argparse does not take it as an abbreviation of ``--…-token-file``."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        parser.error(f"{option_string} is not accepted (it would show in `ps`): give a file of tokens with "
                     f"{option_string}-file")
