"""Alert routing in the console: the operator's silences, acknowledgements and alert history; a customer's email
opt-in for its own meters; the administrator's rules-file editor (checked before it is saved). Handlers parse,
call ``streams.notify``, render; the roles table guards them."""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import RedirectResponse, Response

from ..exceptions import MeterSealError
from ..notify import history, optins, silences
from ..notify.dispatch import fingerprint, labels_of
from ..notify.rules import RulesError, duration, parse
from ..store.base import connect
from .api import BadRequest
from .pages import render
from .roles import NotFound, Principal, allow

router = APIRouter()


def _blobs(request: Request):
    vault = request.app.state.console.vault
    if vault is None:
        raise MeterSealError("no store configured on this console")
    return vault.store.blobs


def _since_ms(since: str | None) -> int | None:
    if not since:
        return None
    try:
        return int((time.time() - duration(since, "since")) * 1000)
    except ValueError:
        try:
            return int(dt.datetime.fromisoformat(since).replace(tzinfo=dt.timezone.utc).timestamp() * 1000)
        except ValueError:
            raise BadRequest("since: 30m, 2h, 1d or an ISO-8601 time") from None


def _history(request: Request, *, meter: str | None, region: str | None, kind: str | None, since: str | None,
             meter_toks: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    vault = request.app.state.console.vault
    if vault is None or vault.store.is_empty("alerts"):
        return []
    rows = history.search(connect(vault.store), index=vault.reader.index, meter=meter or None, meter_toks=meter_toks,
                          region=region or None, kind=kind or None, since_ms=_since_ms(since), limit=200)
    acks = silences.acknowledged(vault.store.blobs)
    for r in rows:
        r["fingerprint"] = fingerprint(labels_of(r))
        r["acked"] = acks.get(r["fingerprint"])
        r["detected"] = dt.datetime.fromtimestamp(r["detected_at_ms"] / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    return rows


@router.get("/operator/alerts")
def alerts_page(request: Request, meter: str | None = None, region: str | None = None, kind: str | None = None,
                since: str | None = None, notice: str | None = None,
                who: Principal = Depends(allow("GET", "/operator/alerts"))) -> Response:
    now = time.time()
    all_silences = silences.load_all(_blobs(request))
    rows = _history(request, meter=meter, region=region, kind=kind, since=since)
    return render(request, who, "alert_routing.html", rows=rows, notice=notice, now=now,
                  active=[s for s in all_silences if s.active(now)], ended=[s for s in all_silences if not s.active(now)][:20],
                  filters={"meter": meter or "", "region": region or "", "kind": kind or "", "since": since or ""},
                  when=lambda t: dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))


@router.post("/operator/silences")
def silence_create(request: Request, matchers: str = Form(...), duration_text: str = Form("2h", alias="duration"),
                   reason: str = Form(""), who: Principal = Depends(allow("POST", "/operator/silences"))) -> Response:
    try:
        seconds = duration(duration_text, "duration")
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    parts = [m.strip() for m in matchers.replace(",", "\n").splitlines() if m.strip()]
    made = silences.create(_blobs(request), matchers=parts, duration_s=seconds, reason=reason, created_by=who.user.name)
    vault = request.app.state.console.vault
    recent = _history(request, meter=None, region=None, kind=None, since="24h") if vault else []
    hits = silences.matching(made.matchers, [labels_of(r) for r in recent])
    notice = ("silence-matches-nothing" if hits == 0 else "silence-made")
    return RedirectResponse(f"/operator/alerts?notice={notice}", status_code=303)


@router.post("/operator/silences/{silence_id}/expire")
def silence_expire(silence_id: str, request: Request,
                   who: Principal = Depends(allow("POST", "/operator/silences/{silence_id}/expire"))) -> Response:
    try:
        silences.expire(_blobs(request), silence_id)
    except MeterSealError:
        raise NotFound() from None
    return RedirectResponse("/operator/alerts?notice=silence-ended", status_code=303)


@router.post("/operator/alerts/{fp}/ack")
def acknowledge(fp: str, request: Request, comment: str = Form(""),
                who: Principal = Depends(allow("POST", "/operator/alerts/{fp}/ack"))) -> Response:
    if len(fp) != 16:
        raise NotFound()
    silences.acknowledge(_blobs(request), fp, by=who.user.name, comment=comment)
    return RedirectResponse("/operator/alerts?notice=acknowledged", status_code=303)


@router.get("/api/alerts/history")
def history_api(request: Request, meter: str | None = None, region: str | None = None, kind: str | None = None,
                since: str | None = None,
                who: Principal = Depends(allow("GET", "/api/alerts/history"))) -> dict[str, Any]:
    """The alert history (the store's ``alerts`` table); a customer sees its own meters' only."""
    if who.role == "customer":
        if meter is not None:
            who.check_meter(meter)
        toks = tuple(request.app.state.console.vault.tokens(who.user.meters))
        rows = _history(request, meter=meter, region=region, kind=kind, since=since, meter_toks=toks)
    else:
        rows = _history(request, meter=meter, region=region, kind=kind, since=since)
    return {"alerts": [{k: v for k, v in r.items() if k != "acked"} | {"acknowledged": bool(r["acked"])} for r in rows]}


@router.get("/customer/alerts")
def customer_alerts(request: Request, notice: str | None = None,
                    who: Principal = Depends(allow("GET", "/customer/alerts"))) -> Response:
    vault = request.app.state.console.vault
    subscribed = {m: optins.email_for(vault.store.blobs, vault.index_key, vault.meter_token(m)) for m in who.user.meters}
    toks = tuple(vault.tokens(who.user.meters))
    rows = _history(request, meter=None, region=None, kind=None, since=None, meter_toks=toks)
    return render(request, who, "alert_optin.html", subscribed=subscribed, rows=rows, notice=notice)


@router.post("/customer/alerts/email")
def customer_optin(request: Request, meter: str = Form(...), email: str = Form(""), action: str = Form("subscribe"),
                   who: Principal = Depends(allow("POST", "/customer/alerts/email"))) -> Response:
    who.check_meter(meter)  # its own meters only: another's is a 404
    vault = request.app.state.console.vault
    tok = vault.meter_token(meter)
    if action == "unsubscribe":
        optins.opt_out(vault.store.blobs, tok)
        return RedirectResponse("/customer/alerts?notice=unsubscribed", status_code=303)
    optins.opt_in(vault.store.blobs, vault.index_key, tok, email)
    return RedirectResponse("/customer/alerts?notice=subscribed", status_code=303)


def _rules_path(request: Request) -> Path | None:
    path = request.app.state.console.alert_rules
    return Path(path) if path else None


@router.get("/admin/alert-rules")
def rules_page(request: Request, who: Principal = Depends(allow("GET", "/admin/alert-rules"))) -> Response:
    path = _rules_path(request)
    text = path.read_text() if path and path.exists() else ""
    return render(request, who, "alert_rules.html", path=path, text=text, error=None, saved=False)


@router.post("/admin/alert-rules")
def rules_save(request: Request, text: str = Form(""), who: Principal = Depends(allow("POST", "/admin/alert-rules"))) -> Response:
    path = _rules_path(request)
    if path is None:
        return render(request, who, "alert_rules.html", path=None, text=text, saved=False, status_code=409,
                      error="no rules file: start the console and workers with METERSEAL_ALERT_RULES=path")
    try:
        parse(text)
    except RulesError as exc:  # nothing is written: the rules in force stay as they are
        return render(request, who, "alert_rules.html", path=path, text=text, error=str(exc), saved=False,
                      status_code=400)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)  # the workers reload it within a second
    return render(request, who, "alert_rules.html", path=path, text=text, error=None, saved=True)
