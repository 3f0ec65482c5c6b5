"""Every error the console answers, in one place, and the security headers every response carries.

``install(app)`` registers a single exception handler for everything: the access errors of ``roles``
(401/redirect, 403, 404), a bad parameter (``BadRequest``, FastAPI's validation errors: 400/422 with a
message that says which and how), too many logins or sessions (429/503 with ``Retry-After``), a refusal of
the engines (``MeterSealError``: 409 with its message) and anything unexpected (500, with no detail: the
traceback goes to the log). Errors answer JSON to API callers and the error page to browsers; every
response, errors included, gets ``secure()``'s headers — an unhandled exception's 500 too, which Starlette
sends from outside the app's middleware.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..exceptions import MeterSealError
from .roles import CsrfFailed, Forbidden, NotFound, NotLoggedIn
from .sessions import SessionLimit
from .throttle import GateBusy
from .web import CSP

log = logging.getLogger("meterseal.console")

HSTS = "max-age=31536000"


class BadRequest(MeterSealError):
    """A parameter that cannot be used; the message says which and how (400)."""


class TooMany(MeterSealError):
    """Too many attempts: 429 with ``Retry-After``."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def secure(request: Request, response: Response) -> Response:
    """The security headers: a CSP without ``unsafe-inline`` (unless the route set a narrower-purpose one: the
    consent page widens form-action to the client's origin), no framing, no sniffing, no referrer, no caching of
    anything but static files, and HSTS when the console's public URL is https."""
    if "Content-Security-Policy" not in response.headers:
        response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    if not request.url.path.startswith("/static/"):
        response.headers["Cache-Control"] = "no-store"
    console = getattr(request.app.state, "console", None)
    if console is not None and console.https:
        response.headers["Strict-Transport-Security"] = HSTS
    return response


def wants_json(request: Request) -> bool:
    path = request.url.path
    return path.startswith(("/api/", "/events/")) or "text/html" not in request.headers.get("accept", "")


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for e in exc.errors()[:5]:
        where = ".".join(str(x) for x in e.get("loc", ()) if x not in ("query", "body", "path", "form"))
        parts.append(f"{where or 'request'}: {e.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def answer(request: Request, exc: Exception) -> Response:
    """The response for ``exc`` (what the one handler sends, headers added by ``secure``)."""
    headers: dict[str, str] = {}
    if isinstance(exc, NotLoggedIn):
        if wants_json(request):
            return JSONResponse({"error": "log in first: POST /login"}, status_code=401)
        target = "/login"
        if request.method == "GET" and request.url.path not in ("/", "/login"):
            here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            target += "?next=" + quote(here, safe="")
        return RedirectResponse(target, status_code=303)
    if isinstance(exc, Forbidden):
        status, message = 403, "your role may not open this page"
    elif isinstance(exc, CsrfFailed):
        status, message = 403, "missing or wrong CSRF token: reload the page and try again"
    elif isinstance(exc, NotFound):
        status, message = 404, "not found"
    elif isinstance(exc, BadRequest):
        status, message = 400, str(exc)
    elif isinstance(exc, RequestValidationError):
        status, message = 422, _validation_message(exc)
    elif isinstance(exc, (TooMany, SessionLimit)):
        status, message = 429, str(exc)
        headers["Retry-After"] = str(int(exc.retry_after) + 1)
    elif isinstance(exc, GateBusy):
        status, message = 503, "the console is busy checking other logins: try again in a few seconds"
        headers["Retry-After"] = "5"
    elif isinstance(exc, MeterSealError):
        status, message = 409, str(exc)
    elif isinstance(exc, StarletteHTTPException):
        status, message = exc.status_code, str(exc.detail)
        headers.update(exc.headers or {})
    else:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        status, message = 500, "internal error: the console's log has the details"
    return error_response(request, status, message, headers=headers)


def error_response(request: Request, status: int, message: str, *, headers: dict[str, str] | None = None,
                   **context: Any) -> Response:
    if wants_json(request):
        return JSONResponse({"error": message}, status_code=status, headers=headers)
    return request.app.state.templates.TemplateResponse(
        request, "error.html", {"status": status, "message": message, "user": None, **context},
        status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    """The one handler, registered for each kind it answers (Starlette looks handlers up by class) and for
    ``Exception``, the unexpected: Starlette calls that one from its outermost layer, outside the middleware,
    so the handler adds the headers itself."""

    async def handle(request: Request, exc: Exception) -> Response:
        return secure(request, answer(request, exc))

    for kind in (NotLoggedIn, Forbidden, CsrfFailed, NotFound, MeterSealError, SessionLimit, GateBusy,
                 StarletteHTTPException, RequestValidationError, Exception):
        app.add_exception_handler(kind, handle)
