"""Kafka client security (TLS and SASL): the one place every Kafka client of the project gets it from.

Settings come from command-line flags first, then the environment, then the default (PLAINTEXT):

| setting | flag | environment |
|---|---|---|
| security protocol | ``--kafka-security-protocol`` | ``SKETCHGEN_KAFKA_SECURITY_PROTOCOL`` |
| SASL mechanism | ``--kafka-sasl-mechanism`` | ``SKETCHGEN_KAFKA_SASL_MECHANISM`` |
| SASL user name | ``--kafka-username`` | ``SKETCHGEN_KAFKA_USERNAME`` |
| SASL password | ``--kafka-password-file PATH`` | ``SKETCHGEN_KAFKA_PASSWORD`` or ``SKETCHGEN_KAFKA_PASSWORD_FILE`` |
| CA certificate (PEM) | ``--kafka-ca-file`` | ``SKETCHGEN_KAFKA_CA_FILE`` |

The password is never a flag value (it would show in ``ps``): it is read from the environment or from
a file (a mounted Secret), a trailing newline removed. Settings are validated once, with one-line
errors, and :meth:`KafkaSecurity.client_kwargs` maps them to kafka-python's keyword arguments, which
every ``KafkaConsumer``, ``KafkaProducer`` and ``KafkaAdminClient`` of the project receives.

Example
-------
>>> KafkaSecurity().client_kwargs()
{'security_protocol': 'PLAINTEXT'}
>>> s = KafkaSecurity("SASL_PLAINTEXT", "SCRAM-SHA-512", "ingest", "pw")
>>> sorted(s.client_kwargs())
['sasl_mechanism', 'sasl_plain_password', 'sasl_plain_username', 'security_protocol']
>>> s.describe()
"SASL_PLAINTEXT, SCRAM-SHA-512 as 'ingest'"
>>> KafkaSecurity("SASL_SSL")
Traceback (most recent call last):
...
sketch_store.errors.SketchgenError: Kafka security protocol SASL_SSL needs a SASL mechanism \
(--kafka-sasl-mechanism or SKETCHGEN_KAFKA_SASL_MECHANISM: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping

from sketch_store.errors import SketchgenError

log = logging.getLogger(__name__)

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
ENV_PROTOCOL = "SKETCHGEN_KAFKA_SECURITY_PROTOCOL"
ENV_MECHANISM = "SKETCHGEN_KAFKA_SASL_MECHANISM"
ENV_USERNAME = "SKETCHGEN_KAFKA_USERNAME"
ENV_PASSWORD = "SKETCHGEN_KAFKA_PASSWORD"
ENV_PASSWORD_FILE = "SKETCHGEN_KAFKA_PASSWORD_FILE"
ENV_CA_FILE = "SKETCHGEN_KAFKA_CA_FILE"
ENV_VARS = (ENV_PROTOCOL, ENV_MECHANISM, ENV_USERNAME, ENV_PASSWORD, ENV_PASSWORD_FILE, ENV_CA_FILE)


def _one_of(values: tuple[str, ...]) -> str:
    return f"{', '.join(values[:-1])} or {values[-1]}"


@dataclasses.dataclass(frozen=True)
class KafkaSecurity:
    """Validated TLS/SASL settings of a Kafka client (see module docstring); the password is never shown."""

    protocol: str = "PLAINTEXT"
    mechanism: str | None = None
    username: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)
    ca_file: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "protocol", _normalise(self.protocol, PROTOCOLS, "security protocol", ENV_PROTOCOL))
        if self.mechanism is not None:
            object.__setattr__(
                self, "mechanism", _normalise(self.mechanism, MECHANISMS, "SASL mechanism", ENV_MECHANISM)
            )
        if self.sasl:
            self._check_sasl()
        elif self.mechanism or self.username or self.password:
            raise SketchgenError(
                f"Kafka SASL settings (mechanism, username or password) were given but the security protocol is "
                f"{self.protocol}: use SASL_PLAINTEXT or SASL_SSL ({ENV_PROTOCOL}), or remove them"
            )
        if self.ca_file is not None:
            self._check_ca_file()

    @property
    def sasl(self) -> bool:
        """Whether the client authenticates with SASL."""
        return self.protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        """Whether the connection is encrypted with TLS."""
        return self.protocol in ("SSL", "SASL_SSL")

    def _check_sasl(self) -> None:
        if self.mechanism is None:
            raise SketchgenError(
                f"Kafka security protocol {self.protocol} needs a SASL mechanism "
                f"(--kafka-sasl-mechanism or {ENV_MECHANISM}: {_one_of(MECHANISMS)})"
            )
        if not self.username:
            raise SketchgenError(
                f"Kafka SASL {self.mechanism} needs a user name (--kafka-username or {ENV_USERNAME})"
            )
        if not self.password:
            raise SketchgenError(
                f"Kafka SASL {self.mechanism} needs a password ({ENV_PASSWORD}, or a file: "
                f"--kafka-password-file or {ENV_PASSWORD_FILE})"
            )
        if self.mechanism == "PLAIN" and not self.tls:
            log.warning("Kafka SASL PLAIN over %s sends the password unencrypted; prefer SASL_SSL", self.protocol)

    def _check_ca_file(self) -> None:
        if not self.tls:
            raise SketchgenError(
                f"a Kafka CA file was given but the security protocol is {self.protocol}: use SSL or SASL_SSL "
                f"({ENV_PROTOCOL}), or remove --kafka-ca-file / {ENV_CA_FILE}"
            )
        if not os.path.isfile(self.ca_file):  # type: ignore[arg-type]
            raise SketchgenError(f"Kafka CA file {self.ca_file!r} does not exist or is not a file")
        if not os.access(self.ca_file, os.R_OK):  # type: ignore[arg-type]
            raise SketchgenError(f"Kafka CA file {self.ca_file!r} is not readable")

    def client_kwargs(self) -> dict[str, str]:
        """kafka-python keyword arguments (``security_protocol``, ``sasl_*``, ``ssl_cafile``) for any client."""
        kwargs = {"security_protocol": self.protocol}
        if self.sasl:
            assert self.mechanism and self.username and self.password
            kwargs.update(sasl_mechanism=self.mechanism, sasl_plain_username=self.username,
                          sasl_plain_password=self.password)
        if self.ca_file is not None:
            kwargs["ssl_cafile"] = self.ca_file
        return kwargs

    def describe(self) -> str:
        """A short description for logs and error messages, without the password."""
        text = self.protocol
        if self.sasl:
            text += f", {self.mechanism} as {self.username!r}"
        if self.ca_file:
            text += f", CA {self.ca_file}"
        return text

    @classmethod
    def resolve(
        cls,
        protocol: str | None = None,
        mechanism: str | None = None,
        username: str | None = None,
        password_file: str | None = None,
        ca_file: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> KafkaSecurity:
        """Settings from flag values (``None`` when not given), falling back to ``env`` (default ``os.environ``).

        The password comes from ``password_file`` if given, else ``SKETCHGEN_KAFKA_PASSWORD``, else the file
        named by ``SKETCHGEN_KAFKA_PASSWORD_FILE``. Empty environment values count as unset.
        """
        env = os.environ if env is None else env

        def pick(flag: str | None, name: str) -> str | None:
            return flag if flag else (env.get(name) or None)

        if password_file:
            password: str | None = read_password_file(password_file)
        elif env.get(ENV_PASSWORD):
            password = env[ENV_PASSWORD]
        elif env.get(ENV_PASSWORD_FILE):
            password = read_password_file(env[ENV_PASSWORD_FILE])
        else:
            password = None
        return cls(
            protocol=pick(protocol, ENV_PROTOCOL) or "PLAINTEXT",
            mechanism=pick(mechanism, ENV_MECHANISM),
            username=pick(username, ENV_USERNAME),
            password=password,
            ca_file=pick(ca_file, ENV_CA_FILE),
        )


def _normalise(value: str, allowed: tuple[str, ...], what: str, env_name: str) -> str:
    """``value`` upper-cased (``-``/``_`` as written) if it is one of ``allowed``, else one clear error."""
    normal = value.strip().upper()
    if normal not in allowed:
        raise SketchgenError(f"unknown Kafka {what} {value!r} ({env_name}): expected {_one_of(allowed)}")
    return normal


def read_password_file(path: str) -> str:
    """The password in ``path`` (a mounted Secret), without its trailing newline; one clear error if unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            password = f.read().rstrip("\r\n")
    except OSError as exc:
        raise SketchgenError(f"cannot read the Kafka password file {path!r}: {exc.strerror or exc}") from None
    if not password:
        raise SketchgenError(f"the Kafka password file {path!r} is empty")
    return password
