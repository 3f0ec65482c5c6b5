"""The erasure log: one leaf per erasure and per retention run, and the tombstones of the records they deleted.

Each event is an object ``erasures/events/<leaf index>.json`` and a leaf of the log ``erasure/p000``
(``ledger.leaf.encode_erasure_event``) under signed checkpoints like every other log. An event names no person:
the subject by a hash of its token, what went by counts per sink, the deleted leaves by their tombstones
(``ledger.redaction``: index ranges and a digest of their hashes), of which the leaf carries a SHA-256.
Jobs still running keep their tombstones in ``erasures/jobs/<id>.json``, signed by the ledger key like a checkpoint
(``tombstones_note``): the audit reads both (``redactions``), so ``meterseal ledger verify`` passes during a job as
after it — and a job file that anyone with write access to the store could add cannot excuse a deleted record.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Sequence

from ledger import leaf as leaf_codec
from ledger.hashing import leaf_hash
from ledger.exceptions import NoteError
from ledger.log import Log
from ledger.note import Signer, Verifier, open_note, sign
from ledger.redaction import Redaction

from streams.store.objects import json_objects
from streams.store.segments import log_origin

LOG_TABLE, LOG_PARTITION = "erasure", 0
EVENTS, JOBS = "erasures/events/", "erasures/jobs/"


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def tombstones_sha256(tombstones: list[dict[str, Any]]) -> str:
    return hashlib.sha256(canonical(sorted(tombstones, key=lambda t: (t["table"], t["partition"]))).encode()).hexdigest()


def event_rows(store: Any) -> list[dict[str, Any]]:
    """Every erasure and retention event, by leaf index (what ``ledger verify`` audits)."""
    return sorted((doc for _, doc in json_objects(store.blobs, EVENTS)), key=lambda r: r["leaf_index"])


def find_event(store: Any, erasure_id: str) -> dict[str, Any] | None:
    return next((r for r in event_rows(store) if r["erasure_id"] == erasure_id), None)


def append_event(store: Any, signers: Sequence[Signer], event: dict[str, Any]) -> dict[str, Any]:
    """Log one event (``event``, ``erasure_id``, ``subject_hash``, ``reason``, ``counts``, ``tombstones``, ``at_ms``)
    once: a rerun of a job that logged it already gets the logged row back. Signs a checkpoint."""
    with store.locked(LOG_TABLE, LOG_PARTITION):
        log = Log(log_origin(signers[0].verifier.key_hash.hex(), LOG_TABLE, LOG_PARTITION),
                  store.hash_store(LOG_TABLE, LOG_PARTITION), store.checkpoint_store(LOG_TABLE, LOG_PARTITION))
        pending = store.blobs.get(f"{EVENTS}{log.size:010d}.json")
        if pending is not None:  # written, then killed before its leaf: append that leaf first
            log.append([leaf_hash(leaf_codec.encode_erasure_event(json.loads(pending)))])
        found = find_event(store, event["erasure_id"])
        if found is not None:
            if log.due(every_leaves=1, every_s=float("inf")):  # logged, then killed before its checkpoint
                log.checkpoint(*signers)
            return found
        row = {**event, "counts": canonical(event["counts"]), "tombstones_sha256": tombstones_sha256(event["tombstones"]),
               "leaf_index": log.size}
        store.blobs.put(f"{EVENTS}{row['leaf_index']:010d}.json", json.dumps(row, indent=1, sort_keys=True).encode())
        log.append([leaf_hash(leaf_codec.encode_erasure_event(row))])
        log.checkpoint(*signers)
    return row


def tombstones_note(erasure_id: str, tombstones: list[dict[str, Any]], signers: Sequence[Signer]) -> str:
    """A running job's tombstones, signed (the ledger key and its co-signers): what lets the audit trust them before
    the job's event is logged."""
    return sign(f"meterseal tombstones v1\n{erasure_id}\n{tombstones_sha256(tombstones)}\n", *signers)


def _signed(job: dict[str, Any], verifiers: Sequence[Verifier]) -> bool:
    """Whether a job's tombstones carry a valid signature by every verifier (as a checkpoint must)."""
    tombstones = list(job.get("tombstones", {}).values())
    try:
        text, names = open_note(job.get("tombstones_note") or "", list(verifiers))
    except NoteError:
        return False
    return ({v.name for v in verifiers} <= set(names)
            and text == f"meterseal tombstones v1\n{job.get('erasure_id')}\n{tombstones_sha256(tombstones)}\n")


def redactions(store: Any, verifiers: Sequence[Verifier]) -> list[Redaction]:
    """The tombstones of every logged event and every job still running whose tombstones ``verifiers`` signed
    (``ledger verify`` accepts a missing record at a leaf one of them names, if its digest matches). An event whose
    tombstones do not hash to what its leaf carries contributes none: its records then show as deleted, and its
    leaf as modified; an unsigned job contributes none either."""
    found = []
    for row in event_rows(store):
        if tombstones_sha256(row.get("tombstones", [])) == row.get("tombstones_sha256"):
            found += [Redaction.from_dict(t) for t in row.get("tombstones", [])]
    logged = {row["erasure_id"] for row in event_rows(store)}
    for _, job in json_objects(store.blobs, JOBS):
        if job.get("erasure_id") not in logged and job.get("tombstones") and _signed(job, verifiers):
            found += [Redaction.from_dict(t) for t in job["tombstones"].values()]
    return found
