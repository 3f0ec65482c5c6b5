"""The whole encrypted billing flow over the sealed store (``meterseal bill --encrypted``), and the earlier
prototype's CKKS encrypt-then-decrypt-then-compute for comparison.

The data owner opens the period's bills (their ``Billed Unit``) or readings (summed per meter and
calendar month, UTC) with the owner keys, converts them to 0.01-kWh units (``tariff.units_of``), and runs
``billing``'s three parties in turn, timing each: key holder encrypts, billing side computes from the
public context alone, key holder decrypts. Every bill is also computed in the clear by the same tariff and
compared: the output says how many were identical to the paisa (all, or the command fails).
"""

from __future__ import annotations

import calendar
import datetime as dt
import math
import time
from collections import defaultdict
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable, Sequence

from streams.keys.keystore import UnlockedKeys
from streams.store.query import Query, Reader

from . import billing
from .tariff import Tariff, clear_bill, units_of

KINDS = ("bills", "readings", "rollups")


def _month_query(period: str | None) -> Query:
    if not period:
        return Query()
    try:
        year, month = (int(p) for p in period.split("-"))
        first = dt.date(year, month, 1)
    except ValueError:
        raise billing.BillingError(f"--period {period!r}: use YYYY-MM") from None
    return Query(start=first, end=dt.date(year, month, calendar.monthrange(year, month)[1]))


def usage_from_store(store_dir: Path | str | Any, owner: UnlockedKeys, *, kind: str = "bills",
                     period: str | None = None) -> list[dict[str, Any]]:
    """Per bill (``kind="bills"``) or per meter-month (``"readings"``): id, period and units (0.01 kWh).
    ``owner`` (the data owner's keys) opens the records."""
    if kind not in KINDS:
        raise billing.BillingError("--kind must be bills, readings or rollups")
    reader = Reader(store_dir, owner)
    if kind == "rollups":  # a meter-month is its days' rollups added up: no reading is opened
        return [u for u in meter_months_from_rollups(reader, _month_query(period)) if not period or u["period"] == period]
    opened = reader.open_many(reader.search(_month_query(period), kinds=[kind]))
    if kind == "bills":
        rows = [{"bill_no": b["bill_no"], "meter_no": b["meter_no"], "period": b["date"][:7],
                 "units": units_of(b["billed_unit"])} for b in opened if not period or b["date"][:7] == period]
        return sorted(rows, key=lambda r: (r["period"], str(r["bill_no"])))
    return [u for u in meter_months(opened) if not period or u["period"] == period]


