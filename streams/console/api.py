"""The JSON API and the live alert stream. Each handler: check scope, call ``data``/``feed``, return."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from sse_starlette.sse import EventSourceResponse

from .data import NoSuchRecord
from .errors import BadRequest
from .feed import AlertFilter, split
from .roles import ACCESS, NotFound, Principal, allow
from .sessions import current

router = APIRouter()
MAX_RANGE_DAYS = 400
FIRST_DAY, LAST_DAY = dt.date(1900, 1, 1), dt.date(2199, 12, 31)  # what a date parameter may name


def state(request: Request):
    return request.app.state.console


def vault_of(request: Request):
    vault = state(request).vault
    if vault is None:
        raise BadRequest("the console has no keystore: start it with METERSEAL_PASSPHRASE in a data directory")
    return vault


def parse_day(text: str | None, name: str) -> dt.date | None:
    if text in (None, ""):
        return None
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise BadRequest(f"{name}: {text[:40]!r} is not a date; use YYYY-MM-DD") from None
    if not FIRST_DAY <= day <= LAST_DAY:
        raise BadRequest(f"{name}: {day} is out of range; use a date from {FIRST_DAY} to {LAST_DAY}")
    return day


def day_range(start: str | None, end: str | None) -> tuple[dt.date, dt.date]:
    a, b = parse_day(start, "from"), parse_day(end, "to")
    if a is None or b is None:
        raise BadRequest("give both from=YYYY-MM-DD and to=YYYY-MM-DD")
    if b < a or (b - a).days > MAX_RANGE_DAYS:
        raise BadRequest(f"from must be before to, at most {MAX_RANGE_DAYS} days apart")
    return a, b


def alert_filter(who: Principal, request: Request, *, region: str | None = None, kind: str | None = None,
                 severity: str | None = None, since: str | None = None) -> AlertFilter:
    """Staff see every meter; a customer only its own (tokens from its account, never from the request)."""
    tokens = None
    if who.role == "customer":
        vault = state(request).vault
        tokens = frozenset(vault.tokens(who.user.meters)) if vault else frozenset()
    since_ms = None
    if since:
        from ..anomaly.feed import parse_since

        try:
            since_ms = int(parse_since(since) * 1000)
        except (ValueError, OverflowError):
            raise BadRequest(f"since: {since[:40]!r}: use e.g. 15m, 2h, 1d or an ISO-8601 time") from None
    return AlertFilter(tokens, split(region), split(kind), split(severity), since_ms)


@router.get("/api/meters/{meter_id:path}/readings")
def readings(meter_id: str, request: Request, start: str | None = Query(None, alias="from"),
             end: str | None = Query(None, alias="to"),
             who: Principal = Depends(allow("GET", "/api/meters/{meter_id:path}/readings"))) -> dict[str, Any]:
    who.check_meter(meter_id)
    a, b = day_range(start, end)
    rows = vault_of(request).readings(meter_id, a, b)
    return {"meter_id": meter_id, "from": a.isoformat(), "to": b.isoformat(), "readings": rows}


@router.get("/api/meters/{meter_id:path}/usage")
def usage(meter_id: str, request: Request, period: str = "week", end: str | None = None, step: str | None = None,
          start: str | None = Query(None, alias="from"), to: str | None = None,
          who: Principal = Depends(allow("GET", "/api/meters/{meter_id:path}/usage"))) -> dict[str, Any]:
    """``period=day|week|month`` (with the period before), or ``step=hour|day|month`` over ``from``..``to``
    (up to two years): both from the meter's rollups (``streams/console/usage.py``), never its readings."""
    from . import usage as charts

    who.check_meter(meter_id)
    vault = vault_of(request)
    if step is not None:
        last = parse_day(to, "to") or charts.newest_meter_day(vault, meter_id) or dt.date.today()
        first = parse_day(start, "from") or last - dt.timedelta(days=29)
        return charts.meter_series(vault, meter_id, step, first, last)
    last = parse_day(end, "end") or charts.newest_meter_day(vault, meter_id) or dt.date.today()
    return vault.usage(meter_id, period=period, end=last)


@router.get("/api/bills")
def bills(request: Request, meter: str | None = None,
          who: Principal = Depends(allow("GET", "/api/bills"))) -> dict[str, Any]:
    if meter is not None:
        who.check_meter(meter)
    return {"bills": vault_of(request).bills([meter] if meter else who.user.meters)}


