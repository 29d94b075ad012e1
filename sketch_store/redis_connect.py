"""Connecting to Redis: a retrying client for services, a no-retry reachability check for commands.

The password comes from the URL (``redis://[user:pass@]host:port/db``) or, taking precedence, from
``password`` (the commands read it from ``SKETCHGEN_REDIS_PASSWORD`` or a file: docs/deploy.md). It is
handed to redis-py as its ``password`` argument, never written into a URL, and never shown: every
message that names a Redis URL shows :func:`redact_url` of it, and error texts are scrubbed of the
password (:func:`scrub`).

Example
-------
>>> client = connect("redis://localhost:6379/0")  # lazy: nothing is sent yet
>>> redact_url("redis://alice:s3cret@localhost:6379/0")
'redis://alice:***@localhost:6379/0'
"""

from __future__ import annotations

import re
from urllib.parse import unquote

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.connection import ConnectionPool, parse_url
from redis.retry import Retry

from sketch_store.errors import SketchgenError

REDACTED = "***"
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_QUERY_PASSWORD_RE = re.compile(r"([?&]password=)([^&#]*)", re.IGNORECASE)
_NOT_IN_A_USER = re.compile(r"[/?#@]")
#: redis-py / urllib URL errors that never quote a part of the URL; any other text is not shown.
_SAFE_URL_ERRORS = ("Redis URL must specify", "Invalid value for '", "Port out of range", "Invalid IPv6 URL")


def _split_secrets(url: str) -> tuple[str, list[str]]:
    """``(url with its password replaced by ***, the raw pieces replaced)``.

    The user information is everything between ``scheme://`` (if any) and the last ``@``, so that a
    password with unencoded ``/ ? # @`` is still caught whole. The user name is kept when it is a
    plausible one (a URL with a scheme, no reserved character); otherwise all of it is replaced.
    """
    text = str(url)
    match = _SCHEME_RE.match(text)
    scheme, rest = (match.group(0), text[match.end():]) if match else ("", text)
    secrets: list[str] = []
    at = rest.rfind("@")
    if at >= 0:
        userinfo, rest = rest[:at], rest[at + 1:]
        user, colon, password = userinfo.partition(":")
        if match and not _NOT_IN_A_USER.search(user):
            if colon:
                secrets.append(password)
                userinfo = f"{user}:{REDACTED}"
        else:
            secrets.append(userinfo)
            userinfo = REDACTED
        rest = f"{userinfo}@{rest}"

    def hide(found: re.Match[str]) -> str:
        secrets.append(found.group(2))
        return found.group(1) + REDACTED

    return scheme + _QUERY_PASSWORD_RE.sub(hide, rest), [s for s in secrets if s]


def redact_url(url: str) -> str:
    """``url`` with its password (user information or ``?password=``) replaced by ``***``.

    User name, host, port, db and other options stay. Works on malformed URLs too: whatever could be
    a password is replaced, never shown.

    >>> redact_url("rediss://:p%40ss@redis.example:6380/2")
    'rediss://:***@redis.example:6380/2'
    >>> redact_url("redis://:ab/cd@localhost/0")
    'redis://:***@localhost/0'
    """
    return _split_secrets(url)[0]


def secrets_of(url: str, password: str | None = None) -> list[str]:
    """Every string that must not be shown: the URL's password as written and decoded, and ``password``."""
    raw = _split_secrets(url)[1]
    found = {*raw, *(unquote(s) for s in raw)}
    if password:
        found.add(password)
    return sorted((s for s in found if s), key=len, reverse=True)


def scrub(text: str, url: str, password: str | None = None) -> str:
    """``text`` (an error message) with every secret of ``url`` and ``password`` replaced by ``***``."""
    for secret in secrets_of(url, password):
        text = text.replace(secret, REDACTED)
    return text


def _url_error(url: str, exc: ValueError) -> SketchgenError:
    """One line for an unparsable URL; redis-py's text only when it cannot hold a part of the URL."""
    reason = str(exc) if str(exc).startswith(_SAFE_URL_ERRORS) else "it cannot be parsed"
    return SketchgenError(
        f"invalid Redis URL {redact_url(url)!r}: {reason} (percent-encode / ? # @ : in a password, or give the "
        "password with SKETCHGEN_REDIS_PASSWORD or --redis-password-file)"
    )


def connection_options(url: str, password: str | None = None) -> dict[str, object]:
    """redis-py connection arguments of ``url``, with ``password`` (if given) instead of the URL's.

    :raises SketchgenError: if ``url`` is not a ``redis://``, ``rediss://`` or ``unix://`` URL.
    """
    try:
        options = parse_url(url)
    except ValueError as exc:
        raise _url_error(url, exc) from None
    if password is not None:
        options["password"] = password
    return options


def _client(url: str, password: str | None, **settings: object) -> redis.Redis:
    """What ``redis.Redis.from_url(url, **settings)`` builds, with ``password`` preferred to the URL's."""
    pool = ConnectionPool(**{**settings, **connection_options(url, password)})
    client = redis.Redis(connection_pool=pool)
    client.auto_close_connection_pool = True
    return client


def connect(url: str, password: str | None = None, retries: int = 30, socket_timeout: float = 10.0) -> redis.Redis:
    """A Redis client that retries connection errors with exponential backoff (≈ 50 s in all).

    ``url`` is ``redis://[user:pass@]host:port/db`` (or ``rediss://`` for TLS); ``password``, if given,
    replaces the URL's.
    """
    return _client(
        url, password,
        socket_timeout=socket_timeout,
        socket_connect_timeout=5.0,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), retries),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        health_check_interval=30,
    )


def check_reachable(url: str, password: str | None = None) -> None:
    """Fail fast with one clear message, without the password, when Redis at ``url`` does not answer."""
    where = redact_url(url)
    quick = _client(url, password, socket_connect_timeout=3.0, socket_timeout=3.0, retry=Retry(NoBackoff(), 0))
    try:
        quick.ping()
    except redis.AuthenticationError as exc:
        raise SketchgenError(f"Redis at {where} refused the credentials: {scrub(str(exc), url, password)}") from None
    except redis.ResponseError as exc:  # e.g. a password sent to a Redis that has none
        raise SketchgenError(f"Redis at {where} refused the connection: {scrub(str(exc), url, password)}") from None
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        raise SketchgenError(f"cannot reach Redis at {where}: {scrub(str(exc), url, password)}") from None
    finally:
        quick.close()
