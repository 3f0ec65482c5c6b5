"""Logging in and out: ``GET /login`` (the form, or a redirect home for a live session), ``POST /login``
(throttled, bounded Argon2 checks, a new session id), ``POST /logout``.

``?next=`` takes the user back where it was going after the login (``/login?next=/oauth/authorize?...``): the
form repeats it, and a cookie of ``/login`` keeps it for a client that posts only its credentials. Only a
same-site relative path is followed (``safe_next``), anything else goes to the role's home page.
The login form's CSRF token is signed and stateless (``sessions.LoginCsrf``): an anonymous visitor leaves
nothing on the server, and the form never touches the session cookie.
"""

from __future__ import annotations

import asyncio
from urllib.parse import quote, unquote, urlsplit

from fastapi import APIRouter, Depends, Form, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response

from .roles import HOME, CsrfFailed, Principal, allow
from .sessions import current
from .throttle import GateBusy
from .web import client_address, set_session_cookie

router = APIRouter()
LOGIN_COOKIE = "meterseal_login"
NEXT_COOKIE = "meterseal_next"  # the ``next`` of GET /login, for a POST /login that does not repeat it
MAX_NEXT = 2048


def safe_next(target: str | None) -> str | None:
    """``target`` if it is a path on this site (``/x?y``), else None: no scheme, host, ``//`` or backslash
    (browsers read ``/\\\\evil`` as ``//evil``), no control characters.

    >>> [safe_next(t) for t in ("/oauth/authorize?client_id=a&state=b", "//evil.example/", "https://evil.example/",
    ...                         "/\\\\evil.example", "javascript:alert(1)", "admin", "/ok\\nx")]
    ['/oauth/authorize?client_id=a&state=b', None, None, None, None, None, None]
    """
    if not target or len(target) > MAX_NEXT or not target.startswith("/") or target.startswith("//"):
        return None
    if "\\" in target or any(ord(c) < 0x20 or ord(c) == 0x7F for c in target):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/"):
        return None
    return target


def _form(request: Request, *, token: str, error: str | None, next_: str | None, status: int = 200,
          headers: dict[str, str] | None = None) -> Response:
    state = request.app.state.console
    return request.app.state.templates.TemplateResponse(
        request, "login.html", {"csrf": token, "user": None, "error": error, "next": next_ or "",
                                "oidc": state.oidc is not None}, status_code=status, headers=headers)


def _with_login_cookie(request: Request, error: str | None = None, next_: str | None = None, status: int = 200,
                       headers: dict[str, str] | None = None) -> Response:
    """The login form with a fresh signed CSRF token and its cookie (path /login, 15 minutes)."""
    state = request.app.state.console
    cookie, token = state.login_csrf.new()
    response = _form(request, token=token, error=error, next_=next_, status=status, headers=headers)
    secure = state.https or request.url.scheme == "https"
    response.set_cookie(LOGIN_COOKIE, cookie, max_age=int(state.login_csrf.ttl_s), path="/login", httponly=True,
                        samesite="strict", secure=secure)
    if next_:
        response.set_cookie(NEXT_COOKIE, quote(next_, safe=""), max_age=int(state.login_csrf.ttl_s), path="/login",
                            httponly=True, samesite="strict", secure=secure)
    return response


@router.get("/login")
def login_form(request: Request, next: str | None = None) -> Response:  # noqa: A002 - the parameter's name
    state = request.app.state.console
    target = safe_next(next)
    found = current(state.sessions, state.users, request.cookies.get(state.cookie_name))
    if found is not None:  # logged in already: go on, never replace the session's cookie
        return RedirectResponse(target or HOME[found[1].role], status_code=303)
    return _with_login_cookie(request, next_=target)


@router.post("/login")
async def login(request: Request, username: str = Form(""), password: str = Form(""), csrf_token: str = Form(""),
                next: str = Form("")) -> Response:  # noqa: A002
    state = request.app.state.console
    if not state.login_csrf.check(request.cookies.get(LOGIN_COOKIE), csrf_token):
        raise CsrfFailed()
    target = safe_next(next) or safe_next(unquote(request.cookies.get(NEXT_COOKIE, "")))
    address = client_address(request)
    ticket = state.throttle.reserve(username[:128], address)
    if ticket.refused:
        state.metrics.logins.labels("throttled").inc()
        wait = int(ticket.wait) + 1
        return _with_login_cookie(request, f"too many failed logins: try again in {wait} s", target, 429,
                                  {"Retry-After": str(wait)})
    try:
        if ticket.delay:
            await asyncio.sleep(ticket.delay)
        async with state.password_gate:
            user = await run_in_threadpool(state.users.verify, username, password)
    except GateBusy:
        ticket.cancel()
        raise
    except BaseException:
        ticket.failed()
        raise
    if user is None:
        ticket.failed()
        state.metrics.logins.labels("failed").inc()
        return _with_login_cookie(request, "wrong user name or password", target, 401)
    ticket.succeeded()
    old = state.sessions.get(request.cookies.get(state.cookie_name))
    if old is not None:
        state.sessions.drop(old.id)  # a new id after every login: no session fixation
    session = state.sessions.new(user.name, account=user.account_id, auth=user.auth, address=address)
    state.metrics.logins.labels("ok").inc()
    response = RedirectResponse(target or HOME[user.role], status_code=303)
    set_session_cookie(request, response, state, session.id, state.sessions.ttl_s)
    response.delete_cookie(LOGIN_COOKIE, path="/login")
    response.delete_cookie(NEXT_COOKIE, path="/login")
    return response


@router.post("/logout")
def logout(request: Request, who: Principal = Depends(allow("POST", "/logout"))) -> Response:
    state = request.app.state.console
    state.sessions.drop(who.session.id)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(state.cookie_name, path="/")
    return response