@router.get("/api/grants")
def grants(request: Request, who: Principal = Depends(allow("GET", "/api/grants"))) -> dict[str, Any]:
    sharing = state(request).sharing
    return {"configured": sharing is not None, "grants": sharing.of_customer(who.user.meters) if sharing else []}


@router.get("/api/alerts")
def alerts(request: Request, since: str | None = None, region: str | None = None, kind: str | None = None,
           severity: str | None = None, who: Principal = Depends(allow("GET", "/api/alerts"))) -> dict[str, Any]:
    hub = state(request).hub
    keep = alert_filter(who, request, region=region, kind=kind, severity=severity, since=since)
    return {"feed": hub.state if hub else "not configured", "alerts": hub.history(keep) if hub else []}


@router.get("/events/alerts")
async def alert_events(request: Request, region: str | None = None, kind: str | None = None,
                       severity: str | None = None,
                       who: Principal = Depends(allow("GET", "/events/alerts"))) -> Response:
    hub = state(request).hub
    if hub is None:
        return JSONResponse({"error": "no alert feed: the console was started without a broker"}, status_code=503)
    keep = alert_filter(who, request, region=region, kind=kind, severity=severity)
    viewer = hub.subscribe(keep)
    metrics = state(request).metrics
    metrics.viewers.inc()

    console, session_id = state(request), who.session.id
    roles = ACCESS[("GET", "/events/alerts")]

    def still_allowed() -> bool:
        """The session lives and its account is unchanged (same id, role, meters, password): else the stream ends."""
        found = current(console.sessions, console.users, session_id)
        return found is not None and found[1].role in roles

    async def events():
        try:
            yield {"event": "ready", "data": json.dumps({"feed": hub.state})}
            while True:
                try:
                    alert = await asyncio.wait_for(viewer.queue.get(), timeout=5)
                except asyncio.TimeoutError:
                    alert = None
                if not still_allowed():  # checked before every event: logged out, expired, removed or changed
                    yield {"event": "logged-out", "data": "{}"}
                    return
                if alert is None:
                    if await request.is_disconnected():
                        return
                    continue
                yield {"event": "alert", "id": alert.get("alert_id", ""), "data": json.dumps(alert)}
        finally:
            hub.unsubscribe(viewer)
            metrics.viewers.dec()

    return EventSourceResponse(events(), ping=15)


@router.get("/api/regions/usage")
def region_usage(request: Request, start: str | None = Query(None, alias="from"), end: str | None = Query(None, alias="to"),
                 range_: str = Query("7d", alias="range"),
                 who: Principal = Depends(allow("GET", "/api/regions/usage"))) -> dict[str, Any]:
    vault = vault_of(request)
    if start or end:
        a, b = day_range(start, end)
    else:
        presets = {"24h": 1, "2d": 2, "7d": 7, "30d": 30, "90d": 90, "12m": 365, "24m": 730}
        if range_ not in presets:
            raise BadRequest(f"range: choose one of {', '.join(presets)} or give from/to")
        from .usage import newest_region_day

        b = newest_region_day(vault) or dt.date.today()  # the newest closed hour of the rollups
        a = b - dt.timedelta(days=presets[range_] - 1)
    return vault.region_usage(a, b, regions=state(request).regions, min_meters=state(request).rollup_min_meters)


@router.get("/api/status")
def status(request: Request, who: Principal = Depends(allow("GET", "/api/status"))) -> dict[str, Any]:
    from .status import fleet_status

    return fleet_status(state(request))


@router.get("/api/ledger/checkpoints")
def checkpoints(request: Request, who: Principal = Depends(allow("GET", "/api/ledger/checkpoints"))) -> dict[str, Any]:
    return {"checkpoints": vault_of(request).checkpoints()}


@router.get("/api/ledger/proof/{record_id}")
def proof(record_id: str, request: Request, download: bool = False, device: bool = False,
          who: Principal = Depends(allow("GET", "/api/ledger/proof/{record_id}"))) -> Response:
    """The record's inclusion proof; ``device=1``: its proof from the device (a reading its meter signed)."""
    from ..devices.keys import DeviceError

    vault = vault_of(request)
    scope = vault.tokens(who.user.meters) if who.role == "customer" else None
    try:
        bundle = vault.proof(record_id, meter_tokens=scope, device=device)
    except NoSuchRecord:
        raise NotFound() from None
    except DeviceError as exc:
        raise BadRequest(str(exc)) from None
    name = "device-proof" if device else "proof"
    headers = {"Content-Disposition": f'attachment; filename="{name}-{record_id[:16]}.json"'} if download else None
    return Response(json.dumps(bundle, indent=2) + "\n", media_type="application/json", headers=headers)
