"""Retention: how long each kind of data is kept (``meterseal store retention``), and deleting what is older.

A period is an ISO 8601 duration (``P2Y``, ``P400D``, ``P1Y6M``, ``PT12H``), measured back from now by the
calendar; the policy is ``retention/policy.json`` in the store, each kind at its default until set. A row's age is
its own time — a reading's time, a bill's date (found by their date tokens, which only the index key makes), a
dead letter's arrival — not when it was sealed. ``enforce`` (the worker daily, ``meterseal store
enforce-retention`` on demand) deletes the older rows of each kind (the store's own and every registered
``RetainedKind``, such as alerts), then destroys the DEKs that no remaining row of any table uses and that were
retired more than a day ago: copies of those rows elsewhere (topics, backups) can then not be opened either. Each
run is one event of the erasure log, with the tombstones of the ledgered rows and DEK leaves it deleted.
"""

from __future__ import annotations

import calendar
import datetime as dt
import json
import os
import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from ledger.note import Signer

from streams.crypto.tokens import BlindIndex, cover_range
from streams.erasure.job import Job, _tombstone
from streams.erasure.log import JOBS, append_event
from streams.exceptions import ErasureError
from streams.registry import ErasureContext, Registry, RetainedKind
from streams.store.base import Store, distinct_values, rows_matching
from streams.store.objects import json_objects
from streams.store.segments import TABLES, arrow_schema

POLICY = "retention/policy.json"
# interval data goes first; bills are kept for years (tax and billing disputes); dead letters only long enough to
# look at them; alerts for a season's comparisons
DEFAULTS = {"readings": "P3Y", "bills": "P10Y", "dlq": "P90D", "alerts": "P1Y"}
_DURATION = re.compile(r"^P(?!$)(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?(?:T(?=\d)(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$")
EARLIEST = dt.date(1900, 1, 1)  # date tokens are made from here to the cut-off
DEK_MARGIN_S = 86_400.0  # a DEK retired less than this ago is kept even if no stored row uses it yet


@dataclass(frozen=True)
class Duration:
    years: int = 0
    months: int = 0
    days: int = 0
    seconds: int = 0

    def before(self, now: float) -> float:
        """The instant this duration before ``now`` (calendar years and months; a day the month lacks is its last)."""
        moment = dt.datetime.fromtimestamp(now, dt.timezone.utc)
        month = moment.year * 12 + moment.month - 1 - (self.years * 12 + self.months)
        year, month = divmod(month, 12)
        if year < 1:
            return float("-inf")
        day = min(moment.day, calendar.monthrange(year, month + 1)[1])
        moment = moment.replace(year=year, month=month + 1, day=day)
        return (moment - dt.timedelta(days=self.days, seconds=self.seconds)).timestamp()


def parse_duration(text: str) -> Duration:
    """An ISO 8601 duration (``P2Y``, ``P400D``, ``P1Y6M``, ``P2W``, ``PT36H``); ``ErasureError`` otherwise.

    >>> parse_duration("P1Y6M")
    Duration(years=1, months=6, days=0, seconds=0)
    >>> parse_duration("PT36H").seconds
    129600
    """
    found = _DURATION.match((text or "").strip().upper())
    if not found:
        raise ErasureError(f"bad retention {text!r}: give an ISO 8601 duration such as P2Y, P400D, P1Y6M or PT12H")
    y, mo, w, d, h, mi, s = (int(g) if g else 0 for g in found.groups())
    duration = Duration(y, mo, w * 7 + d, h * 3600 + mi * 60 + s)
    if duration == Duration():
        raise ErasureError(f"retention {text!r} is zero: nothing would be kept")
    return duration


def load_policy(store: Store) -> dict[str, dict[str, Any]]:
    """kind -> {"keep": duration text, "set": whether the owner set it (else the default)}."""
    raw = store.blobs.get(POLICY)
    chosen = json.loads(raw) if raw else {}
    return {kind: {"keep": chosen.get(kind, default), "set": kind in chosen}
            for kind, default in {**DEFAULTS, **{k: v for k, v in chosen.items() if k not in DEFAULTS}}.items()}


def set_policy(store: Store, kind: str, keep: str, *, known: Sequence[str]) -> dict[str, dict[str, Any]]:
    if kind not in known:
        raise ErasureError(f"unknown kind {kind!r}: one of {', '.join(known)}")
    parse_duration(keep)
    raw = store.blobs.get(POLICY)
    chosen = json.loads(raw) if raw else {}
    chosen[kind] = keep.strip().upper()
    store.blobs.put(POLICY, json.dumps(chosen, indent=1, sort_keys=True).encode())
    return load_policy(store)


# -- the store's own kinds ------------------------------------------------------------------------


def _delete_dated(table: str) -> Callable[[ErasureContext, float], int]:
    """Delete a ledgered table's rows dated before the cut-off, by their year, month and day tokens."""

    def delete_older(context: ErasureContext, cutoff: float) -> int:
        end = dt.datetime.fromtimestamp(cutoff, dt.timezone.utc).date() - dt.timedelta(days=1)
        if end < EARLIEST:
            return 0
        index = BlindIndex(context.index_key)
        years, months, days = cover_range(EARLIEST, end)
        tokens = {"year_tok": [index.year(y) for y in years], "month_tok": [index.month(y, m) for y, m in months],
                  "day_tok": [index.day(d.isoformat()) for d in days]}
        store = context.store
        found = rows_matching(store, table, tokens, columns=["record_id", "topic_partition", "leaf_index"])
        by_partition: dict[int, list[int]] = {}
        for p, i in zip(found.column("topic_partition").to_pylist(), found.column("leaf_index").to_pylist()):
            if i is not None:
                by_partition.setdefault(p, []).append(i)
        for p, indexes in sorted(by_partition.items()):
            context.extra["tombstone"](table, p, indexes)
        # exactly the rows tombstoned: a late reading of an old date a worker stores meanwhile stays (the next run)
        ids = found.column("record_id").to_pylist()
        return sum(store.delete_rows(table, column, values, record_ids=ids) for column, values in tokens.items())

    return delete_older


