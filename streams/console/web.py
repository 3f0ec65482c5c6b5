"""Small helpers the console's route modules share (no routes here, so no import circles)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import Request
from fastapi.responses import PlainTextResponse, Response

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


KINDS = ("spike", "theft", "flatline", "rollback", "negative")
SEVERITIES = ("critical", "warning", "info")


def render(request: Request, who: Any, name: str, *, status_code: int = 200, **context: Any) -> Response:
    """A page for the logged-in ``who`` (a ``roles.Principal``): its user and CSRF token, and ``context``."""
    state = request.app.state.console
    base = {"user": who.user, "csrf": who.session.csrf, "kiosk": False, "regions": state.regions,
            "kinds": KINDS, "severities": SEVERITIES}
    return request.app.state.templates.TemplateResponse(request, name, {**base, **context}, status_code=status_code)


def ms(value: int | None) -> str:
    """Epoch milliseconds as ``YYYY-MM-DD HH:MM:SS`` UTC (a Jinja filter)."""
    if value is None:
        return ""
    return utc(value / 1000)


def utc(value: Any) -> str:
    """Any time the console shows — epoch seconds, an ISO-8601 string, a datetime — as ``YYYY-MM-DD HH:MM:SS``
    UTC (a Jinja filter). Text that is not a time is shown as it is.

    >>> utc(1796583869.0928874), utc("2024-03-02T10:00:00+01:00"), utc("2026-01-05T09:30:00Z"), utc(None)
    ('2026-12-06 19:04:29', '2024-03-02 09:00:00', '2026-01-05 09:30:00', '')
    """
    if value is None or value == "":
        return ""
    try:
        if isinstance(value, (int, float)):
            stamp = dt.datetime.fromtimestamp(value, dt.timezone.utc)
        elif isinstance(value, dt.datetime):
            stamp = value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
        else:
            stamp = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
            stamp = stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.timezone.utc)
    except (ValueError, OverflowError, OSError):
        return str(value)
    return stamp.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def client_address(request: Request) -> str:
    """The client's address, through the console's trusted proxies only (``proxies.TrustedProxies``)."""
    peer = request.client.host if request.client else "?"
    return request.app.state.console.proxies.client(peer, request.headers.get("x-forwarded-for"))


def set_session_cookie(request: Request, response: Response, state: Any, session_id: str, ttl_s: float) -> None:
    """The session cookie: HttpOnly, SameSite=Strict, expiring with the session; Secure whenever the console's
    public URL is https (whatever scheme the server itself sees behind a proxy)."""
    response.set_cookie(state.cookie_name, session_id, max_age=int(ttl_s), path="/", httponly=True,
                        samesite="strict", secure=state.https or request.url.scheme == "https")


def attachment(body: str | bytes, *, filename: str, media_type: str = "text/csv") -> Response:
    return PlainTextResponse(body, media_type=media_type,
                             headers={"Content-Disposition": f'attachment; filename="{filename}"'})
