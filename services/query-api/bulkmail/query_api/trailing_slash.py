"""Every route answers with and without its trailing ``/``.

Close's own client appends ``/`` to every path (``bulk_action/email/preview/``), while curl users
type what the README shows. Rather than declare each route twice, a request whose path matches no
route fully is tried with the slash toggled; if that path matches, it is served in place (no
redirect, so a POST keeps its body). A path that matches neither way is answered as before (404,
or 405 when only another method matches).
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send


class EitherSlashMiddleware:
    def __init__(self, app: ASGIApp, routes: list[BaseRoute]) -> None:
        self.app = app
        # The app's live route list: routes included after the middleware was added count too.
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] != "/" and not self._full_match(scope):
            path: str = scope["path"]
            other = path[:-1] if path.endswith("/") else path + "/"
            toggled = {**scope, "path": other, "raw_path": other.encode()}
            if self._full_match(toggled):
                scope = toggled
        await self.app(scope, receive, send)

    def _full_match(self, scope: Scope) -> bool:
        return any(route.matches(scope)[0] is Match.FULL for route in self.routes)
