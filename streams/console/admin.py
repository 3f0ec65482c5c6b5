"""The administration page's actions: add and remove console accounts, revoke a grant.

Each is a CSRF-protected form (``roles.allow`` checks the token) that calls what the CLI calls: accounts go
through ``UserStore`` with the CLI's rules (a name of 1-64 characters, a password of 12+ characters, a
customer's meters), so ending the sessions of a removed account works the same from either; a revocation
goes through the sharing engine and is a signed leaf of the consent log, as ``meterseal grant revoke`` is.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response

from ..exceptions import ConfigError, ShareError
from .erasure import admin_requests
from .roles import NotFound, Principal, allow
from .users import MIN_PASSWORD, ROLES
from .web import render

router = APIRouter()


def admin_context(state: Any) -> dict[str, Any]:
    """What the administration page shows: accounts, parties, grants (newest first), third parties and keys."""
    from ..connect.clients import STATUSES

    sharing = state.sharing
    return {"users": state.users.list(), "roles": ROLES, "min_password": MIN_PASSWORD,
            "keys": state.vault.key_status() if state.vault else None,
            "parties": sharing.parties() if sharing else [], "sharing": sharing is not None,
            "grants": list(reversed(sharing.all())) if sharing else [],
            "clients": state.connect.clients() if state.connect else None, "statuses": STATUSES,
            "erasures": admin_requests(state)}


def admin_page(request: Request, who: Principal, *, issued: dict | None = None, refused: str | None = None,
               error: str | None = None, form: dict[str, str] | None = None, status_code: int = 200) -> Response:
    """The admin page; ``issued``: a third party's new client secret, shown this once; ``refused``: why a third
    party's registration failed; ``error``/``form``: why an account was not added, and the form as it was sent."""
    return render(request, who, "admin.html", status_code=status_code, issued=issued, refused=refused, error=error,
                  form=form or {}, **admin_context(request.app.state.console))


@router.post("/admin/users")
def user_add(request: Request, name: str = Form(""), role: str = Form(""), meters: str = Form(""),
             password: str = Form(""), confirm: str = Form(""),
             who: Principal = Depends(allow("POST", "/admin/users"))) -> Response:
    """``meterseal console user add NAME --role ROLE [--meter M ...]`` from the page."""
    form = {"name": name[:64], "role": role[:16], "meters": meters[:2000]}
    if password != confirm:
        return admin_page(request, who, status_code=400, error="the two passwords differ", form=form)
    try:
        user = request.app.state.console.users.add(name.strip(), role, password=password,
                                                   meters=[m for m in meters.replace(",", " ").split()])
    except ConfigError as exc:
        return admin_page(request, who, status_code=400, error=str(exc), form=form)
    return RedirectResponse(f"/admin?added={quote(user.name)}#users", status_code=303)


@router.post("/admin/users/{name}/remove")
def user_remove(name: str, request: Request,
                who: Principal = Depends(allow("POST", "/admin/users/{name}/remove"))) -> Response:
    """``meterseal console user remove NAME`` from the page; its sessions end now."""
    state = request.app.state.console
    if name == who.user.name:
        return admin_page(request, who, status_code=409, error="you cannot remove your own account: ask another admin",
                     form={})
    try:
        gone = state.users.remove(name)
    except ConfigError:
        raise NotFound() from None
    state.sessions.drop_account(gone.account_id)
    return RedirectResponse(f"/admin?removed={quote(name)}#users", status_code=303)


@router.post("/admin/grants/{grant_id}/revoke")
def grant_revoke(grant_id: str, request: Request,
                 who: Principal = Depends(allow("POST", "/admin/grants/{grant_id}/revoke"))) -> Response:
    """``meterseal grant revoke ID`` from the page: a signed revocation in the consent log."""
    sharing = request.app.state.console.sharing
    if sharing is None or grant_id not in {g["grant_id"] for g in sharing.all()}:
        raise NotFound()
    try:
        sharing.revoke(grant_id, reason=f"revoked by admin {who.user.name} in the console")
    except ShareError as exc:  # already revoked (two admins at once): say so
        return admin_page(request, who, status_code=409, error=str(exc), form={})
    return RedirectResponse(f"/admin?revoked={quote(grant_id)}#grants", status_code=303)