def meter_months(readings: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Readings summed per meter and calendar month (UTC): id, period and units (0.01 kWh, the month's kWh at
    6 decimals rounded half up)."""
    totals: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in readings:
        when = dt.datetime.fromisoformat(r["ts"].replace("Z", "+00:00")).astimezone(dt.timezone.utc)
        totals[(r["meter_id"], when.strftime("%Y-%m"))].append(r["kwh"])
    return [{"meter_id": m, "period": p, "units": units_of(round(math.fsum(v), 6))} for (m, p), v in sorted(totals.items())]


def meter_months_from_rollups(reader: Reader, query: Query) -> list[dict[str, Any]]:
    """``meter_months`` from the meters' daily rollups (``streams.rollups``): the same units, from one opened row
    per meter-day instead of every reading (closed days only: a day still open in a worker is not counted yet)."""
    from streams.rollups.read import all_meter_usage
    from streams.store.base import connect

    first = query.start or dt.date(1990, 1, 1)
    last = query.end or dt.date.today()
    lo = dt.datetime(first.year, first.month, first.day, tzinfo=dt.timezone.utc)
    hi = dt.datetime(last.year, last.month, last.day, tzinfo=dt.timezone.utc) + dt.timedelta(days=1)
    totals: dict[tuple[str, str], list[float]] = defaultdict(list)
    for cell in all_meter_usage(connect(reader.store), reader._opener(), reader.index, "day", lo, hi):
        totals[(cell["meter_id"], cell["start"].strftime("%Y-%m"))].append(cell["kwh_sum"])
    return [{"meter_id": m, "period": p, "units": units_of(round(math.fsum(v), 6))} for (m, p), v in sorted(totals.items())]


def _hundredths(value: int) -> str:
    """An integer count of hundredths (paise, or 0.01 kWh) as exact decimal text: 70620 -> '706.20'."""
    return str((Decimal(value) / 100).quantize(Decimal("0.01")))


def run_encrypted(usage: Sequence[dict[str, Any]], tariff: Tariff, *, holder: billing.KeyHolder | None = None
                  ) -> dict[str, Any]:
    """Encrypt (key holder) -> compute (billing side, public context only) -> decrypt (key holder), timed;
    each row gets ``units_kwh``, ``amount_paise``, ``amount`` (rupees) and the clear bill for comparison."""
    t0 = time.perf_counter()
    holder = holder or billing.KeyHolder.generate()
    t1 = time.perf_counter()
    units = [u["units"] for u in usage]
    bundle = billing.encrypt_usage(holder, units, tariff)
    t2 = time.perf_counter()
    result = billing.compute_bills(holder.public_context, bundle, tariff.rates)
    t3 = time.perf_counter()
    paise = billing.decrypt_bills(holder, result)
    t4 = time.perf_counter()
    clear = [clear_bill(u, tariff) for u in units]
    rows = [{**{k: v for k, v in u.items() if k != "units"}, "units_kwh": _hundredths(u["units"]), "amount_paise": p,
             "amount": _hundredths(p), "clear_paise": c} for u, p, c in zip(usage, paise, clear)]
    n = len(units)
    return {"tariff": tariff.name, "customers": n, "identical_to_clear": sum(p == c for p, c in zip(paise, clear)),
            "figures": {"keygen_s": t1 - t0, "encrypt_s": t2 - t1, "billing_side_s": t3 - t2, "decrypt_s": t4 - t3,
                        "bills_per_s": n / (t4 - t1) if n else 0.0,
                        "usage_ciphertext_bytes_per_customer": billing.ciphertext_bytes(bundle) / n if n else 0.0,
                        "bill_ciphertext_bytes_per_customer": billing.ciphertext_bytes(result) / n if n else 0.0,
                        "public_context_bytes": len(holder.public_context),
                        "ciphertexts": sum(len(c) for c in bundle["chunks"]) + len(result["bills"])},
            "rows": rows}


def prototype_ckks(units: Sequence[int], tariff: Tariff) -> dict[str, Any]:
    """The prototype's way, on the same bills: encrypt each bill's kWh under CKKS, *decrypt* it, then compute
    the slab bill in floating point (rupees, rounded to paise). Nothing is computed on ciphertext; the
    party that computes sees every consumption. Returns its speed and how many bills differ from the exact."""
    import tenseal as ts

    context = ts.context(ts.SCHEME_TYPE.CKKS, poly_modulus_degree=8192, coeff_mod_bit_sizes=[60, 40, 40, 60])
    context.global_scale = 2 ** 40
    edges_kwh = [e / 100 for e in tariff.edges]
    t0 = time.perf_counter()
    paise, nbytes = [], 0
    for u in units:
        blob = ts.ckks_vector(context, [u / 100]).serialize()
        nbytes += len(blob)
        kwh = ts.ckks_vector_from(context, blob).decrypt()[0]
        amount, below = 0.0, 0.0
        for edge, rate in zip([*edges_kwh, float("inf")], tariff.rates):
            amount += max(min(kwh, edge) - below, 0.0) * rate / 100
            below = edge
        paise.append(round(amount * 100))
    elapsed = time.perf_counter() - t0
    exact = [clear_bill(u, tariff) for u in units]
    return {"bills_per_s": len(units) / elapsed if units else 0.0, "seconds": elapsed,
            "ciphertext_bytes_per_customer": nbytes / len(units) if units else 0.0,
            "differ_from_exact": sum(p != e for p, e in zip(paise, exact)),
            "max_diff_paise": max((abs(p - e) for p, e in zip(paise, exact)), default=0)}


def run_clear(usage: Sequence[dict[str, Any]], tariff: Tariff) -> dict[str, Any]:
    """The same bills computed in the clear (the reference; for the data owner only)."""
    rows = []
    for u in usage:
        paise = clear_bill(u["units"], tariff)
        rows.append({**{k: v for k, v in u.items() if k != "units"}, "units_kwh": _hundredths(u["units"]),
                     "amount_paise": paise, "amount": _hundredths(paise)})
    return {"tariff": tariff.name, "customers": len(rows), "rows": rows}