def _delete_dead_letters(context: ErasureContext, cutoff: float) -> int:
    store = context.store
    if store.is_empty("dlq"):
        return 0
    rows = store.arrow("dlq").select(["dlq_id", "received_at_ms"]).to_pylist()
    return store.delete_rows("dlq", "dlq_id", [r["dlq_id"] for r in rows if r["received_at_ms"] < cutoff * 1000])


def store_kinds() -> list[RetainedKind]:
    return [RetainedKind("readings", "sealed readings, by reading time", _delete_dated("readings")),
            RetainedKind("bills", "sealed bills, by bill date", _delete_dated("bills")),
            RetainedKind("dlq", "dead letters, by arrival", _delete_dead_letters)]


# -- enforcing --------------------------------------------------------------------------------------


def enforce(store: Store, *, index_key: bytes, signers: Sequence[Signer], registry: Registry,
            now: float | None = None, dek_max_age_s: float = 3600.0, data_dir: Any = None,
            progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Delete what each kind's retention no longer covers, destroy the DEKs nothing uses any more, and log the run."""
    now = time.time() if now is None else now
    _finish_cut_short(store, signers)
    policy = load_policy(store)
    job = Job(store, {"erasure_id": os.urandom(16).hex(), "kind": "retention", "subject_hash": None, "status": "running",
                      "stages": [], "counts": {}, "holders": {}, "tombstones": {}, "started_at_ms": int(now * 1000)},
              signers)
    job.save()
    context = ErasureContext(store, data_dir, index_key, signers[0], job.doc["erasure_id"], "retention", now,
                             {"tombstone": lambda table, p, indexes: _tombstone(job, store, table, p, indexes)})
    cutoffs: dict[str, float] = {}
    for kind in registry.retained_kinds:
        keep = policy.get(kind.kind, {}).get("keep")
        if not keep:
            continue
        cutoffs[kind.kind] = cutoff = parse_duration(keep).before(now)
        job.doc["counts"][kind.kind] = kind.delete_older(context, cutoff)
        job.save()
        progress(f"{kind.kind}: {job.doc['counts'][kind.kind]} older than {keep} deleted")
    destroyed = _destroy_unused_deks(job, store, now - max(DEK_MARGIN_S, dek_max_age_s), dek_max_age_s)
    job.doc["counts"]["deks_destroyed"] = len(destroyed)
    progress(f"{len(destroyed)} DEK(s) no row uses any more destroyed")
    row = append_event(store, signers, {"event": "retention", "erasure_id": job.doc["erasure_id"], "subject_hash": None,
                                        "reason": "retention", "at_ms": int(now * 1000), "counts": job.doc["counts"],
                                        "tombstones": list(job.doc["tombstones"].values())})
    job.doc.update(status="done", leaf_index=row["leaf_index"])
    job.save()
    return {"retention_id": job.doc["erasure_id"], "deleted": job.doc["counts"], "leaf_index": row["leaf_index"],
            "destroyed_deks": destroyed,  # (keys.deks still holds them wrapped: delete these keys there)
            "cutoffs": {k: dt.datetime.fromtimestamp(v, dt.timezone.utc).isoformat(timespec="seconds")
                        for k, v in cutoffs.items() if v != float("-inf")}}


def _destroy_unused_deks(job: Job, store: Store, retired_before: float, dek_max_age_s: float) -> list[str]:
    """DEKs no remaining row of any table names, retired (past their maximum age) before ``retired_before``: a day
    ago at least, so no record sealed under one can still be on its way to the store."""
    used = set()
    for table in TABLES:
        if "key_id" in arrow_schema(table).names:  # (not the alert history, not the region rollups: held in clear)
            used |= distinct_values(store, table, "key_id")
    doomed = []
    for key_id in store.dek_ids():
        if key_id in used:
            continue
        doc = store.get_dek(key_id)
        if doc is not None and doc["created_at_ms"] / 1000 + dek_max_age_s < retired_before:
            doomed.append(doc)
    by_partition: dict[int, list[int]] = {}
    for doc in doomed:
        if doc.get("leaf_index") is not None:
            by_partition.setdefault(doc["partition"], []).append(doc["leaf_index"])
    for p, indexes in sorted(by_partition.items()):
        _tombstone(job, store, "deks", p, indexes)
    return [doc["key_id"] for doc in doomed if store.delete_dek(doc["key_id"])]


def _finish_cut_short(store: Store, signers: Sequence[Signer]) -> None:
    """Log retention runs killed before their event (their deletions happened; their tombstones are in the job)."""
    for _, doc in json_objects(store.blobs, JOBS):
        if doc.get("kind") == "retention" and doc.get("status") == "running":
            row = append_event(store, signers, {"event": "retention", "erasure_id": doc["erasure_id"],
                                                "subject_hash": None, "reason": "retention (cut short)",
                                                "at_ms": doc["started_at_ms"], "counts": doc["counts"],
                                                "tombstones": list(doc["tombstones"].values())})
            Job(store, {**doc, "status": "done", "leaf_index": row["leaf_index"]}).save()
