"""The dashboard in service mode: a login form, a session cookie, and one view per tenant.

With `[tenant:NAME]` sections the dashboard keeps one `LiveState` (and one
RRD history under `rrd_root/TENANT`) per tenant. Every page and API request
needs a session: `GET /login` is a form asking for a key, `POST /login`
checks it against the tenants' keys and sets the cookie `md_session`
(HttpOnly, SameSite=Strict, a random token; the key itself is never stored in
the cookie, the page or the log). A tenant's session sees that tenant's view
only; an admin key's session sees any tenant chosen with `?tenant=NAME` on
any page (and, without one, the events that came without a tenant).
`TenantDashboards` answers the same handler names as `Dashboard`, so
`web.build_app` serves it unchanged.
"""

from __future__ import annotations

import html
import secrets
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

COOKIE = "md_session"
#: A session lasts this long after login.
SESSION_TTL = 12 * 3600.0
#: Sessions kept at most; the oldest are forgotten first.
MAX_SESSIONS = 10_000
#: Largest login form body read.
MAX_FORM = 4096

_FORM = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}: sign in</title>
<link rel="stylesheet" href="/static/dashboard.css"></head>
<body><main><h1>{title}</h1>
<form id="login" method="post" action="/login">
<label>Key <input id="key" name="key" type="password" autocomplete="current-password" autofocus></label>
<button id="sign-in" type="submit">Sign in</button></form>
<p id="login-error">{error}</p></main></body></html>
"""


class TenantDashboards:
    """Per-tenant `Dashboard`s behind one session check; `make(tenant)` builds a tenant's on first use."""

    def __init__(self, tenants: Any, make: Callable[[str], Any], title: str) -> None:
        import asyncio

        self.tenants = tenants
        self.make = make
        self.title = title
        self.closing = asyncio.Event()
        self.views: dict[str, Any] = {}
        self.sessions: dict[str, tuple[str, bool, float, str]] = {}  # token -> (tenant, admin, expiry, view)
        self.logins = 0
        self.refused_logins = 0
        #: Seconds a stream may wait for its client (WebServer sets it before any view exists).
        self.write_timeout = 30.0

    @property
    def requests(self) -> int:
        """Requests answered by every view."""
        return sum(v.requests for v in self.views.values())

    @property
    def streams(self) -> int:
        """Open event streams of every view."""
        return sum(v.streams for v in self.views.values())

    @property
    def stalled(self) -> int:
        """Streams of every view ended because their client read nothing."""
        return sum(v.stalled for v in self.views.values())

    def view(self, tenant: str) -> Any:
        """The tenant's Dashboard ("" = events without a tenant)."""
        found = self.views.get(tenant)
        if found is None:
            found = self.views[tenant] = self.make(tenant)
            found.closing = self.closing
            found.write_timeout = self.write_timeout
        return found

    def add_routes(self, app: web.Application) -> None:
        """The login form and its POST, and logout."""
        app.router.add_get("/login", self.login_form)
        app.router.add_post("/login", self.login)
        app.router.add_post("/logout", self.logout)

    async def login_form(self, request: web.Request, error: str = "", status: int = 200) -> web.Response:
        return web.Response(text=_FORM.format(title=html.escape(self.title), error=html.escape(error)),
                            content_type="text/html", status=status, headers={"Cache-Control": "no-store"})

    async def login(self, request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > MAX_FORM:
            return web.Response(status=413, text="form too large")
        form = await request.post()
        key = form.get("key")
        tenant = self.tenants.authenticate(key if isinstance(key, str) else None)
        if tenant is None:
            self.refused_logins += 1
            return await self.login_form(request, "That key is not valid.", 401)
        self.logins += 1
        admin = bool(self.tenants.specs[tenant].admin)
        token = secrets.token_urlsafe(32)
        now = time.time()
        for old in [t for t, s in self.sessions.items() if s[2] < now]:
            del self.sessions[old]
        while len(self.sessions) >= MAX_SESSIONS:
            del self.sessions[next(iter(self.sessions))]
        self.sessions[token] = (tenant, admin, now + SESSION_TTL, "" if admin else tenant)
        response = web.HTTPSeeOther("/")
        # Secure over HTTPS: the browser then never sends the session over plain HTTP.
        response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/", max_age=int(SESSION_TTL),
                            secure=request.secure)
        return response

    async def logout(self, request: web.Request) -> web.Response:
        self.sessions.pop(request.cookies.get(COOKIE, ""), None)
        response = web.HTTPSeeOther("/login")
        response.del_cookie(COOKIE, path="/")
        return response

    def session_view(self, request: web.Request) -> str | None:
        """The tenant whose view this request sees, or None without a valid session."""
        token = request.cookies.get(COOKIE, "")
        session = self.sessions.get(token)
        if session is None or session[2] < time.time():
            return None
        tenant, admin, expiry, view = session
        if admin:
            wanted = request.query.get("tenant")
            if wanted is not None and (wanted in self.tenants.specs or wanted == ""):
                view = wanted
                self.sessions[token] = (tenant, admin, expiry, view)
            return view
        return tenant

    def __getattr__(self, name: str) -> Callable[[web.Request], Any]:
        """A handler of `Dashboard` (`index`, `api_overview`, ...) run on the session's view."""
        if not (name == "index" or name.startswith("api_")):
            raise AttributeError(name)

        async def handler(request: web.Request) -> web.StreamResponse:
            view = self.session_view(request)
            if view is None:
                if name == "index":
                    raise web.HTTPSeeOther("/login")
                return web.json_response({"error": "sign in at /login"}, status=401)
            return await getattr(self.view(view), name)(request)

        return handler
