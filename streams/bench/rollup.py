"""``meterseal bench rollup``: what the rollups cost the worker and what they save its readers, in one run.

- **throughput**: the worker (real processes on the embedded broker, ``bench_pipeline``) with rollups off and on,
  alternated, same readings; the ratio is on / off (goal >= 0.9).
- **region chart**: the operator's chart over 30 days and 12 months, from the rollups (``rollup_region``, SQL)
  and from the raw readings (searched by day tokens and opened, as the chart did before), on stores of 1M and
  10M hourly readings of a year (5 regions). The rollups are made by the same arithmetic the worker runs
  (``cells.PartitionRollup``) from the readings as they are sealed.
- **DP error**: hourly per-region kWh sums over a week of 15-minute readings at 1,000 and 10,000 meters, each
  meter's contribution bounded per reading (clamp each reading, at most 4 an hour) or per hour (clamp each
  meter's hourly sum, what the hourly rollups give), each bound at the 99th percentile of its unit, the same rho;
  median relative error over groups against the unbounded truth.
- **notifications/s**: the notifier delivering to a webhook receiver on loopback (grouped alerts in, signed
  Alertmanager v4 bodies out, each one a POST answered 200).
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

REGIONS = ("north", "south", "east", "west", "central")
START = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)


def bench_throughput(n: int = 20_000, rounds: int = 2, progress: Callable[[str], None] = print) -> dict[str, Any]:
    from streams.bench.pipeline import _uci_messages, bench_pipeline

    messages = _uci_messages(n)
    rates: dict[str, list[int]] = {"off": [], "on": []}
    for r in range(rounds):
        for mode in ("off", "on"):
            result = bench_pipeline(n, messages=messages, env={"METERSEAL_ROLLUPS": "true" if mode == "on" else "false"})
            rates[mode].append(result["readings_per_s_1_worker"])
            progress(f"throughput round {r + 1}, rollups {mode}: {rates[mode][-1]:,} readings/s")
    on, off = float(np.median(rates["on"])), float(np.median(rates["off"]))
    return {"readings": n, "rounds": rounds, "readings_per_s_rollups_off": rates["off"],
            "readings_per_s_rollups_on": rates["on"], "ratio_on_off": round(on / off, 3)}


def build_store(store_dir: Path, n: int, *, progress: Callable[[str], None] = print) -> tuple[Any, Any]:
    """``n`` hourly readings of a year (meters = n / 8760, region = meter mod 5) sealed into a segment store, and
    their region rollups written the way the worker writes them. Returns (index, keyring)."""
    import pyarrow as pa

    import schemas
    from streams.crypto.envelope import DekRing
    from streams.crypto.tokens import BlindIndex
    from streams.keys.owner import OwnerKeyPair
    from streams.rollups.cells import Contribution, PartitionRollup
    from streams.rollups.keeper import region_rows
    from streams.seal import record_aad
    from streams.store.segments import SegmentStore, arrow_schema, write_segment

    meters = max(5, n // 8760)
    owner = OwnerKeyPair.generate()
    store = SegmentStore(store_dir)
    deks = {}

    def keep(dek):
        deks[dek.key_id] = dek
        store.put_dek({"key_id": dek.key_hex, "scheme": owner.scheme, "owner_fingerprint": owner.public_key.fingerprint,
                       "wrapped": owner.public_key.wrap(dek), "created_at_ms": 0, "worker": "bench"})

    ring = DekRing(max_records=10_000_000, max_age_s=1e9, on_new_key=keep)
    index = BlindIndex(os.urandom(32))
    reading = schemas.get("reading")
    schema = arrow_schema("readings")
    directory = store.partition_dir("readings", 0)
    directory.mkdir(parents=True, exist_ok=True)
    tokens, dates = {}, {}
    rollup = PartitionRollup(0)
    rng = np.random.default_rng(1)
    kwh_all = np.round(rng.gamma(2.0, 0.25, n), 3)
    chunk = 200_000
    for first in range(0, n, chunk):
        rows, contributions = [], []
        for i in range(first, min(n, first + chunk)):
            m, hour = i % meters, i // meters
            ts = START + dt.timedelta(hours=hour)
            meter_id, region = f"RB-{m:05d}", REGIONS[m % 5]
            if m not in tokens:
                tokens[m] = index.meter(meter_id)
            day = ts.date()
            if day not in dates:
                dates[day] = index.date_tokens(day)
            d = dates[day]
            ts_text, kwh = ts.isoformat(), float(kwh_all[i])
            rec = {"format": 1, "record_id": index.record_id("reading", meter_id, ts_text), "kind": "reading",
                   "schema_version": reading.version, "key_id": "", "region": region, "category": "Domestic",
                   "meter_tok": tokens[m], "account_tok": None, "day_tok": d.day, "month_tok": d.month,
                   "year_tok": d.year, "sealed_at_ms": 0, "topic_partition": 0, "topic_offset": i, "leaf_index": i,
                   "meter_seq": hour}
            body = schemas.encode_body(reading, {"meter_id": meter_id, "ts": ts_text, "kwh": kwh, "register_kwh": 0.0,
                                                 "region": region, "category": "Domestic", "account_id": None,
                                                 "label": None})
            rec["envelope"] = ring.seal(body, aad=record_aad(rec), record_id=rec["record_id"])
            rec["key_id"] = rec["envelope"][1:17].hex()
            rows.append(rec)
            contributions.append(Contribution(i, meter_id, None, region, "Domestic", ts.timestamp(), kwh))
        name = f"{first:013d}-{first:020d}-{first + len(rows) - 1:020d}-{os.urandom(4).hex()}.parquet"
        write_segment(pa.Table.from_pylist(rows, schema=schema), directory / name)
        rollup.add(contributions, now=0.0)
        emission = rollup.close(now=0.0, grace_s=300, idle_s=1e9)
        if emission:
            store.append("rollup_region", 0, [(rollup.watermark, r) for r in region_rows(emission, index, 0)])
        rollup.days.clear()  # (the chart needs only the region cells: no per-meter rows are written here)
        rollup.pending.clear()
        progress(f"built {min(n, first + chunk):,} of {n:,} readings")
    emission = rollup.close(now=0.0, grace_s=300, idle_s=1e9, force=True)
    store.append("rollup_region", 0, [(rollup.watermark, r) for r in region_rows(emission, index, 0)])
    return index, (lambda key_id: deks[key_id])


def raw_region_series(store_dir: Path, keys, index, start: dt.date, end: dt.date) -> dict[str, Any]:
    """The chart as it was made before the rollups: the range's readings found by day tokens, opened, summed."""
    from streams.store.segments import connect
    from streams.unseal import SEALED_COLUMNS, open_table

    cover = index.range_tokens(start, end)
    parts, params = [], []
    for column, toks in (("year_tok", cover.year), ("month_tok", cover.month), ("day_tok", cover.day)):
        if toks:
            parts.append(f"{column} IN ({', '.join('?' * len(toks))})")
            params.extend(toks)
    table = connect(store_dir).sql(f"SELECT {', '.join(SEALED_COLUMNS)} FROM readings WHERE {' OR '.join(parts)}",
                                   params=params).to_arrow_table()
    plains = open_table(table, keys)
    t0 = dt.datetime(start.year, start.month, start.day, tzinfo=dt.timezone.utc).timestamp()
    n = (end - start).days + 1
    series = {r: [0.0] * n for r in REGIONS}
    for p in plains:
        slot = int((dt.datetime.fromisoformat(p["ts"]).timestamp() - t0) // 86400)
        if 0 <= slot < n:
            series[p["region"]][slot] += p["kwh"]
    return {"series": series, "readings": len(plains)}


def rollup_region_series(store_dir: Path, start: dt.date, end: dt.date) -> dict[str, Any]:
    """The chart as the console makes it now: ``streams.rollups.read.region_slots`` (what
    ``streams.console.usage.region_series`` draws), daily slots."""
    from streams.rollups.read import region_connection, region_slots
    from streams.store.segments import SegmentStore

    lo = dt.datetime(start.year, start.month, start.day, tzinfo=dt.timezone.utc)
    n = (end - start).days + 1
    slots, _ = region_slots(region_connection(SegmentStore(store_dir)), lo, lo + dt.timedelta(days=n), 86400,
                            min_meters=1)
    series = {r: [0.0] * n for r in REGIONS}
    readings = 0
    for slot, region, kwh, count in slots:
        series[region][slot] += kwh
        readings += count
    return {"series": series, "readings": readings}


def _ms(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t) * 1000)
    return float(np.median(times)), out


