"""``meterseal eval anomalies``: the online detector against batch Isolation Forest on the real UCI stream.

The UCI household series is replayed as a fleet (``sources.uci_readings``), labelled anomalies are
injected (``sources.inject_anomalies``), and every reading goes through ``Detector.observe`` in
stream order, as the worker does. The same per-reading features then go to scikit-learn's
``IsolationForest``, fitted in batch on the whole stream and asked to label it — the earlier
dashboard's approach — with ``contamination`` set to the true share of anomalous readings (the most
favourable single setting for it; it cannot know that in production).

Scoring (the composite F-score of Garg et al., IEEE TNNLS 2021): precision counts flagged readings
(a flag inside an injected anomaly is right, any other flag is a false alarm); recall counts
anomalies (an injected spike, theft run, stuck run or rollback is found if any of its readings is
flagged). Overall figures come from a stream with all kinds injected; per-kind figures from the
same clean stream with only that kind injected. Detection delay is stream time from an anomaly's
first reading to its first flag.
"""

from __future__ import annotations

import statistics
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from streams.anomaly.detector import Detector
from streams.anomaly.features import FEATURES, Profile
from streams.ingest.sources import ANOMALY_KINDS, inject_anomalies
from streams.validate import _parse_ts

METHODS = ("online", "isolation_forest")


@dataclass
class Stream:
    """The replayed stream, as the evaluation needs it: one entry per reading."""

    epoch: list[float] = field(default_factory=list)
    meter: list[str] = field(default_factory=list)
    event: list[int] = field(default_factory=list)  # -1: normal
    kind: list[str | None] = field(default_factory=list)
    x: list[list[float]] = field(default_factory=list)
    online: list[bool] = field(default_factory=list)
    seconds_online: float = 0.0
    cpu_seconds_online: float = 0.0  # the detector's CPU time (wall time on a shared machine also counts waiting)


def replay(readings: Iterable[dict[str, Any]], *, partitions: int = 4, batch: int = 500, progress=None,
           **detector) -> Stream:
    """Every reading through a per-partition ``Detector`` and per-meter ``Profile``, in order, ``batch`` readings
    at a time as the worker's seal batches take them (``Detector.observe_many`` per partition; the verdicts are
    those of one reading at a time, only faster)."""
    detectors = [Detector(**detector) for _ in range(partitions)]
    profiles: dict[str, Profile] = {}
    out = Stream()
    spent = cpu = 0.0
    chunk: list[tuple[dict[str, Any], float]] = []

    def flush() -> None:
        nonlocal spent, cpu
        by_partition: dict[int, list[int]] = {}
        for i, (r, _) in enumerate(chunk):
            by_partition.setdefault(zlib.crc32(r["meter_id"].encode()) % partitions, []).append(i)
        verdicts: list[Any] = [None] * len(chunk)
        t, c = time.perf_counter(), time.process_time()
        for p, idx in by_partition.items():
            items = []
            for i in idx:
                r, epoch = chunk[i]
                profile = profiles.get(r["meter_id"])
                if profile is None:
                    profile = profiles[r["meter_id"]] = Profile()
                items.append((profile, epoch, r["kwh"], r["register_kwh"]))
            for i, verdict in zip(idx, detectors[p].observe_many(items)):
                verdicts[i] = verdict
        spent += time.perf_counter() - t
        cpu += time.process_time() - c
        for (r, epoch), verdict in zip(chunk, verdicts):
            out.epoch.append(epoch)
            out.meter.append(r["meter_id"])
            out.event.append(r.get("event", -1))
            out.kind.append(r.get("label"))
            out.x.append([verdict.features.get(f, 0.0) for f in FEATURES])
            out.online.append(bool(verdict.findings))
            if progress:
                progress()
        chunk.clear()

    for r in readings:
        chunk.append((r, _parse_ts(r["ts"]).timestamp()))
        if len(chunk) >= batch:
            flush()
    if chunk:
        flush()
    out.seconds_online, out.cpu_seconds_online = spent, cpu
    return out


def isolation_forest(stream: Stream, *, seed: int = 0) -> tuple[list[bool], float]:
    """Batch Isolation Forest on the same features, with the true anomaly share as contamination."""
    from sklearn.ensemble import IsolationForest

    x = np.asarray(stream.x)
    share = max(sum(e >= 0 for e in stream.event) / len(stream.event), 1e-4)
    t = time.perf_counter()
    model = IsolationForest(n_estimators=100, contamination=min(share, 0.5), random_state=seed).fit(x)
    flagged = model.predict(x) == -1
    return [bool(f) for f in flagged], time.perf_counter() - t


def score(stream: Stream, flagged: list[bool]) -> dict[str, Any]:
    """Precision (over flags), recall (over anomalies), F1, and detection delay in stream seconds."""
    first_flag: dict[int, int] = {}
    start: dict[int, int] = {}
    right = wrong = 0
    for i, (event, f) in enumerate(zip(stream.event, flagged)):
        if event >= 0:
            start.setdefault(event, i)
            if f:
                first_flag.setdefault(event, i)
                right += 1
        elif f:
            wrong += 1
    p = right / (right + wrong) if right + wrong else 0.0
    r = len(first_flag) / len(start) if start else 0.0
    delays = [stream.epoch[first_flag[e]] - stream.epoch[start[e]] for e in first_flag]
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(2 * p * r / (p + r), 4) if p + r else 0.0,
            "anomalies": len(start), "found": len(first_flag), "flags": right + wrong, "false_alarms": wrong,
            "delay_s_median": round(statistics.median(delays), 1) if delays else None,
            "delay_s_p90": round(float(np.percentile(delays, 90)), 1) if delays else None}


def evaluate(readings: list[dict[str, Any]], *, rate: float = 0.001, seed: int = 3, progress=None,
             **detector) -> dict[str, Any]:
    """Both methods on labelled streams: all kinds mixed (overall), then each kind alone (per kind).

    Each scenario injects anomalies into the same clean ``readings``; per-kind figures come from a
    stream with only that kind injected, so a false alarm is never charged to the wrong kind.
    """
    report: dict[str, Any] = {"readings": len(readings), "meters": len({r["meter_id"] for r in readings}),
                              "rate": rate, "seed": seed, "scenarios": {}}
    results = {m: {"per_kind": {}} for m in METHODS}
    for scenario in ("all", *ANOMALY_KINDS):
        kinds = ANOMALY_KINDS if scenario == "all" else (scenario,)
        stream = replay(inject_anomalies(readings, rate=rate, seed=seed, kinds=kinds), progress=progress, **detector)
        forest, forest_s = isolation_forest(stream)
        online = score(stream, stream.online)
        online["readings_per_s"] = round(len(readings) / stream.seconds_online) if stream.seconds_online else None
        online["us_per_reading"] = round(1e6 * stream.seconds_online / len(readings), 2)
        online["cpu_us_per_reading"] = round(1e6 * stream.cpu_seconds_online / len(readings), 2)
        forest_score = {**score(stream, forest), "fit_predict_s": round(forest_s, 2)}
        report["scenarios"][scenario] = {"anomalous_readings": sum(e >= 0 for e in stream.event)}
        for method, result in (("online", online), ("isolation_forest", forest_score)):
            if scenario == "all":
                results[method].update(result)
            else:
                results[method]["per_kind"][scenario] = result
    report.update(results)
    return report
