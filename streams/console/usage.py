"""The console's consumption charts, read from the rollups (``streams.rollups``), never from the readings.

The operator's region chart reads ``rollup_region`` (clear aggregates, cells of fewer than
``METERSEAL_ROLLUP_MIN_METERS`` meters left out); a customer's chart opens its own meter's hourly or daily
rollup rows (a few hundred for two years of days). Rollups hold closed hours: the newest hour of a live stream
shows once it closes (``METERSEAL_ROLLUP_GRACE_S``, or ``METERSEAL_ROLLUP_IDLE_S`` of quiet).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Iterable

from ..exceptions import MeterSealError
from ..rollups import read
from ..store.base import connect

STEPS = {"hour": 3600, "day": 86400, "month": None}
MAX_DAYS = 731  # two years


def _utc(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc)


def _months(start: dt.date, end: dt.date) -> list[dt.date]:
    out, day = [], start.replace(day=1)
    while day <= end:
        out.append(day)
        day = (day.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    return out


def meter_series(vault: Any, meter_id: str, step: str, start: dt.date, end: dt.date) -> dict[str, Any]:
    """One meter's kWh per hour, day or month over whole days ``start..end`` (at most two years; hours at most
    92 days), from its rollups. ``x``: each slot's start (epoch s), ``kwh`` and ``readings`` per slot."""
    if step not in STEPS:
        raise MeterSealError(f"step {step!r}: choose hour, day or month")
    if end < start or (end - start).days + 1 > MAX_DAYS or step == "hour" and (end - start).days + 1 > 92:
        raise MeterSealError("the range must be 1 day to 2 years (hours: up to 92 days)")
    lo, hi = _utc(start), _utc(end + dt.timedelta(days=1))
    with vault._lock:
        con = connect(vault.store)
        try:
            cells = read.meter_usage(con, vault.reader._opener(), vault.reader.index, [meter_id],
                                     "hour" if step == "hour" else "day", lo, hi)
        finally:
            con.close()
    if step == "month":
        slots = [_utc(m) for m in _months(start, end)]
        key = lambda when: _utc(when.date().replace(day=1))  # noqa: E731
    else:
        width = STEPS[step]
        slots = [lo + dt.timedelta(seconds=i * width) for i in range(int((hi - lo).total_seconds() // width))]
        key = lambda when: when  # noqa: E731
    index = {slot: i for i, slot in enumerate(slots)}
    kwh, readings = [0.0] * len(slots), [0] * len(slots)
    for cell in cells:
        i = index.get(key(cell["start"]))
        if i is not None:
            kwh[i] += cell["kwh_sum"]
            readings[i] += cell["readings"]
    return {"meter_id": meter_id, "step": step, "start": start.isoformat(), "end": end.isoformat(),
            "x": [int(s.timestamp()) for s in slots], "kwh": [round(v, 4) for v in kwh], "readings": readings,
            "total": round(sum(kwh), 3), "source": "rollups"}


def meter_period(vault: Any, meter_id: str, *, period: str, end: dt.date, days: int) -> dict[str, Any]:
    """The customer page's chart: the period (``days`` ending ``end``) and the one before it, per hour (a day)
    or per day, from the rollups."""
    start = end - dt.timedelta(days=days - 1)
    before = start - dt.timedelta(days=days)
    step = "hour" if period == "day" else "day"
    series = meter_series(vault, meter_id, step, before, end)
    n = len(series["kwh"]) // 2
    previous, current = series["kwh"][:n], series["kwh"][n:]
    return {"meter_id": meter_id, "period": period, "start": start.isoformat(), "end": end.isoformat(),
            "x": series["x"][n:], "current": current, "previous": previous,
            "total": round(sum(current), 3), "previous_total": round(sum(previous), 3), "source": "rollups"}


def newest_meter_day(vault: Any, meter_id: str) -> dt.date | None:
    """The day of a meter's newest daily rollup (its latest readings' day, once that day's rows are written)."""
    sql = ("SELECT record_id, kind, schema_version, region, category, meter_tok, account_tok, day_tok, month_tok, "
           "year_tok, envelope FROM rollup_meter WHERE meter_tok = ? AND period = 'day' ORDER BY sealed_at_ms DESC "
           "LIMIT 50")
    from ..unseal import open_table

    with vault._lock:
        con = connect(vault.store)
        try:
            table = con.sql(sql, params=[vault.meter_token(meter_id)]).to_arrow_table()
        finally:
            con.close()
        plains = open_table(table, vault.reader._opener(), vault.reader.index) if table.num_rows else []
    return max((dt.datetime.fromisoformat(p["start"]).date() for p in plains), default=None)


def newest_region_day(vault: Any) -> dt.date | None:
    with vault._lock:
        con = read.region_connection(vault.store)
        try:
            newest = read.newest_hour(con)
        finally:
            con.close()
    return None if newest is None else newest.date()


def region_series(vault: Any, start: dt.date, end: dt.date, *, regions: Iterable[str], min_meters: int) -> dict[str, Any]:
    """Fleet kWh per region per hour (ranges under 3 days) or day (up to two years) from ``rollup_region``;
    a cell of fewer than ``min_meters`` meters counts as missing (0, and listed in ``suppressed``)."""
    if end < start or (end - start).days + 1 > MAX_DAYS:
        raise MeterSealError("the range must be 1 day to 2 years")
    width = 3600 if (end - start).days < 3 else 86400
    lo, hi = _utc(start), _utc(end + dt.timedelta(days=1))
    t0 = int(lo.timestamp())
    n = int((hi - lo).total_seconds() // width)
    series = {r: [0.0] * n for r in regions}
    with vault._lock:
        con = read.region_connection(vault.store)
        try:
            slots, suppressed = read.region_slots(con, lo, hi, width, min_meters=min_meters)
        finally:
            con.close()
    readings = 0
    for slot, region, kwh, count in slots:
        if region in series and 0 <= slot < n:
            series[region][slot] += kwh
            readings += count
    return {"start": start.isoformat(), "end": end.isoformat(), "step_s": width,
            "x": [t0 + i * width for i in range(n)], "series": {r: [round(v, 3) for v in s] for r, s in series.items()},
            "readings": readings, "suppressed_cells": suppressed, "min_meters": min_meters, "source": "rollups"}
