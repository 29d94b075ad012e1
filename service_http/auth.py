"""Optional bearer-token authentication for the learner's and the ingest worker's HTTP endpoints.

A pure ASGI middleware (:class:`BearerAuth`), so it sits in front of whatever routing the app
has. Which paths it guards (docs/deploy.md, "API tokens"):

* open: :data:`OPEN_PATHS` (probes, the live page's HTML, the OpenAPI document) and anything under
  :data:`OPEN_PREFIX` (the page's JS and CSS; they hold no data). The page's data calls carry the token;
* ``/metrics``: open, or behind its own token set (``--metrics-token-file``, so Prometheus scrapes
  with its own credential);
* everything else (``/sample``, ``/density``, ``/history``, ``/status`` and any endpoint added later):
  behind the API token set (``--api-token-file``). It is an allow-list of open paths, so a new
  endpoint is protected by default.

A request without a usable ``Authorization: Bearer TOKEN`` header gets 401 with
``WWW-Authenticate: Bearer realm="sketchgen"`` (plus ``error="invalid_token"`` when a token was
given but matches none) and a JSON body ``{"error": …}`` that never echoes the token. Tokens in the
query string are never accepted (query strings are written to access logs).

The presented token is compared with every configured one, without an early exit, by
``hmac.compare_digest`` of SHA-256 digests: the time taken depends neither on which token matched
nor on how much of a token's prefix was right, nor on the configured tokens' lengths.

A token file (:class:`TokenFile`) holds one or more tokens, one a line (blank lines and ``#``
comments ignored): a rotation adds the new token as a second line, rolls the clients, then removes
the old one. The file is checked at most every :data:`CHECK_EVERY_SECONDS` (inode, device, size
and mtime of the path, symlinks followed, so a Kubernetes Secret volume's atomic symlink swap is
seen) and re-read when it changed; a file that becomes unreadable, empty or malformed keeps the
last good tokens, with one warning until it is good again. Tokens are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sketch_store.errors import SketchgenError

if TYPE_CHECKING:
    from starlette.middleware import Middleware

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Paths answered without a token: probes, the live page's HTML and the OpenAPI document.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/", "/index.html", "/openapi.json"})
#: Prefix of the live page's static files (JS, CSS), answered without a token.
OPEN_PREFIX = "/static/"
#: The Prometheus endpoint: open, or behind its own token set.
METRICS_PATH = "/metrics"
#: Realm named in ``WWW-Authenticate``.
REALM = "sketchgen"
#: Seconds between two checks of a token file for a change.
CHECK_EVERY_SECONDS = 1.0
#: What a token may be made of: RFC 6750's b64token (what a Bearer header can carry).
TOKEN_RE = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
#: Query parameters that look like a token sent in the URL (refused with a hint, never accepted).
QUERY_TOKEN_NAMES = ("access_token", "token", "api_token")


class TokenConfigError(SketchgenError):
    """A token file that cannot be used (missing, unreadable, empty, or a line that is not a token)."""


def parse_tokens(text: str, path: str) -> tuple[str, ...]:
    """The tokens of a token file's ``text``: one per line, blank lines and ``#`` comments skipped.

    Raises :class:`TokenConfigError` naming the line (never its content) when a line is not a
    bearer token (RFC 6750 b64token characters), or when there is no token at all.
    """
    tokens = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not TOKEN_RE.fullmatch(line):
            raise TokenConfigError(f"{path}, line {number}: not a bearer token (allowed: letters, digits and "
                                   f"-._~+/ then optional '='; no spaces)")
        tokens.append(line)
    if not tokens:
        raise TokenConfigError(f"the token file {path!r} holds no token (one per line; blank lines and # comments "
                               f"are ignored)")
    return tuple(tokens)


def read_tokens(path: str) -> tuple[str, ...]:
    """The tokens in ``path``; :class:`TokenConfigError` if it cannot be read or holds none."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise TokenConfigError(f"cannot read the token file {path!r}: {reason}") from None
    return parse_tokens(text, path)


def _digest(token: str | bytes) -> bytes:
    return hashlib.sha256(token.encode("latin-1") if isinstance(token, str) else token).digest()


