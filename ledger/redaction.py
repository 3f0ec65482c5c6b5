"""Redactions: leaves whose records were deleted on purpose (an erasure, a retention run), kept as hashes.

A log is append-only and holds hashes, not content, so deleting a record leaves its leaf hash in place and
every checkpoint, inclusion proof and consistency proof of the log as it was (Certificate Transparency and
SCITT keep logs checkable the same way). What replaces the record is a *tombstone*: the deleting job names the
leaves it removed, as index ranges, and commits to their hashes with one digest::

    digest = SHA-256( b"meterseal redaction v1" || count (8 bytes, big-endian) || hash[i] for each i, ascending )

The audit then accepts a missing record at a redacted index, and fails a tombstone whose digest does not match
the hashes the log holds there (a tombstone cannot excuse a leaf it was not made for), or a record present again
at a redacted index (a deleted record restored from a backup). Pure: no I/O.

>>> hashes = [bytes([i]) * 32 for i in range(6)]
>>> r = Redaction.of("readings", 0, [1, 2, 4], hashes, by="e1")
>>> r.ranges, r.count, r.matches(hashes)
(((1, 3), (4, 5)), 3, True)
>>> r.matches(hashes[:4] + [bytes(32)] + hashes[5:])
False
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

_LABEL = b"meterseal redaction v1"


def to_ranges(indexes: Iterable[int]) -> tuple[tuple[int, int], ...]:
    """Sorted, merged half-open ranges ``[start, end)`` covering ``indexes``."""
    out: list[list[int]] = []
    for i in sorted(set(indexes)):
        if out and out[-1][1] == i:
            out[-1][1] = i + 1
        else:
            out.append([i, i + 1])
    return tuple((a, b) for a, b in out)


def indexes_of(ranges: Iterable[Sequence[int]]) -> Iterable[int]:
    for start, end in ranges:
        yield from range(start, end)


def digest(hashes: Sequence[bytes], ranges: Iterable[Sequence[int]]) -> str | None:
    """The digest of the leaf hashes in ``ranges`` (None if a range reaches past the log)."""
    h = hashlib.sha256(_LABEL)
    count, parts = 0, []
    for i in indexes_of(ranges):
        if not 0 <= i < len(hashes):
            return None
        parts.append(hashes[i])
        count += 1
    h.update(struct.pack(">Q", count))
    for part in parts:
        h.update(part)
    return h.hexdigest()


@dataclass(frozen=True)
class Redaction:
    """The leaves of one log (``table``/``partition``) that one job (``by``) deleted the records of."""

    table: str
    partition: int
    ranges: tuple[tuple[int, int], ...]
    digest: str
    by: str = ""

    @classmethod
    def of(cls, table: str, partition: int, indexes: Iterable[int], hashes: Sequence[bytes], *, by: str = "") -> "Redaction":
        ranges = to_ranges(indexes)
        found = digest(hashes, ranges)
        if found is None:
            raise ValueError(f"{table}/p{partition}: a redacted leaf is past the log's end")
        return cls(table, partition, ranges, found, by)

    @property
    def count(self) -> int:
        return sum(b - a for a, b in self.ranges)

    def matches(self, hashes: Sequence[bytes]) -> bool:
        return digest(hashes, self.ranges) == self.digest

    def to_dict(self) -> dict[str, Any]:
        return {"table": self.table, "partition": self.partition, "ranges": [list(r) for r in self.ranges],
                "digest": self.digest, "by": self.by}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> "Redaction":
        return cls(doc["table"], int(doc["partition"]), tuple((int(a), int(b)) for a, b in doc["ranges"]),
                   doc["digest"], doc.get("by", ""))
