"""Connecting to Redis: a retrying client for services, a no-retry reachability check for commands.

URL forms
---------
* ``redis://[user:pass@]host:port/db``, ``rediss://`` (TLS), ``unix:///path?db=N``: one server.
* ``redis+sentinel://[user:pass@]host:port[,host:port…]/SERVICE[/DB]``: the primary that the Sentinels
  at ``host:port…`` (default port 26379) name for ``SERVICE``; after a failover the client asks them
  again and follows the new primary by itself. The user and password are the data nodes'; the
  Sentinels are asked without credentials unless the query says ``?sentinel_auth=yes`` (then they get
  the same user and password).
* ``redis+cluster://[user:pass@]host:port[,host:port…]``: a Redis Cluster, discovered from any of the
  seed nodes given (default port 6379); only database 0 exists there.
* ``rediss+sentinel://`` and ``rediss+cluster://``: the same over TLS (Sentinels and data nodes alike).

The password comes from the URL or, taking precedence, from ``password`` (the commands read it from
``SKETCHGEN_REDIS_PASSWORD`` or a file: docs/deploy.md). It is handed to redis-py as its ``password``
argument, never written into a URL, and never shown: every message that names a Redis URL shows
:func:`redact_url` of it, and error texts are scrubbed of the password (:func:`scrub`).

A cluster client reads the cluster's layout when it is made, so :func:`connect` of a
``redis+cluster://`` URL needs a seed node to answer; the other kinds connect lazily.

Example
-------
>>> client = connect("redis://localhost:6379/0")  # lazy: nothing is sent yet
>>> client = connect("redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/sgprimary/0")  # lazy too
>>> redact_url("redis+cluster://alice:s3cret@10.0.0.1:6379,10.0.0.2:6379")
'redis+cluster://alice:***@10.0.0.1:6379,10.0.0.2:6379'
>>> parse_multi_host("redis+sentinel://10.0.0.1,10.0.0.2:5000/sgprimary/2").hosts
(('10.0.0.1', 26379), ('10.0.0.2', 5000))
"""

from __future__ import annotations

import dataclasses
import re
from urllib.parse import parse_qs, unquote

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.connection import ConnectionPool, parse_url
from redis.exceptions import ReadOnlyError, RedisClusterException
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

from sketch_store.errors import SketchgenError

#: What :func:`connect` returns: a client of one server (direct or through Sentinel) or of a cluster.
RedisClient = redis.Redis | RedisCluster

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
    >>> redact_url("redis+sentinel://:pw@s1:26379,s2:26379/sgprimary/0")
    'redis+sentinel://:***@s1:26379,s2:26379/sgprimary/0'
    >>> redact_url("rediss+cluster://bob:a@b,c@n1:6379,n2:6379")
    'rediss+cluster://bob:***@n1:6379,n2:6379'
    """
    return _split_secrets(url)[0]


def secrets_of(url: str, password: str | None = None) -> list[str]:
    """Every string that must not be shown: the URL's password as written and decoded, and ``password``.

    >>> sorted(secrets_of("redis+cluster://u:p%40ss@n1:6379,n2:6379", "other"))
    ['other', 'p%40ss', 'p@ss']
    """
    raw = _split_secrets(url)[1]
    found = {*raw, *(unquote(s) for s in raw)}
    if password:
        found.add(password)
    return sorted((s for s in found if s), key=len, reverse=True)


def scrub(text: str, url: str, password: str | None = None) -> str:
    """``text`` (an error message) with every secret of ``url`` and ``password`` replaced by ``***``.

    >>> scrub("AUTH p@ss failed", "redis+sentinel://:p%40ss@s1:26379/svc")
    'AUTH *** failed'
    """
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


def _bad_url(url: str, reason: str) -> SketchgenError:
    """One line naming the (redacted) URL and what is wrong with it."""
    return SketchgenError(f"invalid Redis URL {redact_url(url)!r}: {reason}")


#: Multi-host schemes → (kind, TLS).
MULTI_HOST_SCHEMES = {
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
}
_SINGLE_HOST_SCHEMES = ("redis", "rediss", "unix")
_DEFAULT_PORTS = {"sentinel": 26379, "cluster": 6379}
_FORMS = {
    "sentinel": "redis+sentinel://[user:password@]HOST:PORT[,HOST:PORT…]/SERVICE[/DB]",
    "cluster": "redis+cluster://[user:password@]HOST:PORT[,HOST:PORT…]",
}
_YES = ("1", "yes", "true", "on")
_NO = ("0", "no", "false", "off")


@dataclasses.dataclass(frozen=True)
class MultiHostUrl:
    """A parsed ``redis+sentinel://`` or ``redis+cluster://`` URL (``rediss+…`` for TLS)."""

    kind: str  # "sentinel" or "cluster"
    tls: bool
    hosts: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = None
    service: str | None = None  # Sentinel's name of the monitored primary
    db: int = 0
    sentinel_auth: bool = False  # the Sentinels get the user and password too