class TokenFile:
    """The tokens of one file, re-read when the file changes (checked at most every ``check_every`` s).

    Reading at construction raises :class:`TokenConfigError` (a configuration error at start); later a
    bad file keeps the last good tokens, with one warning until it is good again. Only the tokens'
    SHA-256 digests are kept.
    """

    def __init__(self, path: str, what: str = "API", check_every: float = CHECK_EVERY_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.path, self.what, self.check_every, self._clock = path, what, check_every, clock
        self._lock = threading.Lock()
        self._key = self._stat_key()
        self._digests = tuple(_digest(t) for t in read_tokens(path))
        self._checked = clock()
        self._failing = False
        log.info("%s tokens: %d from %s", what, len(self._digests), path)

    @property
    def count(self) -> int:
        """How many tokens are in force."""
        return len(self._digests)

    def _stat_key(self) -> tuple[int, ...] | None:
        try:
            st = os.stat(self.path)  # follows symlinks: a Secret volume's ..data swap changes the inode
        except OSError:
            return None
        return st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns

    def refresh(self, force: bool = False) -> None:
        """Re-read the file if it changed since the last read (at most every ``check_every`` s unless ``force``)."""
        now = self._clock()
        if not force and now - self._checked < self.check_every:
            return
        with self._lock:
            self._checked = now
            key = self._stat_key()
            if key is not None and key == self._key and not self._failing:
                return
            try:
                tokens = read_tokens(self.path)
            except TokenConfigError as exc:
                if not self._failing:
                    log.warning("%s token file changed and cannot be used (%s); keeping the %d token(s) read "
                                "before", self.what, exc, len(self._digests))
                self._failing = True
                return
            self._digests = tuple(_digest(t) for t in tokens)
            self._key, self._failing = key, False
            log.info("%s tokens reloaded: %d from %s", self.what, len(self._digests), self.path)

    def matches(self, token: bytes) -> bool:
        """Whether ``token`` is one of the tokens in force; compares with every one (no early exit)."""
        self.refresh()
        given = _digest(token)
        found = False
        for digest in self._digests:
            found |= hmac.compare_digest(given, digest)
        return found


@dataclass(frozen=True)
class HttpAuth:
    """The token sets of one server: ``api`` guards the data endpoints, ``metrics`` ``/metrics``; None: open."""

    api: TokenFile | None = None
    metrics: TokenFile | None = None

    @classmethod
    def from_files(cls, api_token_file: str | None, metrics_token_file: str | None) -> HttpAuth:
        """Read both files now (a missing or empty one is a :class:`TokenConfigError`); None or "" is open."""
        return cls(api=TokenFile(api_token_file, "API") if api_token_file else None,
                   metrics=TokenFile(metrics_token_file, "metrics") if metrics_token_file else None)

    @property
    def enabled(self) -> bool:
        return self.api is not None or self.metrics is not None

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """``app`` behind :class:`BearerAuth`, or ``app`` itself when no token set is configured."""
        return BearerAuth(app, self) if self.enabled else app

    def middleware(self) -> list[Middleware]:
        """:class:`BearerAuth` for :func:`service_http.app.create_app`'s ``middleware`` hook ([] when open)."""
        from starlette.middleware import Middleware  # here: the CLI reads this module, not every command serves

        return [Middleware(BearerAuth, auth=self)] if self.enabled else []


def is_open_path(path: str) -> bool:
    """Whether ``path`` is answered without any token (:data:`OPEN_PATHS`, or a plain file under ``/static/``)."""
    if path in OPEN_PATHS:
        return True
    if not path.startswith(OPEN_PREFIX):
        return False
    rest = path[len(OPEN_PREFIX):]
    return bool(rest) and "\\" not in rest and all(part not in ("", ".", "..") for part in rest.split("/"))


def guard_of(path: str) -> str | None:
    """Which token set guards ``path``: ``"metrics"`` for :data:`METRICS_PATH`, None when it is open
    (:func:`is_open_path`), ``"api"`` for everything else.

    The one rule :class:`BearerAuth` applies and the OpenAPI documents declare
    (:mod:`service_http.openapi_security`); a set that is not configured leaves its paths open at run time.
    """
    if path == METRICS_PATH:
        return "metrics"
    return None if is_open_path(path) else "api"


def bearer_token(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The token of the first ``Authorization: Bearer TOKEN`` header (scheme case-insensitive); b"" when an
    Authorization header is there but not a usable bearer one; None without one."""
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, token = value.strip().partition(b" ")
            return token.strip() if scheme.lower() == b"bearer" else b""
    return None


class BearerAuth:
    """Pure ASGI middleware: 401 on a guarded path without a matching bearer token (module docstring)."""

    def __init__(self, app: ASGIApp, auth: HttpAuth) -> None:
        self.app, self.auth = app, auth

    def _guard(self, path: str) -> TokenFile | None:
        """The token set that guards ``path``, or None when it is open."""
        guard = guard_of(path)
        return self.auth.metrics if guard == "metrics" else self.auth.api if guard == "api" else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        tokens = self._guard(path)
        if tokens is None:
            await self.app(scope, receive, send)
            return
        token = bearer_token(scope.get("headers", ()))
        if token and tokens.matches(token):
            await self.app(scope, receive, send)
            return
        log.debug("401 on %s: %s", path, "no bearer token" if token is None else "token refused")
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await send_401(send, given=token is not None, query=scope.get("query_string", b""))


def _unauthorized_message(given: bool, query: bytes) -> str:
    if given:
        return "invalid token: send a configured token as Authorization: Bearer TOKEN"
    names = {part.partition(b"=")[0].decode("latin-1").lower() for part in query.split(b"&")}
    if names & set(QUERY_TOKEN_NAMES):
        return ("tokens are not accepted in the query string (it is logged): send the header "
                "Authorization: Bearer TOKEN")
    return "this endpoint needs a token: send the header Authorization: Bearer TOKEN"


async def send_401(send: Send, given: bool, query: bytes = b"") -> None:
    """Answer 401 with ``WWW-Authenticate`` (``error="invalid_token"`` when a token was ``given``) and JSON."""
    challenge = f'Bearer realm="{REALM}"' + (', error="invalid_token"' if given else "")
    body = json.dumps({"error": _unauthorized_message(given, query)}).encode()
    await send({"type": "http.response.start", "status": 401, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"www-authenticate", challenge.encode()), (b"cache-control", b"no-store"),
    ]})
    await send({"type": "http.response.body", "body": body})
