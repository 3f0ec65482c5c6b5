"""The console's FastAPI app: built by ``create_app(state)``, nothing at import time.

Security headers on every response (a Content-Security-Policy without ``unsafe-inline``: the pages have
no inline script or style), the role table checked against the routes at start, and login/logout here;
pages and the JSON API live in ``pages.py`` and ``api.py``.
"""

from __future__ import annotations

import time
from urllib.parse import urlencode
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Form, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.routing import Mount

from ..exceptions import MeterSealError
from . import metrics
from .roles import ACCESS, HOME, CsrfFailed, Forbidden, NotFound, NotLoggedIn, Principal, allow
from .sessions import SessionStore, Throttle
from .users import UserStore
from .web import CSP, ms, set_session_cookie

HERE = Path(__file__).parent


@dataclass
class ConsoleState:
    """Everything the routes use. ``vault`` (unlocked keys + reader) and ``hub`` (the alert feed) may be
    None: the pages then say what is not configured instead of failing."""

    users: UserStore
    sessions: SessionStore
    throttle: Throttle
    vault: Any = None
    hub: Any = None
    regions: tuple[str, ...] = ()
    broker: str | None = None
    app_id: str = "meterseal"
    oidc: Any = None
    sharing: Any = None
    privacy: Any = None
    registry: Any = None  # streams.registry.Registry: what the auditor's ledger check reads every log with
    connect: Any = None  # streams.connect.service.Connect: OAuth 2.0 + ESPI for third parties (None: off)
    alert_rules: str | None = None  # the routing rules file the admin page edits (METERSEAL_ALERT_RULES)
    rollup_min_meters: int = 10  # the region chart leaves out cells of fewer meters (METERSEAL_ROLLUP_MIN_METERS)
    cookie_name: str = "meterseal_session"
    metrics: Any = field(default_factory=metrics.ConsoleMetrics)
    verify_run: dict = field(default_factory=dict)
    started: float = field(default_factory=time.time)


