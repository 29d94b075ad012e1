"""Query strings as these services have always read them: a blank value (``?since=``) means the parameter is absent.

The routes declare typed parameters (FastAPI validates them and writes them into the OpenAPI document);
a typed parameter would refuse ``""`` as not a number, where the learner's ``/history`` and ``/density``
read a blank value as "use the default". See docs/learner.md, "HTTP".
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send


class BlankQueryIsAbsent:
    """ASGI middleware: on ``paths``, a query parameter with an empty value (``?since=``) counts as absent.

    The routes' typed parameters would refuse ``""`` as not a number; these endpoints have always read
    a blank value as "use the default".
    """

    def __init__(self, app: ASGIApp, paths: frozenset[str]) -> None:
        self.app = app
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] in self.paths and scope.get("query_string"):
            pairs = scope["query_string"].split(b"&")
            kept = [p for p in pairs if p and not p.endswith(b"=")]
            scope = {**scope, "query_string": b"&".join(kept)}
        await self.app(scope, receive, send)
