"""The store's ledger audit: every Merkle log of a store checked against its records and signed checkpoints.

Plain functions over a ``Store`` (either backend), a checkpoint ``Verifier`` and the ``Registry`` of logs (each
capability registers its own: ``streams.capabilities``); ``meterseal ledger verify``, the demo and the
benchmarks call them. The store registers its own logs here (``store_logs``).
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any, Callable, Sequence

from ledger import leaf as leaf_codec
from ledger.audit import Finding, Summary, audit
from ledger.checkpoint import Checkpoint
from ledger.exceptions import NoteError
from ledger.hashing import leaf_hash
from ledger.note import Verifier, open_note
from ledger.proof import inclusion_proof

from streams.exceptions import StoreError
from streams.registry import LedgerLog, Registry
from streams.store.base import Store, open_store
from streams.store.segments import LEDGERED, SegmentStore, log_origin


def origin(verifier: Verifier, table: str, partition: int) -> str:
    return log_origin(verifier.key_hash.hex(), table, partition)


def logs(store: Store) -> list[tuple[str, int]]:
    """Every (table, partition) of the store that has a Merkle log."""
    return store.log_keys()


def _origin_key(verifiers: list[Verifier], notes: list[str]) -> str:
    """The key hash a log's origin names: the Ed25519 ledger key's; a verifier holding only the post-quantum key
    takes it from the first checkpoint that key verifies (its origin is signed text)."""
    for v in verifiers:
        if v.scheme == "ed25519":
            return v.key_hash.hex()
    for note in notes:
        try:
            return Checkpoint.parse(open_note(note, verifiers)[0]).origin.split("/")[1]
        except (NoteError, IndexError):
            continue
    return "unknown"


def store_logs(registry: Registry) -> None:
    """Register the store's own logs: readings, bills and dead letters (leaf ``ledger.leaf.encode``) and the
    key log of wrapped DEKs (``encode_key_event``)."""
    for table in LEDGERED:
        registry.add_log(LedgerLog(table, rows=lambda store, p, table=table: store.rows(table, p),
                                   encode=leaf_codec.encode))
    registry.add_log(LedgerLog("deks", rows=lambda store, p: store.dek_rows(p), encode=leaf_codec.encode_key_event))


def _store_only() -> Registry:
    registry = Registry()
    store_logs(registry)
    return registry


def audit_store(store_dir: Path | str | Store, verifier: Verifier | Sequence[Verifier], *,
                registry: Registry | None = None, progress: Callable[[int, int], None] | None = None) -> list:
    """Audit every log of the store (a location or a ``Store``): [(Summary, [Finding, ...]), ...];
    ``progress(logs done, logs)`` after each.

    Each log is read and encoded as its capability registered it (``streams.capabilities.registry()``; without
    a ``registry``, only the store's own logs are known). A log the registry does not know is a finding
    (``unregistered``), never skipped. With several verifier keys (Ed25519 and ML-DSA-65), every checkpoint must
    carry a valid signature by each."""
    store = open_store(store_dir, create=False)
    registry = registry if registry is not None else _store_only()
    verifiers = [verifier] if isinstance(verifier, Verifier) else list(verifier)
    redactions: dict[tuple[str, int], list] = {}
    for source in registry.tombstones:
        for r in source.read(store, verifiers):
            redactions.setdefault((r.table, r.partition), []).append(r)
    results = []
    every = [(store, t, p) for t, p in logs(store)]
    if not isinstance(store, SegmentStore):  # logs kept in this machine's data dir (DP budgets) are audited too
        local = SegmentStore(store.root)
        kept_here = {log.table for log in registry.logs if log.local}
        every += [(local, t, p) for t, p in local.log_keys() if t in kept_here]
    for log_store, table, p in every:
        if progress:
            progress(len(results), len(every))
        hashes = log_store.hash_store(table, p).read()
        notes = log_store.checkpoint_store(table, p).all()
        name = log_origin(_origin_key(verifiers, notes), table, p)
        entry = registry.log(table)
        if entry is None:
            results.append((Summary(name, len(hashes), len(notes), 0),
                            [Finding(name, "unregistered", f"no capability registered the log {table!r}: this "
                                     "meterseal cannot check it (an older or newer version wrote it?)")]))
            continue
        rows = entry.rows(log_store if entry.local else store, p)
        summary, findings = audit(name, hashes, rows, notes, verifiers, encode=entry.encode,
                                  redactions=redactions.get((table, p), ()))
        if entry.check is not None:
            findings += [Finding(summary.log, kind, detail, index=index) for kind, detail, index in entry.check(rows)]
        results.append((summary, findings))
    return results


def inclusion_status(store: Store, verifier: Verifier, rows: list[dict]) -> dict[str, str]:
    """``record_id -> verified | unsigned | TAMPERED`` for stored rows, checked against their logs.

    Per log, the stored hashes must reproduce the newest checkpoint that verifies with ``verifier``;
    then a row whose leaf hash is the hash at its index, below the checkpoint's size, is included in
    the signed tree (equivalent to verifying an inclusion proof built from those hashes).
    """
    from ledger.compact import CompactRange

    status: dict[str, str] = {}
    by_log: dict[tuple[str, int], list[dict]] = {}
    for row in rows:
        by_log.setdefault(("bills" if row["kind"] == "bill" else "readings", row["topic_partition"]), []).append(row)
    for (table, p), hits in by_log.items():
        hashes = store.hash_store(table, p).read()
        signed = 0
        for note in reversed(store.checkpoint_store(table, p).all()):
            try:
                cp = Checkpoint.parse(open_note(note, [verifier])[0])
            except NoteError:
                continue
            if cp.origin == origin(verifier, table, p) and cp.size <= len(hashes):
                tree = CompactRange()
                for h in hashes[: cp.size]:
                    tree.append(h)
                signed = cp.size if tree.root() == cp.root else -1
            break
        for row in hits:
            i = row.get("leaf_index")
            if signed < 0 or i is None or i >= len(hashes) or leaf_hash(leaf_codec.encode(row)) != hashes[i]:
                status[row["record_id"]] = "TAMPERED"
            else:
                status[row["record_id"]] = "verified" if i < signed else "unsigned"
    return status


def find_record(store_dir: Path | str | Store, record_id: str) -> tuple[str, dict[str, Any]] | None:
    """``(table, stored row)`` of a ledgered record id (one lookup by id per table), or None."""
    store = open_store(store_dir, create=False)
    for table in LEDGERED:
        if store.is_empty(table):
            continue
        row = store.find(table, record_id)
        if row is not None:
            return table, row
    return None


def proof_bundle(store_dir: Path | str | Store, table: str, row: dict[str, Any], *, vkey: str) -> dict[str, Any]:
    """The inclusion-proof bundle of a stored row against the newest checkpoint that covers it
    (``meterseal ledger prove``; ``ledger verify-proof`` checks it offline with ``vkey``)."""
    store = open_store(store_dir, create=False)
    p = row["topic_partition"]
    notes = [n for n in store.checkpoint_store(table, p).all() if Checkpoint.from_note(n).size > row["leaf_index"]]
    if not notes:
        raise StoreError(f"record {row['record_id']} is leaf {row['leaf_index']} of {table}/p{p}, "
                         "but no checkpoint covers it yet: try again in a few seconds")
    size = Checkpoint.from_note(notes[-1]).size
    hashes = store.hash_store(table, p).read()
    leaf = leaf_codec.encode(row)
    return {"record_id": row["record_id"], "log": f"{table}/p{p}", "index": row["leaf_index"], "tree_size": size,
            "leaf": base64.b64encode(leaf).decode(), "leaf_hash": leaf_hash(leaf).hex(),
            "audit_path": [h.hex() for h in inclusion_proof(row["leaf_index"], hashes[:size])],
            "checkpoint": notes[-1], "vkey": vkey}