def create_app(state: ConsoleState) -> FastAPI:
    app = FastAPI(title="meterseal console", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.console = state
    templates = Jinja2Templates(directory=str(HERE / "templates"))  # autoescape on for .html
    templates.env.filters["ms"] = ms
    app.state.templates = templates

    @app.middleware("http")
    async def headers(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        if "Content-Security-Policy" not in response.headers:  # the consent page widens form-action by itself
            response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"
        if not request.url.path.startswith("/static/"):
            response.headers["Cache-Control"] = "no-store"
        route = request.scope.get("route")
        state.metrics.observe(request.method, getattr(route, "path", "unmatched"), response.status_code,
                              time.perf_counter() - started)
        return response

    def wants_json(request: Request) -> bool:
        path = request.url.path
        return path.startswith(("/api/", "/events/")) or "text/html" not in request.headers.get("accept", "")

    @app.exception_handler(NotLoggedIn)
    async def not_logged_in(request: Request, _exc: NotLoggedIn) -> Response:
        if wants_json(request):
            return JSONResponse({"error": "log in first: POST /login"}, status_code=401)
        if request.method == "GET":  # come back here after logging in (a same-site path only)
            back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?{urlencode({'next': back})}", status_code=303)
        return RedirectResponse("/login", status_code=303)

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, _exc: Forbidden) -> Response:
        return _error(request, 403, "your role may not open this page")

    @app.exception_handler(CsrfFailed)
    async def csrf_failed(request: Request, _exc: CsrfFailed) -> Response:
        return _error(request, 403, "missing or wrong CSRF token: reload the page and try again")

    @app.exception_handler(NotFound)
    async def not_found(request: Request, _exc: NotFound) -> Response:
        return _error(request, 404, "not found")

    @app.exception_handler(MeterSealError)
    async def refused(request: Request, exc: MeterSealError) -> Response:
        from .api import BadRequest

        return _error(request, 400 if isinstance(exc, BadRequest) else 409, str(exc))

    def _error(request: Request, status: int, message: str) -> Response:
        if wants_json(request):
            return JSONResponse({"error": message}, status_code=status)
        return templates.TemplateResponse(request, "error.html", {"status": status, "message": message, "user": None},
                                          status_code=status)

    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    @app.get("/healthz")
    def healthz() -> dict:
        return {"ok": True}

    @app.get("/metrics")
    def metrics_route() -> Response:
        body, content_type = state.metrics.exposition(state)
        return Response(body, media_type=content_type)

    @app.get("/login")
    def login_form(request: Request, error: str | None = None, next: str | None = None) -> Response:  # noqa: A002
        session = state.sessions.get(request.cookies.get(state.cookie_name))
        if session is None or session.user:
            session = state.sessions.new(None)
        if same_site_path(next):
            session.data["next"] = next
        response = templates.TemplateResponse(request, "login.html", {
            "csrf": session.csrf, "user": None, "error": None, "oidc": state.oidc is not None})
        set_session_cookie(request, response, state, session.id, state.sessions.ttl_s)
        return response

    @app.post("/login")
    def login(request: Request, username: str = Form(""), password: str = Form(""), csrf_token: str = Form("")) -> Response:
        session = state.sessions.get(request.cookies.get(state.cookie_name))
        if session is None or session.user is not None or not session.csrf_ok(csrf_token):
            raise CsrfFailed()
        address = request.client.host if request.client else "?"
        wait = state.throttle.blocked(username, address)
        if wait > 0:
            state.metrics.logins.labels("throttled").inc()
            return _login_error(request, session, f"too many failed logins: try again in {int(wait) + 1} s", 429,
                                {"Retry-After": str(int(wait) + 1)})
        user = state.users.verify(username, password)
        if user is None:
            state.throttle.failed(username, address)
            state.metrics.logins.labels("failed").inc()
            return _login_error(request, session, "wrong user name or password", 401)
        state.throttle.succeeded(username)
        state.metrics.logins.labels("ok").inc()
        state.sessions.drop(session.id)  # a new id after login: no session fixation
        fresh = state.sessions.new(user.name)
        back = session.data.get("next")
        response = RedirectResponse(back if same_site_path(back) else HOME[user.role], status_code=303)
        set_session_cookie(request, response, state, fresh.id, state.sessions.ttl_s)
        return response

    def _login_error(request: Request, session, message: str, status: int, headers: dict | None = None) -> Response:
        return templates.TemplateResponse(request, "login.html", {"csrf": session.csrf, "user": None, "error": message,
                                                                  "oidc": state.oidc is not None},
                                          status_code=status, headers=headers)

    @app.post("/logout")
    def logout(request: Request, who: Principal = Depends(allow("POST", "/logout"))) -> Response:
        state.sessions.drop(who.session.id)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(state.cookie_name, path="/")
        return response

    @app.get("/")
    def home(who: Principal = Depends(allow("GET", "/"))) -> Response:
        return RedirectResponse(HOME[who.role], status_code=303)

    from . import alerting, api, connect, pages

    app.include_router(pages.router)
    app.include_router(alerting.router)
    app.include_router(api.router)
    app.include_router(connect.router)
    if state.oidc is not None:
        from . import oidc

        app.include_router(oidc.router)
    check_table(app)
    return app


def same_site_path(path: str | None) -> bool:
    """A path on this site to return to after login: ``/...``, not ``//host`` or ``/\\host``, no scheme, no
    control characters, at most 2,000 characters (no open redirect)."""
    return (isinstance(path, str) and 0 < len(path) <= 2000 and path.startswith("/") and not path.startswith("//")
            and "\\" not in path and not any(ord(c) < 32 for c in path) and "://" not in path.split("?", 1)[0])


def routes(app: FastAPI) -> list[tuple[str, str]]:
    """Every (method, path) the app serves, static files aside."""
    out = []

    def walk(items) -> None:
        for route in items:
            included = getattr(route, "original_router", None)  # FastAPI >= 0.13x keeps included routers whole
            if included is not None:
                walk(included.routes)
            elif not isinstance(route, Mount) and getattr(route, "methods", None):
                out.extend((method, route.path) for method in sorted(route.methods - {"HEAD"}))

    walk(app.routes)
    return out


def check_table(app: FastAPI) -> None:
    """Refuse to start if a route is not in the role table (a forgotten route would otherwise be open)."""
    missing = [r for r in routes(app) if r not in ACCESS]
    if missing:
        raise RuntimeError(f"routes missing from streams/console/roles.py ACCESS: {missing}")