def bench_charts(sizes=(1_000_000, 10_000_000), *, progress: Callable[[str], None] = print) -> list[dict[str, Any]]:
    out = []
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="meterseal-bench-rollup-") as tmp:
            store_dir = Path(tmp) / "store"
            began = time.perf_counter()
            index, keys = build_store(store_dir, n, progress=progress)
            built_s = time.perf_counter() - began
            end = START.date() + dt.timedelta(days=364)
            for label, days in (("30 days", 30), ("12 months", 365)):
                start = end - dt.timedelta(days=days - 1)
                fast_ms, fast = _ms(lambda: rollup_region_series(store_dir, start, end), 5)
                raw_ms, raw = _ms(lambda: raw_region_series(store_dir, keys, index, start, end), 1 if days > 30 else 3)
                worst = max(abs(a - b) for r in REGIONS for a, b in zip(fast["series"][r], raw["series"][r]))
                row = {"readings": n, "range": label, "rollups_ms": round(fast_ms, 1), "raw_ms": round(raw_ms, 1),
                       "speedup": round(raw_ms / fast_ms, 1), "readings_in_range": raw["readings"],
                       "rollups_equal_raw": fast["readings"] == raw["readings"] and worst < 1e-6,
                       "store_built_s": round(built_s, 1)}
                out.append(row)
                progress(f"{n:,} readings, {label}: rollups {fast_ms:.1f} ms, raw {raw_ms:.0f} ms")
    return out


