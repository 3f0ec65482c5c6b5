"""An appendable Merkle log over a ``HashStore``, with signed checkpoints it never lets contradict each other.

>>> from ledger.storage import MemoryHashStore
>>> from ledger.note import Signer
>>> log = Log("example/log", MemoryHashStore(), MemoryCheckpoints())
>>> log.append([b"a" * 32, b"b" * 32])
0
>>> note = log.checkpoint(Signer.generate("example"))
>>> log.size, note.splitlines()[:2]
(2, ['example/log', '2'])
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Protocol, Sequence

from .checkpoint import Checkpoint
from .compact import CompactRange
from .exceptions import LedgerError
from .hashing import HASH_LEN
from .note import Signer, sign
from .storage import HashStore


class CheckpointStore(Protocol):
    def put(self, size: int, note: str) -> None: ...
    def all(self) -> list[str]: ...


class MemoryCheckpoints:
    def __init__(self) -> None:
        self._notes: dict[int, str] = {}

    def put(self, size: int, note: str) -> None:
        self._notes[size] = note

    def all(self) -> list[str]:
        return [self._notes[k] for k in sorted(self._notes)]


class FileCheckpoints:
    """One ``<tree size>.note`` file per signed checkpoint in a directory."""

    def __init__(self, directory: Path | str) -> None:
        self.directory = Path(directory)

    def put(self, size: int, note: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.directory / f".{size:020d}.tmp"
        tmp.write_text(note)
        tmp.replace(self.directory / f"{size:020d}.note")

    def all(self) -> list[str]:
        if not self.directory.exists():
            return []
        return [p.read_text() for p in sorted(self.directory.glob("*.note"))]


class Log:
    """A log's appender. On load it replays the hash store once and checks it against its last checkpoint."""

    def __init__(self, origin: str, hashes: HashStore, checkpoints: CheckpointStore, *, clock=time.time) -> None:
        self.origin, self.hashes, self.checkpoints, self.clock = origin, hashes, checkpoints, clock
        self._range = CompactRange()
        notes = checkpoints.all()
        self._last = Checkpoint.from_note(notes[-1]) if notes else None
        self._last_time = clock()
        for h in hashes.read():
            self._range.append(h)
            if self._last and self._range.size == self._last.size and self._range.root() != self._last.root:
                raise LedgerError(f"{origin}: the stored hashes do not match the checkpoint at size {self._last.size}")
        if self._last and self._range.size < self._last.size:
            raise LedgerError(f"{origin}: {self._range.size} leaves stored but a checkpoint was signed at {self._last.size}")

    @property
    def size(self) -> int:
        return self._range.size

    def root(self) -> bytes:
        return self._range.root()

    def append(self, leaf_hashes: Sequence[bytes]) -> int:
        """Append leaf hashes; returns the index of the first."""
        if any(len(h) != HASH_LEN for h in leaf_hashes):
            raise ValueError("leaf hashes are 32 bytes")
        first = self._range.size
        self.hashes.append(leaf_hashes)
        for h in leaf_hashes:
            self._range.append(h)
        return first

    def due(self, *, every_leaves: int, every_s: float) -> bool:
        grown = self.size - (self._last.size if self._last else 0)
        return grown > 0 and (grown >= every_leaves or self.clock() - self._last_time >= every_s)

    def checkpoint(self, *signers: Signer) -> str:
        """Sign and keep a checkpoint of the current tree; returns the signed note."""
        cp = Checkpoint(self.origin, self.size, self.root())
        if self._last and (cp.size < self._last.size or (cp.size == self._last.size and cp.root != self._last.root)):
            raise LedgerError(f"{self.origin}: refusing to sign a checkpoint inconsistent with the last one")
        note = sign(cp.body(), *signers)
        self.checkpoints.put(cp.size, note)
        self._last, self._last_time = cp, self.clock()
        return note
