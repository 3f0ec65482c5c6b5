"""The HTML pages, one per role. Handlers only gather what the template shows; the roles table guards them."""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Any

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import RedirectResponse, Response

from ..privacy import BudgetExceeded, DPError
from ..share.grants import MAX_PURPOSE
from .admin import admin_page  # (connect.py's admin forms answer with it too)
from .erasure import customer_requests
from .api import BadRequest, day_range, parse_day
from .data import fl_history
from .roles import NotFound, Principal, allow
from .web import KINDS, SEVERITIES, attachment, render  # noqa: F401 - KINDS, SEVERITIES: other pages' filters

router = APIRouter()


@router.get("/operator")
def operator(request: Request, kiosk: int = 0, part: str | None = None,
             who: Principal = Depends(allow("GET", "/operator"))) -> Response:
    from .status import fleet_status

    state = request.app.state.console
    status = fleet_status(state)
    if part == "status":
        return render(request, who, "_status.html", status=status)
    alerts = list(reversed(state.hub.history(lambda a: True)))[:100] if state.hub else []
    return render(request, who, "operator.html", kiosk=bool(kiosk), status=status, alerts=alerts,
                  feed=state.hub.state if state.hub else "not configured")


@router.get("/customer")
def customer(request: Request, who: Principal = Depends(allow("GET", "/customer"))) -> Response:
    state = request.app.state.console
    vault = state.vault
    meters = who.user.meters
    tokens = vault.tokens(meters) if vault else set()
    alerts = list(reversed(state.hub.history(lambda a: a.get("meter_tok") in tokens)))[:50] if state.hub else []
    bills = vault.bills(meters) if vault else []
    grants, configured = grant_rows(request, who)
    grants = [g for g in grants if not g.get("client_id")]  # third parties' authorizations have their own table
    connect = state.connect
    authorizations = [g.to_dict() for g in connect.authorizations(meters=meters)] if connect else None
    refusals = list(reversed(connect.denials(meters=meters)))[:20] if connect else []
    latest = (vault.latest_day(meters[0]) if vault and meters else None) or dt.date.today()
    recent = vault.recent_readings(meters) if vault else []
    return render(request, who, "customer.html", meters=meters, alerts=alerts, bills=bills, grants=grants, recent=recent,
                  erasures=customer_requests(state, who), erasure_note=request.query_params.get("erasure"),
                  grants_configured=configured, parties=parties(request), latest=latest.isoformat(),
                  month_ago=(latest - dt.timedelta(days=30)).isoformat(), authorizations=authorizations,
                  refusals=refusals)


@router.get("/customer/download")
def download(request: Request, start: str | None = Query(None, alias="from"), end: str | None = Query(None, alias="to"),
             meter: str | None = None, fmt: str = Query("espi", alias="format"),
             who: Principal = Depends(allow("GET", "/customer/download"))) -> Response:
    """Green Button "Download My Data" of the customer's own meters: an ESPI feed (default) or CSV."""
    a, b = day_range(start, end)
    if meter:
        who.check_meter(meter)
    if fmt not in ("espi", "csv"):
        raise BadRequest("format must be espi (Green Button XML) or csv")
    meters = [meter] if meter else list(who.user.meters)
    vault = request.app.state.console.vault
    if fmt == "csv":
        return attachment(vault.green_button_csv(meters, a, b), filename=f"my-data-{a}-{b}.csv")
    body = vault.green_button_espi(meters, a, b)  # (none in the range: ShareError, a clear 409)
    return attachment(body, filename=f"my-data-{a}-{b}.xml", media_type="application/atom+xml")


# -- grants (the sharing engine, through engines.Sharing) ---------------------------------------------
def grant_rows(request: Request, who: Principal) -> tuple[list[dict[str, Any]], bool]:
    """The customer's grants, and whether sharing is configured on this console."""
    sharing = request.app.state.console.sharing
    return (sharing.of_customer(who.user.meters), True) if sharing else ([], False)


def parties(request: Request) -> list[str]:
    sharing = request.app.state.console.sharing
    return sharing.parties() if sharing else []


@router.post("/customer/grants")
def grant_create(request: Request, party: str = Form(...), meter: str = Form(...), start: str = Form(..., alias="from"),
                 end: str = Form(..., alias="to"), purpose: str = Form(""),
                 who: Principal = Depends(allow("POST", "/customer/grants"))) -> Response:
    who.check_meter(meter)
    a, b = day_range(start, end)
    sharing = request.app.state.console.sharing
    if sharing is None:
        return render(request, who, "error.html", status=503, message="data sharing is not configured",
                      status_code=503)
    if party not in sharing.parties():
        raise NotFound()
    if len(purpose) > MAX_PURPOSE:
        raise BadRequest(f"purpose: at most {MAX_PURPOSE} characters (this one has {len(purpose)})")
    sharing.create(party=party, meter=meter, start=a, end=b, purpose=purpose)
    return RedirectResponse("/customer#grants", status_code=303)