def bench_dp_clamping(fleets=(1000, 10_000), *, days: int = 7, rhos=(0.125, 0.5), seed: int = 5,
                      progress: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """Per-reading vs per-hour clamping on the same readings and rho (see the module's docstring)."""
    from streams.privacy import dp

    out = []
    query_day = dt.date(2025, 3, 1)
    for meters in fleets:
        rng = np.random.default_rng(seed + meters)
        steps = days * 96
        t = np.arange(steps)
        hour_of_day = (t // 4) % 24
        shape = 0.6 + 0.5 * np.exp(-((hour_of_day - 8) ** 2) / 6) + 0.8 * np.exp(-((hour_of_day - 19) ** 2) / 8)
        scale = rng.lognormal(-1.6, 0.5, meters)
        kwh = np.clip(scale[:, None] * shape[None, :] * rng.gamma(4.0, 0.25, (meters, steps)), 0, None)
        epoch = dt.datetime(2025, 3, 1, tzinfo=dt.timezone.utc).timestamp() + t * 900.0
        region_of = np.array(REGIONS, dtype=object)[np.arange(meters) % 5]
        flat = dp.Columns(np.repeat(np.arange(meters), steps).astype(object), np.tile(epoch, meters),
                          np.repeat(region_of, steps), kwh.ravel())
        hourly = kwh.reshape(meters, days * 24, 4).sum(axis=2)
        hours = dp.Columns(np.repeat(np.arange(meters), days * 24).astype(object),
                           np.tile(epoch[::4], meters), np.repeat(region_of, days * 24), hourly.ravel(),
                           np.full(meters * days * 24, 4.0))
        base = dict(metric="sum", by=("region", "hour"), start=query_day, end=query_day + dt.timedelta(days=days - 1),
                    regions=REGIONS)
        per_reading = dp.DPQuery(**base, bounds=dp.Bounds(clamp_kwh=float(np.quantile(kwh, 0.99)), per_hour=4))
        per_hour = dp.DPQuery(**base, bounds=dp.Bounds(clamp_kwh=float(np.quantile(kwh, 0.99)), per_hour=4,
                                                       hour_kwh=float(np.quantile(hourly, 0.99))))
        truth = np.zeros(len(REGIONS) * days * 24)
        for r, region in enumerate(REGIONS):
            truth[r * days * 24:(r + 1) * days * 24] = hourly[region_of == region].sum(axis=0)
        sums_r, counts_r = dp.bounded_aggregates(flat, per_reading)
        sums_h, counts_h = dp.bounded_aggregates(hours, per_hour)
        for rho in rhos:
            row = {"meters": meters, "readings": meters * steps, "rho": rho}
            for name, query, sums, counts in (("per_reading", per_reading, sums_r, counts_r),
                                              ("per_hour", per_hour, sums_h, counts_h)):
                plan = dp.plan(query, rho)
                errors = []
                for _ in range(3):
                    noisy = np.array([r["value"] for r in dp.release(plan, sums, counts)])
                    errors.append(float(np.median(np.abs(noisy - truth) / np.maximum(truth, 1e-9))))
                row[f"{name}_sensitivity_kwh"] = round(dp.sensitivity(query)[0], 2)
                row[f"{name}_median_rel_error"] = round(float(np.median(errors)), 4)
                row[f"{name}_clamping_bias"] = round(float(np.median((truth - sums) / np.maximum(truth, 1e-9))), 4)
            row["error_ratio_reading_over_hour"] = round(row["per_reading_median_rel_error"]
                                                         / max(row["per_hour_median_rel_error"], 1e-12), 2)
            out.append(row)
            progress(f"DP {meters:,} meters rho {rho}: per reading {row['per_reading_median_rel_error']:.2%}, "
                     f"per hour {row['per_hour_median_rel_error']:.2%}")
    return out


def bench_notifications(groups: int = 1000, *, progress: Callable[[str], None] = print) -> dict[str, Any]:
    """Notifications/s from the notifier to a webhook receiver on loopback (one alert per group: one POST each)."""
    import hashlib
    import http.server
    import threading

    from streams.ingest.broker import free_port
    from streams.notify.deliver import Deliverer
    from streams.notify.dispatch import Dispatcher
    from streams.notify.rules import parse
    from streams.notify.state import NotifyState

    got = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            got.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    port = free_port()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    os.environ.setdefault("METERSEAL_BENCH_HOOK_KEY", "bench")
    rules = parse(f'[[receivers]]\nname = "hook"\nwebhook_url = "http://127.0.0.1:{port}/"\n'
                  f'hmac_secret_env = "METERSEAL_BENCH_HOOK_KEY"\n\n[[routes]]\nreceiver = "hook"\n'
                  f'group_by = ["meter"]\ngroup_wait = "1s"\n')
    try:
        with tempfile.TemporaryDirectory() as tmp:
            state = NotifyState(Path(tmp) / "state.sqlite3")
            d = Dispatcher(state, rules)
            t0 = 1.8e9
            alerts = [{"alert_id": f"b{i}", "meter_tok": hashlib.sha256(str(i).encode()).hexdigest()[:32],
                       "ts": "2025-03-01T00:00:00+00:00", "kind": "spike", "score": 0.99, "severity": "warning",
                       "reason": "bench", "region": REGIONS[i % 5], "detected_at_ms": int(t0 * 1000)} for i in range(groups)]
            began = time.perf_counter()
            d.receive(alerts, t0)
            made = d.flush(t0 + 1)
            grouped_s = time.perf_counter() - began
            deliver = Deliverer(state, lambda: rules, clock=lambda: t0 + 1)
            began = time.perf_counter()
            while deliver.pending():
                deliver.run_due(limit=1000)
            sent_s = time.perf_counter() - began
    finally:
        server.shutdown()
    progress(f"notifications: {len(got)} delivered in {sent_s:.2f} s")
    return {"notifications": len(made), "delivered": len(got), "group_s": round(grouped_s, 3),
            "deliver_s": round(sent_s, 3), "notifications_per_s": round(len(got) / sent_s, 1)}


def bench_rollup(*, quick: bool = False, progress: Callable[[str], None] = print) -> dict[str, Any]:
    return {
        "throughput": bench_throughput(10_000 if quick else 40_000, rounds=1 if quick else 2, progress=progress),
        "charts": bench_charts((100_000, 1_000_000) if quick else (1_000_000, 10_000_000), progress=progress),
        "dp": bench_dp_clamping((1000, 10_000), days=2 if quick else 7, progress=progress),
        "notifications": bench_notifications(200 if quick else 1000, progress=progress),
        "note": "preliminary: a 2-core machine shared with other work; ratios are within one run",
    }
