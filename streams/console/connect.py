"""Connect My Data routes: the OAuth 2.0 endpoints, the ESPI resource server, consent receipts and the admin's
third-party forms. Thin: each handler turns the request into ``streams.connect.oauth.HttpRequest`` or plain
arguments and calls ``state.connect`` (``streams.connect.service.Connect``) in a worker thread.

Who may call what is in ``roles.ACCESS`` like every route: the consent page is the ``customer``'s (a visitor
who is not logged in goes through ``/login?next=`` and comes back); the token, revocation and ESPI routes are
``PUBLIC`` in the role table because they authenticate the *third party* — client credentials at
``/oauth/token`` and ``/oauth/revoke``, a bearer token on every ESPI call — never a console session.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from ..connect.oauth import HttpRequest
from ..connect.service import Refused, Reply
from ..exceptions import MeterSealError
from .web import CSP
from .roles import NotFound, Principal, allow

router = APIRouter()
ESPI = "/espi/1_1/resource"
ATOM = "application/atom+xml"
BUNDLE = "application/vnd.meterseal.bundle+json"


def _connect(request: Request) -> Any:
    connect = request.app.state.console.connect
    if connect is None:
        raise NotFound()
    return connect


def _base(request: Request) -> str:
    connect = request.app.state.console.connect
    return (connect.public_url if connect and connect.public_url else f"{request.url.scheme}://{request.url.netloc}")


async def _http(request: Request) -> HttpRequest:
    form: tuple = ()
    if request.method == "POST" and request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"):
        form = tuple((k, v) for k, v in (await request.form()).multi_items() if isinstance(v, str))
    url = f"{_base(request)}{request.url.path}" + (f"?{request.url.query}" if request.url.query else "")
    return HttpRequest(request.method, url, dict(request.headers), tuple(request.query_params.multi_items()), form)


def _send(reply: Reply) -> Response:
    headers = {k: v for k, v in reply.headers if k.lower() != "content-type"}
    if reply.status in (301, 302, 303) and reply.location:
        return RedirectResponse(reply.location, status_code=302, headers={"Cache-Control": "no-store"})
    body = reply.body if isinstance(reply.body, (bytes, str)) else json.dumps(reply.body)
    return Response(body, status_code=reply.status, media_type="application/json", headers=headers)


# -- the authorization endpoint (the customer's consent) ----------------------------------------------
@router.get("/oauth/authorize")
async def authorize(request: Request, who: Principal = Depends(allow("GET", "/oauth/authorize"))) -> Response:
    connect = _connect(request)
    view = await run_in_threadpool(connect.consent_request, await _http(request))
    if isinstance(view, Reply):
        return _refusal(request, who, view)
    from .pages import render

    response = render(request, who, "consent.html", client=view.client, scope=view.scope, meters=who.user.meters,
                      action=f"/oauth/authorize?{request.url.query}")
    # the form's answer redirects to the client's registered URI: CSP form-action must allow that origin only
    target = urlsplit(view.redirect_uri)
    response.headers["Content-Security-Policy"] = CSP.replace(
        "form-action 'self'", f"form-action 'self' {target.scheme}://{target.netloc}")
    return response


@router.post("/oauth/authorize")
async def decide(request: Request, decision: str = Form(""),
                 who: Principal = Depends(allow("POST", "/oauth/authorize"))) -> Response:
    from .api import BadRequest

    connect = _connect(request)
    form = await request.form()
    chosen = [m for m in form.getlist("meter") if isinstance(m, str)]
    for meter in chosen:
        who.check_meter(meter)  # a meter that is not this customer's: 404, nothing granted
    if decision not in ("approve", "deny"):
        raise BadRequest("decision must be approve or deny")
    reply = await run_in_threadpool(lambda: connect.decide(
        HttpRequest("GET", f"{_base(request)}/oauth/authorize?{request.url.query}", dict(request.headers),
                    tuple(request.query_params.multi_items())),
        approve=decision == "approve", customer_meters=who.user.meters, chosen=chosen))
    return _refusal(request, who, reply) if reply.status >= 400 else _send(reply)


def _refusal(request: Request, who: Principal, reply: Reply) -> Response:
    """A refused authorization request: redirected with ``error=`` when the client's redirect URI is known
    good, else shown here (never redirected to an unchecked URI)."""
    if reply.location:
        return _send(reply)
    from .pages import render

    body = reply.body if isinstance(reply.body, dict) else {}
    message = f"{body.get('error', 'invalid_request')}: {body.get('error_description', '')}".strip(": ")
    return render(request, who, "error.html", status=reply.status, message=message, status_code=reply.status)


# -- token and revocation endpoints (client authentication, no session) --------------------------------
@router.post("/oauth/token")
async def token(request: Request) -> Response:
    return _send(await run_in_threadpool(_connect(request).token, await _http(request)))


@router.post("/oauth/revoke")
async def revoke_token(request: Request) -> Response:
    return _send(await run_in_threadpool(_connect(request).revoke_token, await _http(request)))


# -- the ESPI resource server (bearer tokens) ----------------------------------------------------------
def _refused(exc: Refused) -> Response:
    return JSONResponse({"error": exc.error, "error_description": exc.description}, status_code=exc.status,
                        headers={"WWW-Authenticate": f'Bearer error="{exc.error}"'} if exc.status == 401 else None)


async def _access(request: Request, subscription: str | None = None) -> Any:
    connect = _connect(request)
    return await run_in_threadpool(connect.access, request.headers.get("authorization"), subscription=subscription)


@router.get(ESPI + "/Batch/Subscription/{subscription_id}")
async def subscription(subscription_id: str, request: Request) -> Response:
    connect = _connect(request)
    try:
        access = await _access(request, subscription_id)
        if request.query_params.get("format") == "bundle" or BUNDLE in request.headers.get("accept", ""):
            state = request.app.state.console
            data = await run_in_threadpool(connect.bundle, access, owner=state.vault.reader.keys)
            return Response(data, media_type=BUNDLE)
        body, _ = await run_in_threadpool(lambda: connect.feed(
            access, base=_base(request) + ESPI, published_min=request.query_params.get("published-min"),
            published_max=request.query_params.get("published-max")))
    except Refused as exc:
        return _refused(exc)
    return Response(body, media_type=ATOM)


@router.get(ESPI + "/Subscription/{subscription_id}/UsagePoint")
async def usage_points(subscription_id: str, request: Request) -> Response:
    from ..connect.resources import usage_points_feed

    try:
        access = await _access(request, subscription_id)
    except Refused as exc:
        return _refused(exc)
    return Response(usage_points_feed(access.grant, base=_base(request) + ESPI, now=_connect(request).clock()),
                    media_type=ATOM)


@router.get(ESPI + "/Subscription/{subscription_id}/UsagePoint/{usage_point_id}")
async def usage_point(subscription_id: str, usage_point_id: str, request: Request) -> Response:
    from ..connect.resources import usage_point_entry

    try:
        access = await _access(request, subscription_id)
    except Refused as exc:
        return _refused(exc)
    if usage_point_id not in access.grant.meters:
        return JSONResponse({"error": "not_found"}, status_code=404)
    return Response(usage_point_entry(access.grant, usage_point_id, base=_base(request) + ESPI,
                                      now=_connect(request).clock()), media_type=ATOM)


@router.get(ESPI + "/Authorization/{authorization_id}")
async def authorization(authorization_id: str, request: Request) -> Response:
    """The party's Authorization: status 1, or 0 after a revocation (kept, never deleted)."""
    connect = _connect(request)
    try:
        grant = await run_in_threadpool(connect.authorization_of, request.headers.get("authorization"),
                                        authorization_id)
    except Refused as exc:
        return _refused(exc)
    return Response(connect.authorization_entry(grant, base=_base(request) + ESPI), media_type=ATOM)