def _scheme_of(url: str) -> str | None:
    """The lower-cased scheme of ``url`` (``redis+sentinel``), or None when it has no ``scheme://``."""
    match = _SCHEME_RE.match(str(url))
    return match.group(0)[:-3].lower() if match else None


def _parse_port(url: str, host: str, text: str, default: int) -> int:
    """``text`` as a TCP port (``default`` when empty)."""
    if not text:
        return default
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise _bad_url(url, f"the port of {host!r} must be a number from 1 to 65535, not {text!r}")
    return int(text)


def _parse_hosts(url: str, text: str, default_port: int) -> tuple[tuple[str, int], ...]:
    """``host[:port],host[:port]…`` (``[v6addr]:port`` too) as ``((host, port), …)``."""
    hosts: list[tuple[str, int]] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if item.startswith("["):
            host, bracket, rest = item[1:].partition("]")
            if not bracket or (rest and not rest.startswith(":")):
                raise _bad_url(url, f"bad IPv6 host {item!r} (write [ADDRESS]:PORT)")
            port_text = rest[1:]
        else:
            host, _, port_text = item.partition(":")
        if not host:
            raise _bad_url(url, f"a host is missing in {item!r}")
        hosts.append((unquote(host), _parse_port(url, host, port_text, default_port)))
    if not hosts:
        raise _bad_url(url, "no HOST:PORT given")
    return tuple(hosts)


def _parse_path(url: str, kind: str, path: str) -> tuple[str | None, int]:
    """``(service, db)`` of a Sentinel URL's ``/SERVICE[/DB]``; ``(None, 0)`` of a cluster's (empty or ``/0``)."""
    parts = [unquote(p) for p in path.split("/") if p]
    if kind == "cluster":
        if parts not in ([], ["0"]):
            raise _bad_url(url, f"a cluster has only database 0; write {_FORMS['cluster']}")
        return None, 0
    if not parts:
        raise _bad_url(url, f"the Sentinel service name is missing; write {_FORMS['sentinel']}")
    if len(parts) > 2:
        raise _bad_url(url, f"too many path parts; write {_FORMS['sentinel']}")
    db_text = parts[1] if len(parts) == 2 else "0"
    if not db_text.isdigit():
        raise _bad_url(url, f"the database must be a non-negative integer, not {db_text!r}")
    return parts[0], int(db_text)


def _parse_query(url: str, kind: str, query: str) -> bool:
    """The ``sentinel_auth`` option of the query (the only option the multi-host URLs take)."""
    options = parse_qs(query, keep_blank_values=True)
    unknown = sorted(set(options) - {"sentinel_auth"})
    if unknown or (options and kind != "sentinel"):
        shown = ", ".join(unknown) or "sentinel_auth"
        allowed = "sentinel_auth" if kind == "sentinel" else "none"
        raise _bad_url(url, f"unknown option {shown} (options allowed here: {allowed})")
    value = options.get("sentinel_auth", ["no"])[-1].lower()
    if value not in (*_YES, *_NO):
        raise _bad_url(url, f"sentinel_auth must be yes or no, not {value!r}")
    return value in _YES


