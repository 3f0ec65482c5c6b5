"""One erasure, as durable stages: ``meterseal subject erase``.

::

    fence     the subject's tokens and subject-key ids are fenced (workers stop using them within their poll,
              ``Pipeline.refresh_erasures``; the job then waits ``grace_s``); nothing is destroyed yet
    keys      its subject keys are destroyed in every copy the store holds (key, region grants, log mark), their
              subject-log leaves tombstoned first
    rows      its readings and bills are deleted (tombstones of their leaves recorded first)
    dlq       dead letters whose content names it (opened with the owner's keys) are deleted
    holders   every registered ``SubjectHolder`` erases what it keeps (grants revoked, alerts, rollups, ...)
    cleanup   on S3: snapshots before the deletes are expired and orphaned data files removed
    sweep     keys, rows and dead letters again (a worker that had not yet seen the fence, or the dead-letter sink,
              may have stored a last batch)
    log       the erasure's leaf: subject hash, counts, reason code, tombstones' digest — no personal data

The job's state is ``erasures/jobs/<id>.json``: the stages done, counts, tombstones, and the subject's ids and
tokens sealed under a key derived from the index key (removed when the job ends). Every stage is idempotent: a
job killed at any point finishes when the same command runs again; erasing a subject already erased says so.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import orjson

from ledger.note import Signer
from ledger.redaction import Redaction, indexes_of

from streams.crypto import _primitives
from streams.crypto.envelope import DataKey, open_with, seal
from streams.crypto.tokens import BlindIndex
from streams.erasure.log import JOBS, append_event, find_event, tombstones_note
from streams.erasure.subjects import Reach, has_data, resolve
from streams.exceptions import ErasureError, InvalidEnvelope, SubjectErased, UnknownSubject
from streams.keys.keyring import Keyring
from streams.keys.subjects import MARKS, MAX_EPOCHS, Fence, SubjectKeyTable, subject_hash
from streams.registry import ErasureContext, Registry
from streams.seal import dlq_aad
from streams.store.base import Store, is_remote, rows_matching
from streams.store.objects import json_objects
from streams.store.deletes import remove_orphans
from streams.store.expire import expire_store
from streams.store.segments import LEDGERED
from streams.validate import decode_raw

STAGES = ("fence", "keys", "rows", "dlq", "holders", "cleanup", "sweep", "log")
REASON = re.compile(r"[A-Za-z0-9_. -]{1,64}")
_JOB_KEY_ID = b"meterseal-erasejb"[:16]


def check_reason(reason: str) -> str:
    """A reason *code* ("gdpr-art17", "customer-request"): it is logged in clear, so free text is refused."""
    reason = (reason or "unspecified").strip()
    if not REASON.fullmatch(reason):
        raise ErasureError("--reason is a short code (letters, digits, '-', '_', '.', spaces; at most 64), e.g. "
                           "gdpr-art17: it is logged in clear, so it must name no person")
    return reason


@dataclass
class Owner:
    """What erasing needs of the owner: the index key (tokens, subject keys) and the owner's DEK unwrappers (to open
    one record per linked meter or account, and dead letters): ``Unwrapper``s by fingerprint, or a key service's
    (``UnlockedKeys.dek_unwrap``)."""

    index_key: bytes = field(repr=False)
    unwrappers: Any = field(repr=False)


@dataclass
class Job:
    store: Store
    doc: dict[str, Any]
    signers: Sequence[Signer] = ()  # sign the tombstones (``log.tombstones_note``)

    @property
    def key(self) -> str:
        return f"{JOBS}{self.doc['erasure_id']}.json"

    def save(self) -> None:
        self.store.blobs.put(self.key, json.dumps(self.doc, indent=1, sort_keys=True).encode())

    def done(self, stage: str) -> bool:
        return stage in self.doc["stages"]

    def finish(self, stage: str) -> None:
        self.doc["stages"].append(stage)
        self.save()


def _job_key(index_key: bytes) -> DataKey:
    return DataKey(_JOB_KEY_ID, _primitives.hkdf_sha256(index_key, info=b"meterseal/erasure-job/v1"))


def _seal_reach(index_key: bytes, erasure_id: str, reach: Reach) -> str:
    return seal(_job_key(index_key), json.dumps(reach.to_dict()).encode(), aad=erasure_id.encode()).hex()


def _open_reach(index_key: bytes, erasure_id: str, sealed: str) -> Reach:
    return Reach.from_dict(json.loads(open_with({_JOB_KEY_ID: _job_key(index_key)}, bytes.fromhex(sealed),
                                                aad=erasure_id.encode())))


def running_job(store: Store, index: BlindIndex, fence: Fence, kind: str, subject_id: str) -> dict[str, Any] | None:
    """An unfinished job of this subject (any of its epochs), if one was cut short: one that set out to erase it, or
    one that fenced it on its way (it reached it through a linked meter or account)."""
    make = index.meter if kind == "meter" else index.account
    tokens = [make(subject_id, e) for e in range(MAX_EPOCHS)]
    hashes = {subject_hash(t) for t in tokens}
    fenced_by = {entry.erasure_id for t in tokens if (entry := fence.entry(t)) is not None}
    for _, doc in json_objects(store.blobs, JOBS):
        if doc.get("status") == "running" and doc.get("kind") in ("meter", "account") and (
                doc.get("subject_hash") in hashes and doc.get("kind") == kind or doc.get("erasure_id") in fenced_by):
            return doc
    return None


def erase(store: Store, *, owner: Owner, signers: Sequence[Signer], registry: Registry, kind: str, subject_id: str,
          reason: str = "unspecified", grace_s: float = 5.0, data_dir: Any = None, extra: dict[str, Any] | None = None,
          progress: Callable[[str, str], None] = lambda stage, detail: None, clock: Callable[[], float] = time.time,
          sleep: Callable[[float], None] = time.sleep, confirm: Callable[[Reach], bool] = lambda reach: True) -> dict:
    """Erase ``kind``/``subject_id`` (and everything its records link it to: ``streams.erasure.subjects``); returns
    the report. ``confirm(reach)`` is asked once before anything changes (the CLI's prompt)."""
    reason = check_reason(reason)
    index = BlindIndex(owner.index_key)
    fence = Fence.load(store.blobs)
    table = SubjectKeyTable(store, owner.index_key, fence=fence)
    keyring = Keyring(store, owner.unwrappers, index_key=owner.index_key)
    found = running_job(store, index, fence, kind, subject_id)
    if found is not None:
        job = Job(store, found, signers)
        reach = _open_reach(owner.index_key, found["erasure_id"], found["sealed"])
        progress("resume", f"erasure {found['erasure_id']} was cut short after {', '.join(found['stages']) or 'its start'}: "
                           "finishing it")
    else:
        reach = resolve(store, index, fence, keyring, kind, subject_id)
        if not has_data(store, table, reach):
            return _nothing_held(store, index, fence, kind, subject_id)
        if not confirm(reach):
            raise ErasureError("not confirmed: nothing changed")
        erasure_id = os.urandom(16).hex()
        job = Job(store, {"erasure_id": erasure_id, "kind": kind, "subject_hash": subject_hash(reach.primary_token),
                          "reason": reason, "started_at_ms": int(clock() * 1000), "status": "running", "stages": [],
                          "counts": {}, "holders": {}, "tombstones": {},
                          "sealed": _seal_reach(owner.index_key, erasure_id, reach),
                          "reach": {"meters": len(reach.meters), "accounts": len(reach.accounts)}}, signers)
        job.save()
    subject = reach.subject()
    meters, accounts = sorted(reach.meters.values()), sorted(reach.accounts.values())
    tokens = meters + accounts
    counts = job.doc["counts"]

    def stage(name: str, run: Callable[[], str]) -> None:
        if not job.done(name):
            detail = run()
            job.finish(name)
            progress(name, detail)

    def do_fence() -> str:
        for token in tokens:
            try:
                key = table.load(token)
            except SubjectErased:
                key = None  # fenced by this job before it was cut short
            fence.add(token, [key.key_id.hex()] if key else [], erasure_id=job.doc["erasure_id"], at=clock())
        sleep(grace_s)  # workers see the fence within their poll (2 s) and stop sealing under these keys
        return f"{len(tokens)} token(s) fenced; waited {grace_s:g} s for workers"

    def do_keys() -> str:
        _tombstone(job, store, "subjects", 0, _subject_leaves(store, tokens))
        destroyed = sum(table.destroy(token) for token in tokens)
        counts["subject_key_objects"] = counts.get("subject_key_objects", 0) + destroyed
        job.save()
        return f"{destroyed} subject-key object(s) destroyed"

    def do_rows() -> str:
        removed = _delete_rows(job, store, meters, accounts)
        return ", ".join(f"{t}: {n}" for t, n in removed.items())

    def do_dlq() -> str:
        n = _delete_dead_letters(store, keyring, set(reach.meters), set(reach.accounts))
        counts["dlq"] = counts.get("dlq", 0) + n
        job.save()
        return f"{n} dead letter(s)"

    def do_holders() -> str:
        context = ErasureContext(store, data_dir, owner.index_key, signers[0] if len(signers) == 1 else signers,
                                 job.doc["erasure_id"], reason, clock(), dict(extra or {}))
        for holder in registry.holders:
            if holder.name in job.doc["holders"]:
                continue
            job.doc["holders"][holder.name] = holder.erase(context, subject)
            job.save()
        return ", ".join(f"{k}: {v}" for k, v in job.doc["holders"].items()) or "no holders registered"

    def do_cleanup() -> str:
        if not is_remote(getattr(store, "location", None)):
            return "local segments were rewritten in place: nothing left to clean"
        return _clean_object_store(store, {"meter_tok": meters, "account_tok": accounts})

    def do_sweep() -> str:
        late = sum(table.destroy(token) for token in tokens)
        removed = _delete_rows(job, store, meters, accounts)
        dead = _delete_dead_letters(store, keyring, set(reach.meters), set(reach.accounts))  # (the dlq sink lags too)
        counts["dlq"] = counts.get("dlq", 0) + dead
        job.save()
        detail = f"{late} late key object(s), {sum(removed.values())} late row(s), {dead} late dead letter(s)"
        if (sum(removed.values()) or dead) and is_remote(getattr(store, "location", None)):
            detail += "; " + do_cleanup()  # their files are still reached by the snapshot before these deletes
        return detail

    def do_log() -> str:
        row = append_event(store, signers, {
            "event": "erasure", "erasure_id": job.doc["erasure_id"], "subject_hash": job.doc["subject_hash"],
            "reason": reason, "at_ms": int(clock() * 1000), "tombstones": list(job.doc["tombstones"].values()),
            "counts": {**counts, "holders": job.doc["holders"], "meters": len(reach.meters),
                       "accounts": len(reach.accounts)}})
        job.doc["leaf_index"] = row["leaf_index"]
        return f"erasure log leaf {row['leaf_index']}"

    for name, run in zip(STAGES, (do_fence, do_keys, do_rows, do_dlq, do_holders, do_cleanup, do_sweep, do_log)):
        stage(name, run)
    job.doc.update(status="done", finished_at_ms=int(clock() * 1000))
    job.doc.pop("sealed", None)  # the ids and tokens leave the store with the job
    job.save()
    holders = job.doc["holders"]
    return {"erasure_id": job.doc["erasure_id"], "subject": {"kind": job.doc["kind"], "hash": job.doc["subject_hash"]},
            "reach": {"meters": len(reach.meters), "accounts": len(reach.accounts)},
            "records": {t: counts.get(t, 0) for t in (*LEDGERED, "dlq")},
            "subject_key_objects": counts.get("subject_key_objects", 0), "derived": holders,
            "grants_revoked": holders.get("grants", 0) + holders.get("connect-authorizations", 0),
            "parties_notified": holders.get("connect-authorizations", 0),
            "leaf_index": job.doc.get("leaf_index"), "resumed": found is not None, "erased": True}


def _nothing_held(store: Store, index: BlindIndex, fence: Fence, kind: str, subject_id: str) -> dict:
    """The report for a subject nothing holds: erased before (says when), or unknown (an error, nothing changed)."""
    make = index.meter if kind == "meter" else index.account
    earlier = [entry for e in range(MAX_EPOCHS) if (entry := fence.entry(make(subject_id, e))) is not None]
    if not earlier:
        raise UnknownSubject(f"unknown {kind} {subject_id}: no record, subject key or dead letter names it; nothing changed")
    last = max(earlier, key=lambda entry: entry.erased_at_ms)
    event = find_event(store, last.erasure_id)
    return {"erasure_id": last.erasure_id, "subject": {"kind": kind, "hash": last.subject_hash}, "erased": True,
            "already_erased": True, "erased_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(last.erased_at_ms / 1000)),
            "leaf_index": event["leaf_index"] if event else None,
            "detail": f"this {kind} was erased already (erasure {last.erasure_id}); nothing of it is held now"}


def _subject_leaves(store: Store, tokens: list[str]) -> list[int]:
    out = []
    for token in tokens:
        raw = store.blobs.get(f"{MARKS}{token}.json")
        if raw is not None:
            out.append(json.loads(raw)["leaf_index"])
    return out


def _tombstone(job: Job, store: Store, table: str, partition: int, indexes: list[int]) -> None:
    """Add leaves to the job's tombstones of one log (merged with what an earlier run recorded) and save the job:
    always *before* the records go, so a kill in between leaves no leaf unexplained."""
    if not indexes:
        return
    key = f"{table}/{partition}"
    earlier = job.doc["tombstones"].get(key)
    merged = set(indexes) | (set(indexes_of(earlier["ranges"])) if earlier else set())
    hashes = store.hash_store(table, partition).read()
    job.doc["tombstones"][key] = Redaction.of(table, partition, merged, hashes, by=job.doc["erasure_id"]).to_dict()
    job.doc["tombstones_note"] = tombstones_note(job.doc["erasure_id"], list(job.doc["tombstones"].values()), job.signers)
    job.save()


def _delete_rows(job: Job, store: Store, meters: list[str], accounts: list[str]) -> dict[str, int]:
    removed = {}
    for table in LEDGERED:
        found = rows_matching(store, table, {"meter_tok": meters, "account_tok": accounts},
                              columns=["topic_partition", "leaf_index"])
        by_partition: dict[int, list[int]] = {}
        for p, i in zip(found.column("topic_partition").to_pylist(), found.column("leaf_index").to_pylist()):
            if i is not None:
                by_partition.setdefault(p, []).append(i)
        for p, indexes in sorted(by_partition.items()):
            _tombstone(job, store, table, p, indexes)
        n = store.delete_rows(table, "meter_tok", meters) + store.delete_rows(table, "account_tok", accounts)
        job.doc["counts"][table] = job.doc["counts"].get(table, 0) + n
        removed[table] = n
    job.save()
    return removed


_ID_FIELDS = (("meter_id", "meter_no", "Meter No."), ("account_id", "Account Id", "Account ID"))


def _names_subject(plain: bytes, meters: set[str], accounts: set[str]) -> bool:
    """Whether a dead letter's original bytes name one of the meters or accounts (JSON readings, batches and bills;
    Avro readings and bills)."""
    try:
        value: Any = orjson.loads(plain)
    except orjson.JSONDecodeError:
        value = None
        for kind in ("reading", "bill", "reading_batch"):
            try:
                value = decode_raw(plain, kind)
                break
            except Exception:  # noqa: BLE001 - not this kind
                continue
    items = value if isinstance(value, list) else value.get("readings", [value]) if isinstance(value, dict) else []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        if any(str(item.get(f, "")).strip() in meters for f in _ID_FIELDS[0] if item.get(f) is not None):
            return True
        if any(str(item.get(f, "")).strip() in accounts for f in _ID_FIELDS[1] if item.get(f) is not None):
            return True
    return False


def _delete_dead_letters(store: Store, keyring: Keyring, meters: set[str], accounts: set[str]) -> int:
    if store.is_empty("dlq"):
        return 0
    rows = store.arrow("dlq").select(["dlq_id", "envelope"]).to_pylist()
    doomed = []
    for row in rows:
        try:
            plain = open_with(keyring, row["envelope"], aad=dlq_aad(row["dlq_id"]))
        except InvalidEnvelope:
            continue  # (a DEK destroyed by retention: nothing left to read)
        if plain and _names_subject(plain, meters, accounts):
            doomed.append(row["dlq_id"])
    return store.delete_rows("dlq", "dlq_id", doomed)


def _clean_object_store(store: Store, holding: dict[str, list[str]]) -> str:
    for attempt in range(30):  # a worker's own expiry holds the lock for a moment
        report = expire_store(store, older_than_s=0)
        if report is not None:
            break
        time.sleep(1)
    else:
        raise ErasureError("another process kept the store's snapshot-expiry lock for 30 s: run the erasure again")
    orphans = 0
    for table in (*LEDGERED, "dlq"):
        for column, values in holding.items():
            if table != "dlq" and values:
                orphans += remove_orphans(store, table, holding=(column, values))
        if table == "dlq":
            orphans += remove_orphans(store, table)
    expired = sum(r["expired"] for r in report["tables"].values())
    return f"{expired} snapshot(s) expired, {orphans} orphaned data file(s) removed"
