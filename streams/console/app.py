"""The console's FastAPI app: built by ``create_app(state)``, nothing at import time.

Security headers on every response (``errors.secure``: a Content-Security-Policy without ``unsafe-inline`` —
the pages have no inline script or style — and HSTS when the public URL is https), one exception handler for
every error (``errors.install``), request bodies bounded, and the role table checked against the routes at
start. Login and logout live in ``login.py``, pages in ``pages.py`` and ``admin.py``, the JSON API in ``api.py``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import Depends, FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.routing import Mount

from ..connect.service import Connect
from ..registry import Registry
from . import admin, alerting, api, connect, erasure, errors, login, pages
from .erasure import ErasedMeters
from .data import Vault
from .engines import Privacy, Sharing
from .feed import AlertHub
from .metrics import ConsoleMetrics
from .proxies import TrustedProxies
from .roles import ACCESS, HOME, Principal, allow
from .sessions import LoginCsrf, SessionStore
from .throttle import PasswordGate, Throttle
from .users import UserStore
from .web import ms, utc

if TYPE_CHECKING:  # OIDC is optional: Authlib is imported only when a console uses it
    from .oidc import OidcConfig

HERE = Path(__file__).parent
MAX_BODY = 64 * 1024  # the largest form the console takes (a request over it is refused before it is read)


@dataclass
class ConsoleState:
    """Everything the routes use. ``vault`` (unlocked keys + reader), ``hub`` (the alert feed), ``sharing``,
    ``privacy`` and ``connect`` may be None: the pages then say what is not configured instead of failing."""

    users: UserStore
    sessions: SessionStore
    throttle: Throttle
    vault: Vault | None = None
    hub: AlertHub | None = None
    regions: tuple[str, ...] = ()
    broker: str | None = None
    app_id: str = "meterseal"
    oidc: OidcConfig | None = None
    sharing: Sharing | None = None
    privacy: Privacy | None = None
    registry: Registry | None = None  # what the auditor's ledger check reads every log with
    connect: Connect | None = None  # Connect My Data: OAuth 2.0 + ESPI for third parties (None: off)
    alert_rules: str | None = None  # the routing rules file the admin page edits (METERSEAL_ALERT_RULES)
    rollup_min_meters: int = 10  # the region chart leaves out cells of fewer meters (METERSEAL_ROLLUP_MIN_METERS)
    erasure_grace_s: float = 5.0  # an approved erasure waits this long for the workers (METERSEAL_ERASURE_GRACE_S)
    erased: ErasedMeters | None = None  # the erasure fence: pages never show an erased meter again
    public_url: str | None = None
    """Where users reach the console (``METERSEAL_PUBLIC_URL``): the OIDC redirect URI; https turns on
    ``Secure`` cookies and HSTS."""
    proxies: TrustedProxies = field(default_factory=TrustedProxies)
    password_gate: PasswordGate = field(default_factory=PasswordGate)
    login_csrf: LoginCsrf = field(default_factory=LoginCsrf)
    cookie_name: str = "meterseal_session"
    metrics: ConsoleMetrics = field(default_factory=ConsoleMetrics)
    verify_run: dict = field(default_factory=dict)
    started: float = field(default_factory=time.time)

    @property
    def https(self) -> bool:
        return bool(self.public_url and self.public_url.lower().startswith("https://"))


def create_app(state: ConsoleState) -> FastAPI:
    app = FastAPI(title="meterseal console", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.console = state
    templates = Jinja2Templates(directory=str(HERE / "templates"))  # autoescape on for .html
    templates.env.filters["ms"] = ms
    templates.env.filters["utc"] = utc
    app.state.templates = templates
    errors.install(app)

    @app.middleware("http")
    async def headers(request: Request, call_next):
        started = time.perf_counter()
        length = request.headers.get("content-length", "")
        if (length.isdigit() and int(length) > MAX_BODY) or (length and not length.isdigit()):
            response = errors.error_response(request, 413, f"request body over {MAX_BODY // 1024} KiB")
        else:
            response = await call_next(request)
        errors.secure(request, response)
        route = request.scope.get("route")
        state.metrics.observe(request.method, getattr(route, "path", "unmatched"), response.status_code,
                              time.perf_counter() - started)
        return response

    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    @app.get("/healthz")
    def healthz() -> dict:
        return {"ok": True}

    @app.get("/metrics")
    def metrics_route() -> Response:
        body, content_type = state.metrics.exposition(state)
        return Response(body, media_type=content_type)

    @app.get("/")
    def home(who: Principal = Depends(allow("GET", "/"))) -> Response:
        return RedirectResponse(HOME[who.role], status_code=303)

    app.include_router(login.router)
    app.include_router(pages.router)
    app.include_router(alerting.router)
    app.include_router(admin.router)
    app.include_router(erasure.router)
    app.include_router(api.router)
    app.include_router(connect.router)
    if state.oidc is not None:
        from . import oidc

        state.oidc.for_public_url(state.public_url)
        app.include_router(oidc.router)
    check_table(app)
    return app


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