def parse_multi_host(url: str) -> MultiHostUrl | None:
    """``url`` parsed when it is a Sentinel or Cluster URL (module docstring), None for any other scheme.

    :raises SketchgenError: one line, without the password, when such a URL is malformed.

    >>> parse_multi_host("redis+cluster://n1:7000,n2").hosts
    (('n1', 7000), ('n2', 6379))
    >>> parse_multi_host("redis://localhost:6379/0") is None
    True
    """
    scheme = _scheme_of(url)
    if scheme not in MULTI_HOST_SCHEMES:
        return None
    kind, tls = MULTI_HOST_SCHEMES[scheme]
    rest = str(url)[len(scheme) + 3:]
    rest, _, _fragment = rest.partition("#")
    at = rest.rfind("@")
    userinfo, rest = (rest[:at], rest[at + 1:]) if at >= 0 else ("", rest)
    rest, _, query = rest.partition("?")
    hosts_text, slash, path = rest.partition("/")
    user, colon, password = userinfo.partition(":")
    service, db = _parse_path(url, kind, slash + path)
    return MultiHostUrl(
        kind=kind, tls=tls, hosts=_parse_hosts(url, hosts_text, _DEFAULT_PORTS[kind]),
        username=unquote(user) or None, password=unquote(password) if colon else None,
        service=service, db=db, sentinel_auth=_parse_query(url, kind, query),
    )  # fmt: skip


def _check_scheme(url: str) -> None:
    """Refuse a URL whose scheme is none of the single- or multi-host ones, listing them all."""
    scheme = _scheme_of(url)
    if scheme is not None and scheme not in _SINGLE_HOST_SCHEMES and scheme not in MULTI_HOST_SCHEMES:
        known = ", ".join(f"{s}://" for s in (*_SINGLE_HOST_SCHEMES, *MULTI_HOST_SCHEMES))
        raise _bad_url(url, f"unknown scheme {scheme!r} (use one of {known})")


def connection_options(url: str, password: str | None = None) -> dict[str, object]:
    """redis-py connection arguments of a one-server ``url``, with ``password`` (if given) instead of the URL's.

    :raises SketchgenError: if ``url`` is not a ``redis://``, ``rediss://`` or ``unix://`` URL.
    """
    _check_scheme(url)
    if parse_multi_host(url) is not None:
        raise _bad_url(url, "a Sentinel or Cluster URL names several servers, not one")
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


def _credentials(parsed: MultiHostUrl, password: str | None) -> dict[str, object]:
    """``username``/``password`` for the data nodes: ``password`` (if given) replaces the URL's."""
    return {"username": parsed.username, "password": parsed.password if password is None else password}


def _sentinel_client(parsed: MultiHostUrl, password: str | None, settings: dict[str, object]) -> redis.Redis:
    """A client of the primary the Sentinels name for the service; it re-asks them on every reconnect."""
    timeouts = {k: v for k, v in settings.items() if k in ("socket_timeout", "socket_connect_timeout")}
    tls = {"ssl": True} if parsed.tls else {}
    sentinel_kwargs = {**timeouts, **tls, **(_credentials(parsed, password) if parsed.sentinel_auth else {})}
    sentinel = Sentinel(list(parsed.hosts), sentinel_kwargs=sentinel_kwargs)
    client = sentinel.master_for(parsed.service, db=parsed.db, **_credentials(parsed, password), **tls, **settings)
    client.auto_close_connection_pool = True
    return client


def _cluster_client(parsed: MultiHostUrl, password: str | None, settings: dict[str, object]) -> RedisCluster:
    """A cluster client seeded with the URL's nodes (it reads the cluster's layout now).

    ``settings["retry"]`` serves both redis-py generations: 5.x gives it to each node's connections,
    later versions run every command under it (with its backoff) and refresh the slot map in between.
    """
    allowed = ("socket_timeout", "socket_connect_timeout", "retry", "health_check_interval")
    options = {k: v for k, v in settings.items() if k in allowed}
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in parsed.hosts],
        ssl=parsed.tls, **_credentials(parsed, password), **options,
    )  # fmt: skip


def _any_client(url: str, password: str | None, settings: dict[str, object]) -> RedisClient:
    """The client ``url`` asks for (one server, Sentinel-managed primary, or cluster) with ``settings``."""
    _check_scheme(url)
    parsed = parse_multi_host(url)
    if parsed is None:
        return _client(url, password, **settings)
    if parsed.kind == "sentinel":
        return _sentinel_client(parsed, password, settings)
    return _cluster_client(parsed, password, settings)