@router.delete(ESPI + "/Authorization/{authorization_id}")
async def delete_authorization(authorization_id: str, request: Request) -> Response:
    """The third party ends its own authorization: status 0 (kept, never deleted), tokens revoked, told."""
    connect = _connect(request)
    try:
        await _access(request, authorization_id)
    except Refused as exc:
        return _refused(exc)
    await run_in_threadpool(lambda: connect.revoke(authorization_id, by="third party", base=_base(request)))
    return Response(status_code=200)


@router.get(ESPI + "/ReadServiceStatus")
async def service_status(request: Request) -> Response:
    from ..connect.resources import service_status as status

    try:
        await _access(request)
    except Refused as exc:
        return _refused(exc)
    return Response(status(1), media_type=ATOM)


@router.get("/.well-known/meterseal-vkeys")
def vkeys(request: Request) -> Response:
    """The ledger's verifier keys: what checks checkpoints, receipts and the ``Signature`` of notifications."""
    vault = request.app.state.console.vault
    keys = [vault.keystore.ledger_verifier.vkey] if vault else []
    return JSONResponse({"vkeys": keys, "notification_signature": "Signature header, streams.connect.notify"})


# -- the customer's receipts -------------------------------------------------------------------------------
@router.get("/customer/receipts/{grant_id}")
def receipt(grant_id: str, request: Request, who: Principal = Depends(allow("GET", "/customer/receipts/{grant_id}"))
            ) -> Response:
    """The receipts of one of the customer's own authorizations (consent, then revocation or expiry), or of a
    request the customer refused (one denial receipt)."""
    connect = _connect(request)
    mine = {g.grant_id: g for g in connect.authorizations(meters=who.user.meters)}
    refused = {d["denial_id"]: d for d in connect.denials(meters=who.user.meters)}
    if grant_id in mine:
        body = connect.receipts(mine[grant_id])
    elif grant_id in refused:
        body = [connect.denial_receipt(refused[grant_id])]
    else:
        raise NotFound()  # another customer's, or none: the same answer
    return JSONResponse(body, headers={
        "Content-Disposition": f'attachment; filename="receipt-{grant_id}.json"'})