@router.post("/customer/grants/{grant_id}/revoke")
def grant_revoke(grant_id: str, request: Request, who: Principal = Depends(allow("POST", "/customer/grants/{grant_id}/revoke"))) -> Response:
    rows, configured = grant_rows(request, who)
    if not configured or grant_id not in {r["grant_id"] for r in rows}:
        raise NotFound()  # another customer's grant, or none: the same answer
    row = next(r for r in rows if r["grant_id"] == grant_id)
    connect = request.app.state.console.connect
    if row["state"] == "active" and row.get("client_id") and connect is not None:  # tokens too, and the party told
        connect.revoke(grant_id, by="customer", base=connect.public_url or f"{request.url.scheme}://{request.url.netloc}")
    elif row["state"] == "active":
        request.app.state.console.sharing.revoke(grant_id, reason="revoked by the customer in the console")
    return RedirectResponse("/customer#grants", status_code=303)


# -- auditor ------------------------------------------------------------------------------------------
@router.get("/auditor")
def auditor(request: Request, who: Principal = Depends(allow("GET", "/auditor"))) -> Response:
    vault = request.app.state.console.vault
    sharing = request.app.state.console.sharing
    consent = sharing.all() if sharing else None
    connect = request.app.state.console.connect
    return render(request, who, "auditor.html", checkpoints=vault.checkpoints() if vault else [],
                  run=request.app.state.console.verify_run, consent=consent,
                  consent_events=connect.events() if connect else None)


def _verify(state: Any) -> None:
    from ..store.audit import audit_store

    run = state.verify_run
    try:
        results = audit_store(state.vault.store, state.vault.keystore.ledger_verifier, registry=state.registry,
                              progress=lambda done, total: run.update(done=done, total=total))
        problems = [str(f) for _, findings in results for f in findings]
        run.update(state="tampered" if problems else "ok", problems=problems[:20], logs=len(results),
                   leaves=sum(s.leaves for s, _ in results), checkpoints=sum(s.checkpoints for s, _ in results))
    except Exception as exc:  # noqa: BLE001 - shown on the page, not swallowed
        run.update(state="error", problems=[f"{type(exc).__name__}: {exc}"])
    run.update(done=run.get("total", 0), finished=time.time())


@router.post("/auditor/verify")
def verify_start(request: Request, who: Principal = Depends(allow("POST", "/auditor/verify"))) -> Response:
    state = request.app.state.console
    if state.verify_run.get("state") != "running":
        state.verify_run.clear()
        state.verify_run.update(state="running", started=time.time(), by=who.user.name, done=0, total=0)
        threading.Thread(target=_verify, args=(state,), daemon=True).start()
    return render(request, who, "_verify.html", run=state.verify_run)


@router.get("/auditor/verify")
def verify_status(request: Request, who: Principal = Depends(allow("GET", "/auditor/verify"))) -> Response:
    return render(request, who, "_verify.html", run=request.app.state.console.verify_run)


# -- analyst, FL, admin -------------------------------------------------------------------------------
@router.get("/analyst")
def analyst(request: Request, who: Principal = Depends(allow("GET", "/analyst"))) -> Response:
    state = request.app.state.console
    privacy = state.privacy
    return render(request, who, "analyst.html", configured=privacy is not None,
                  budget=privacy.status(who.user.name) if privacy else None, answer=None, refused=None,
                  asked=default_range(state))


def default_range(state: Any, days: int = 7) -> dict[str, str]:
    """The analyst form's dates: the last ``days`` days of the data in the store (not of today), never before
    its first day; today's week when the store is empty."""
    found = state.vault.reading_days() if state.vault else None
    first, last = found or (dt.date.today() - dt.timedelta(days=days - 1), dt.date.today())
    return {"from": max(first, last - dt.timedelta(days=days - 1)).isoformat(), "to": last.isoformat(),
            "first": first.isoformat(), "last": last.isoformat()}


@router.post("/analyst/query")
def analyst_query(request: Request, metric: str = Form(...), by: str = Form(...), start: str = Form(..., alias="from"),
                  end: str = Form(..., alias="to"), rho: float = Form(...),
                  who: Principal = Depends(allow("POST", "/analyst/query"))) -> Response:
    """One DP release charged to this analyst (the engine refuses, releasing nothing, past either budget):
    a question the engine cannot answer as asked is a 400, one past a budget a 409."""
    state = request.app.state.console
    privacy = state.privacy
    if privacy is None:
        return render(request, who, "error.html", status=503, message="differential privacy is not configured",
                      status_code=503)
    a, b = day_range(start, end)
    asked = {**default_range(state), "from": a.isoformat(), "to": b.isoformat(), "metric": metric, "by": by,
             "rho": rho}
    answer, refused, status = None, None, 200
    try:
        answer = privacy.ask(who.user.name, metric=metric, by=by, start=a, end=b, rho=rho)
    except BudgetExceeded as exc:  # nothing was released
        refused, status = str(exc), 409
    except DPError as exc:  # a parameter the engine cannot use: nothing was released either
        refused, status = str(exc), 400
    return render(request, who, "analyst.html", configured=True, budget=privacy.status(who.user.name),
                  answer=answer, refused=refused, asked=asked, status_code=status)


@router.get("/fl")
def federated(request: Request, who: Principal = Depends(allow("GET", "/fl"))) -> Response:
    vault = request.app.state.console.vault
    return render(request, who, "fl.html", history=fl_history(vault.store_dir) if vault else None)


@router.get("/admin")
def admin(request: Request, who: Principal = Depends(allow("GET", "/admin"))) -> Response:
    return admin_page(request, who)


__all__ = ["router", "parse_day"]
