"""Where a log keeps its leaf hashes: a ``HashStore`` protocol and an append-only file.

The hash file is level 0 of the tree — 32 bytes per leaf, in order. The appender's position is its
length, so it survives restarts; signed checkpoints make any later change to it evident.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol, Sequence

from .hashing import HASH_LEN


class HashStore(Protocol):
    def size(self) -> int: ...
    def read(self, start: int = 0, end: int | None = None) -> list[bytes]: ...
    def append(self, hashes: Sequence[bytes]) -> None: ...


class MemoryHashStore:
    def __init__(self) -> None:
        self._hashes: list[bytes] = []

    def size(self) -> int:
        return len(self._hashes)

    def read(self, start: int = 0, end: int | None = None) -> list[bytes]:
        return self._hashes[start:end]

    def append(self, hashes: Sequence[bytes]) -> None:
        self._hashes.extend(hashes)


class FileHashStore:
    """Leaf hashes in one append-only file; a torn last write (crash) is cut back to whole hashes."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def size(self) -> int:
        return (self.path.stat().st_size // HASH_LEN) if self.path.exists() else 0

    def read(self, start: int = 0, end: int | None = None) -> list[bytes]:
        if not self.path.exists():
            return []
        with open(self.path, "rb") as fh:
            fh.seek(start * HASH_LEN)
            data = fh.read(-1 if end is None else max(0, end - start) * HASH_LEN)
        usable = len(data) - len(data) % HASH_LEN
        return [data[i:i + HASH_LEN] for i in range(0, usable, HASH_LEN)]

    def append(self, hashes: Sequence[bytes]) -> None:
        if not hashes:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as fh:
            whole = fh.tell() - fh.tell() % HASH_LEN
            if whole != fh.tell():
                fh.truncate(whole)
            fh.write(b"".join(hashes))
            fh.flush()
            os.fsync(fh.fileno())