@router.post("/customer/connect/{grant_id}/revoke")
def customer_revoke(grant_id: str, request: Request,
                    who: Principal = Depends(allow("POST", "/customer/connect/{grant_id}/revoke"))) -> Response:
    connect = _connect(request)
    mine = {g.grant_id: g for g in connect.authorizations(meters=who.user.meters)}
    if grant_id not in mine:
        raise NotFound()
    if mine[grant_id].state == "active":
        connect.revoke(grant_id, by="customer", base=_base(request))
    return RedirectResponse("/customer#connect", status_code=303)


# -- the admin's third parties -----------------------------------------------------------------------------
@router.post("/admin/parties")
def admin_register(request: Request, name: str = Form(""), redirect_uri: str = Form(""), scope: str = Form(""),
                   notify_uri: str = Form(""), purpose: str = Form(""), status: str = Form("production"),
                   who: Principal = Depends(allow("POST", "/admin/parties"))) -> Response:
    from .pages import admin_page

    connect = _connect(request)
    try:
        client, secret = connect.register(name, redirect_uri=redirect_uri, scope=scope,
                                          notify_uri=notify_uri or None, purpose=purpose, status=status)
    except MeterSealError as exc:
        return admin_page(request, who, refused=str(exc), status_code=400)
    return admin_page(request, who, issued={"name": client.name, "client_id": client.client_id, "secret": secret})


@router.post("/admin/parties/{name}/rotate")
def admin_rotate(name: str, request: Request, who: Principal = Depends(allow("POST", "/admin/parties/{name}/rotate"))
                 ) -> Response:
    from .pages import admin_page

    client, secret = _party(request, name).rotate(name)
    return admin_page(request, who, issued={"name": client.name, "client_id": client.client_id, "secret": secret})


@router.post("/admin/parties/{name}/status")
def admin_status(name: str, request: Request, status: str = Form(""),
                 who: Principal = Depends(allow("POST", "/admin/parties/{name}/status"))) -> Response:
    _party(request, name).set_party_status(name, status, base=_base(request))
    return RedirectResponse("/admin#third-parties", status_code=303)


def _party(request: Request, name: str) -> Any:
    """The service, once ``name`` is a registered third party (404 otherwise)."""
    connect = _connect(request)
    try:
        connect.client(name)
    except MeterSealError:
        raise NotFound() from None
    return connect
