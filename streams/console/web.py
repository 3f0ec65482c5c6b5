"""Small helpers the console's route modules share (no routes here, so no import circles)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import Request
from fastapi.responses import PlainTextResponse, Response

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


def ms(value: int | None) -> str:
    """Epoch milliseconds as ``YYYY-MM-DD HH:MM:SS`` UTC (a Jinja filter)."""
    if value is None:
        return ""
    return dt.datetime.fromtimestamp(value / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def set_session_cookie(request: Request, response: Response, state: Any, session_id: str, ttl_s: float) -> None:
    """The session cookie: HttpOnly, SameSite=Strict, expiring with the session; Secure over HTTPS."""
    response.set_cookie(state.cookie_name, session_id, max_age=int(ttl_s), path="/", httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")


def attachment(body: str | bytes, *, filename: str, media_type: str = "text/csv") -> Response:
    return PlainTextResponse(body, media_type=media_type,
                             headers={"Content-Disposition": f'attachment; filename="{filename}"'})
