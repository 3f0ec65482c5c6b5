"""Auditing one log: its signed checkpoints, its hash store, and the records that claim to be its leaves.

Pure: the caller reads the files and passes hashes, rows and notes in. The first finding names what
was changed and where (log, leaf index, record id), most specific first.

Order of checks:
1. every checkpoint carries a valid signature by the ledger key and names this log;
2. the hash store reproduces every checkpoint's root — so the hashes are authentic up to the newest
   checkpoint (anything past it is counted as unsigned, not trusted), and successive checkpoints are
   consistent, being roots of prefixes of one sequence;
3. each record's recomputed leaf hash equals the authentic hash at its index — or, if it equals the
   hash at another index, it was moved; indexes with no record were deleted; records with an index the
   log does not have, or a second record at an index, were inserted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from . import leaf
from .checkpoint import Checkpoint
from .exceptions import LedgerError, NoteError
from .hashing import leaf_hash
from .compact import CompactRange
from .note import Verifier, open_note
from .redaction import Redaction, indexes_of


@dataclass(frozen=True)
class Finding:
    log: str
    kind: str
    detail: str
    index: int | None = None
    record_id: str | None = None

    def __str__(self) -> str:
        where = f" at leaf {self.index}" if self.index is not None else ""
        rid = f" (record {self.record_id})" if self.record_id else ""
        return f"{self.log}: {self.kind}{where}{rid}: {self.detail}"


@dataclass(frozen=True)
class Summary:
    log: str
    leaves: int
    checkpoints: int
    signed_size: int
    redacted: int = 0  # leaves whose records an erasure or retention run deleted (kept as hashes: ``redaction``)


def audit(origin: str, hashes: Sequence[bytes], rows: Iterable[dict[str, Any]], notes: Sequence[str],
          verifier: Verifier | Sequence[Verifier],
          encode: Callable[[dict[str, Any]], bytes] = leaf.encode,
          redactions: Sequence[Redaction] = ()) -> tuple[Summary, list[Finding]]:
    """``verifier``: one key, or several — then every checkpoint must carry a valid signature by each.

    ``redactions``: tombstones of this log (``ledger.redaction``). A leaf they cover may have no record; a
    tombstone that does not match the hashes, or a record back at a redacted leaf, is a finding."""
    findings: list[Finding] = []
    checkpoints: list[Checkpoint] = []
    verifiers = [verifier] if isinstance(verifier, Verifier) else list(verifier)
    for note in notes:
        try:
            text, names = open_note(note, verifiers)
            missing = sorted({v.name for v in verifiers} - set(names))
            if missing:
                raise NoteError(f"no valid signature by {', '.join(missing)}")
            cp = Checkpoint.parse(text)
        except NoteError as exc:
            findings.append(Finding(origin, "checkpoint-signature", f"a checkpoint does not verify: {exc}"))
            continue
        if cp.origin != origin:
            findings.append(Finding(origin, "checkpoint-origin", f"checkpoint names another log: {cp.origin}"))
            continue
        checkpoints.append(cp)
    checkpoints.sort(key=lambda c: c.size)

    # 2. the hash store against the checkpoints
    tree = CompactRange()
    roots: dict[int, bytes] = {}
    wanted = {c.size for c in checkpoints}
    for h in hashes:
        tree.append(h)
        if tree.size in wanted:
            roots[tree.size] = tree.root()
    trusted = 0
    for cp in checkpoints:
        if cp.size > len(hashes):
            findings.append(Finding(origin, "truncated", f"a checkpoint covers {cp.size} leaves but only "
                                    f"{len(hashes)} remain", index=len(hashes)))
            break
        if roots.get(cp.size) != cp.root:
            findings.append(Finding(origin, "hash-log-altered", f"stored hashes do not reproduce the signed root at "
                                    f"size {cp.size}", index=trusted))
            break
        trusted = cp.size
    # Successive checkpoints whose roots were both reproduced above are consistent: both are roots of
    # prefixes of one append-only hash sequence (a consistency proof built from it would verify by
    # construction, so it is not rebuilt here). Two checkpoints of the same size must agree.
    by_size: dict[int, bytes] = {}
    for cp in checkpoints:
        if by_size.setdefault(cp.size, cp.root) != cp.root:
            findings.append(Finding(origin, "inconsistent-checkpoints", f"two different roots signed at size {cp.size}"))

    # 3. tombstones against the hashes, then records against the hashes
    redacted: set[int] = set()
    for r in redactions:
        if r.matches(hashes):
            redacted.update(indexes_of(r.ranges))
        else:
            findings.append(Finding(origin, "tombstone", f"the tombstones of {r.by or 'a deletion'} do not match the "
                                    "log's hashes at the leaves they name", index=r.ranges[0][0] if r.ranges else None))
    seen: dict[int, str] = {}
    mismatched: list[tuple[int, dict[str, Any]]] = []
    for row in rows:
        index, rid = row.get("leaf_index"), row.get("record_id")
        if index is None or not 0 <= index < len(hashes):
            findings.append(Finding(origin, "inserted", "a record claims a leaf the log does not have", index, rid))
            continue
        if index in seen:
            findings.append(Finding(origin, "inserted", f"a second record at this leaf (first: {seen[index]})", index, rid))
            continue
        seen[index] = rid
        if index in redacted:
            findings.append(Finding(origin, "resurrected", "a record is back at a leaf an erasure or retention run "
                                    "deleted (restored from a backup?)", index, rid))
            continue
        if leaf_hash(encode(row)) != hashes[index]:
            mismatched.append((index, row))
    # a record that would match another mismatched leaf if it stood there was moved (e.g. two swapped)
    spots = {i for i, _ in mismatched} if len(mismatched) <= 1000 else set()
    for index, row in mismatched:
        home = next((j for j in spots if j != index and leaf_hash(encode({**row, "leaf_index": j})) == hashes[j]), None)
        if home is not None:
            findings.append(Finding(origin, "moved", f"this record is leaf {home}", index, row.get("record_id")))
        else:
            findings.append(Finding(origin, "modified", "the record's bytes differ from its leaf", index, row.get("record_id")))
    for index in range(len(hashes)):
        if index not in seen and index not in redacted:
            findings.append(Finding(origin, "deleted", "no record for this leaf", index))
            break
    findings.sort(key=lambda f: (f.index is None, f.index if f.index is not None else 0))
    return Summary(origin, len(hashes), len(checkpoints), trusted, len(redacted)), findings


def first_problem(results: Iterable[tuple[Summary, list[Finding]]]) -> Finding | None:
    for _, findings in results:
        if findings:
            return findings[0]
    return None


__all__ = ["Finding", "Summary", "audit", "first_problem", "LedgerError"]