def connect(url: str, password: str | None = None, retries: int = 30, socket_timeout: float = 10.0) -> RedisClient:
    """A Redis client that retries connection errors with exponential backoff (≈ 50 s in all).

    ``url`` is any form of the module docstring; ``password``, if given, replaces the URL's. Through
    Sentinel the retries also cover the ``READONLY`` answer of a demoted primary (the retry reconnects,
    asking the Sentinels for the new one); a cluster client refreshes its slot map between retries.

    :raises SketchgenError: if the URL is malformed, or no seed node of a cluster answers.
    """
    settings: dict[str, object] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": 5.0,
        "retry": Retry(ExponentialBackoff(cap=2.0, base=0.05), retries),
        "retry_on_error": [redis.ConnectionError, redis.TimeoutError, ReadOnlyError],
        "health_check_interval": 30,
    }
    try:
        return _any_client(url, password, settings)
    except RedisClusterException as exc:
        where = redact_url(url)
        raise SketchgenError(f"cannot reach Redis Cluster at {where}: {scrub(str(exc), url, password)}") from None


def _classify(exc: BaseException) -> BaseException:
    """The error that says why: a cluster client's "cannot be connected" wraps the first node's error."""
    cause = exc.__cause__
    return cause if isinstance(exc, RedisClusterException) and isinstance(cause, redis.RedisError) else exc


#: Connection settings :func:`quick_copy` replaces (the others, credentials and TLS, are kept).
_RETRY_SETTINGS = ("retry", "retry_on_error", "retry_on_timeout", "health_check_interval", "socket_timeout",
                   "socket_connect_timeout", "redis_connect_func", "connection_pool")


def _kept_settings(kwargs: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in kwargs.items() if k not in _RETRY_SETTINGS}


def quick_copy(client: RedisClient, timeout: float = 2.0) -> RedisClient:
    """A client of the same deployment as ``client`` (address, credentials, TLS; the same Sentinels or
    cluster nodes) that never retries and gives up after ``timeout`` seconds: for probes."""
    quick = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if isinstance(client, RedisCluster):
        nodes = [ClusterNode(node.host, node.port) for node in client.get_nodes()]
        kwargs = _kept_settings(client.nodes_manager.connection_kwargs)
        return RedisCluster(startup_nodes=nodes, retry=Retry(NoBackoff(), 0), **kwargs, **quick)
    pool = client.connection_pool
    kwargs = {**_kept_settings(pool.connection_kwargs), **quick, "retry": Retry(NoBackoff(), 0), "retry_on_error": [],
              "health_check_interval": 0}
    if isinstance(pool, SentinelConnectionPool):
        copy: ConnectionPool = SentinelConnectionPool(
            pool.service_name, pool.sentinel_manager, connection_class=pool.connection_class,
            is_master=pool.is_master, max_connections=2, **kwargs,
        )  # fmt: skip
    else:
        copy = ConnectionPool(connection_class=pool.connection_class, max_connections=2, **kwargs)
    probe = redis.Redis(connection_pool=copy)
    probe.auto_close_connection_pool = True
    return probe


def _unreachable_message(exc: BaseException, where: str) -> str | None:
    """The start of :func:`check_reachable`'s one line for ``exc``; None for an error it does not explain."""
    if isinstance(exc, redis.AuthenticationError):
        return f"Redis at {where} refused the credentials"
    if isinstance(exc, redis.ResponseError):  # e.g. a password sent to a Redis that has none
        return f"Redis at {where} refused the connection"
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError, RedisClusterException, OSError)):
        return f"cannot reach Redis at {where}"
    return None


def check_reachable(url: str, password: str | None = None) -> None:
    """Fail fast with one clear message, without the password, when Redis at ``url`` does not answer.

    Through Sentinel it pings the primary the Sentinels name; for a cluster, every primary.
    """
    quick: RedisClient | None = None
    try:
        quick = _any_client(url, password, {
            "socket_connect_timeout": 3.0, "socket_timeout": 3.0, "retry": Retry(NoBackoff(), 0),
        })  # fmt: skip
        quick.ping()
    except (redis.RedisError, RedisClusterException, OSError) as raised:
        exc = _classify(raised)
        message = _unreachable_message(exc, redact_url(url))
        if message is None:
            raise
        raise SketchgenError(f"{message}: {scrub(str(exc), url, password)}") from None
    finally:
        if quick is not None:
            quick.close()
