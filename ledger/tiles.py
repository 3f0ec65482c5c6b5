"""A log's hashes as C2SP tlog-tiles on write-once object storage, and its checkpoints beside them.

Layout under a log's prefix (https://c2sp.org/tlog-tiles)::

    tile/0/x001/234        a full tile: 256 level-0 hashes (leaf hashes), 32 bytes each
    tile/0/x001/235.p/17   a partial tile: the first 17 hashes of tile 1235
    tile/1/004             level 1: each hash the root of 256 level-0 hashes
    claim/00000000000000000300   which writer appended leaves from index 300 (fence, see below)
    checkpoint/00000000000000000300.note   a signed checkpoint at tree size 300

Every object is written once with ``If-None-Match: *`` (``Blobs.create``) and never overwritten. A writer
first *claims* the index it appends from: ``claim/<start>`` holds the end index and a digest of the
hashes. Two writers racing from the same size both try to create the same claim; one loses with a
conditional-write failure and is fenced (``Fenced``) before it writes any tile, so the log never forks.
Writing the same claim again with the same content (a writer that crashed half-way, repeating itself) is
allowed, so appends stay idempotent.

Pure logic over a ``Blobs`` protocol; ``streams.store.objects`` provides S3 (boto3) and directory blobs.

>>> blobs = MemoryBlobs()
>>> hashes = TileHashStore(blobs, "log")
>>> hashes.append([bytes([i % 256]) * 32 for i in range(300)])
>>> hashes.size(), sorted(k for k in blobs.objects if "/tile/" in k)
(300, ['log/tile/0/000', 'log/tile/0/001.p/44', 'log/tile/1/000.p/1'])
"""

from __future__ import annotations

import hashlib
from typing import Protocol, Sequence

from .exceptions import LedgerError
from .hashing import HASH_LEN, node_hash

WIDTH = 256


class Blobs(Protocol):
    def get(self, key: str) -> bytes | None: ...
    def create(self, key: str, data: bytes) -> bool: ...  # False if the key exists (If-None-Match: *)
    def exists(self, key: str) -> bool: ...
    def list(self, prefix: str) -> list[str]: ...


class MemoryBlobs:
    """``Blobs`` in a dict (tests, examples)."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def get(self, key: str) -> bytes | None:
        return self.objects.get(key)

    def create(self, key: str, data: bytes) -> bool:
        if key in self.objects:
            return False
        self.objects[key] = bytes(data)
        return True

    def exists(self, key: str) -> bool:
        return key in self.objects

    def list(self, prefix: str) -> list[str]:
        return sorted(k for k in self.objects if k.startswith(prefix))


class Fenced(LedgerError):
    """Another writer appended to this log first: reload it before appending again."""


def tile_path(level: int, index: int, width: int = WIDTH) -> str:
    """``tile/<L>/<N>[.p/<W>]`` with N in 3-digit groups, all but the last prefixed by ``x``."""
    digits = f"{index:d}"
    digits = "0" * (-len(digits) % 3) + digits
    groups = [digits[i:i + 3] for i in range(0, len(digits), 3)]
    name = "/".join([*(f"x{g}" for g in groups[:-1]), groups[-1]])
    return f"tile/{level}/{name}" + (f".p/{width}" if width < WIDTH else "")


def _root(hashes: Sequence[bytes]) -> bytes:
    """Root of a complete subtree of 2^k hashes."""
    level = list(hashes)
    while len(level) > 1:
        level = [node_hash(level[i], level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


class TileHashStore:
    """``ledger.storage.HashStore`` over tiles: ``size``, ``read``, ``append`` (fenced)."""

    def __init__(self, blobs: Blobs, prefix: str) -> None:
        self.blobs, self.prefix = blobs, prefix.rstrip("/") + "/"
        self._size: int | None = None
        self._tail: list[bytes] = []  # hashes of the last, partial level-0 tile

    def _key(self, rest: str) -> str:
        return self.prefix + rest

    def _partial_width(self, index: int) -> int:
        """Widest partial tile at level 0, tile ``index`` (0 if none)."""
        base = self._key(tile_path(0, index)) + ".p/"
        widths = [int(k[len(base):]) for k in self.blobs.list(base) if k[len(base):].isdigit()]
        return max(widths, default=0)

    def size(self) -> int:
        """Leaves stored: full level-0 tiles (found by exponential then binary search) plus the widest partial."""
        full = lambda n: self.blobs.exists(self._key(tile_path(0, n)))  # noqa: E731
        start = (self._size or 0) // WIDTH
        if start and not full(start - 1):
            start = 0
        lo, step = start, 1  # tiles [0, lo) are full
        while full(lo + step - 1):
            lo, step = lo + step, step * 2
        hi = lo + step - 1  # tile hi is not full
        while lo < hi:
            mid = (lo + hi) // 2
            if full(mid):
                lo = mid + 1
            else:
                hi = mid
        size = lo * WIDTH + self._partial_width(lo)
        if size != self._size:
            self._size, self._tail = size, []
        return size

    def _tile(self, level: int, index: int, width: int, data: bytes | None = None) -> list[bytes]:
        data = self.blobs.get(self._key(tile_path(level, index, width))) if data is None else data
        if data is None or len(data) != width * HASH_LEN:
            raise LedgerError(f"{self.prefix}: tile {tile_path(level, index, width)} is missing or has the wrong length")
        return [data[i:i + HASH_LEN] for i in range(0, len(data), HASH_LEN)]

    def read(self, start: int = 0, end: int | None = None) -> list[bytes]:
        size = self.size()
        end = size if end is None else min(end, size)
        out: list[bytes] = []
        for t in range(start // WIDTH, (end + WIDTH - 1) // WIDTH):
            width = min(WIDTH, size - t * WIDTH)
            tile = self._tile(0, t, width)
            lo, hi = max(start - t * WIDTH, 0), min(end - t * WIDTH, width)
            out += tile[lo:hi]
        return out

    def append(self, hashes: Sequence[bytes]) -> None:
        if not hashes:
            return
        if any(len(h) != HASH_LEN for h in hashes):
            raise ValueError("leaf hashes are 32 bytes")
        size = self._size if self._size is not None else self.size()  # where this writer's view ends
        end = size + len(hashes)
        claim = f"{end}\n{hashlib.sha256(b''.join(hashes)).hexdigest()}\n".encode()
        key = self._key(f"claim/{size:020d}")
        if not self.blobs.create(key, claim) and self.blobs.get(key) != claim:
            self._size = None
            raise Fenced(f"{self.prefix}: another writer appended at leaf {size}; reload the log")
        first_tile = size // WIDTH
        tail = self._tail if len(self._tail) == size % WIDTH else self.read(first_tile * WIDTH, size)
        level0 = tail + list(hashes)
        for offset in range(0, len(level0), WIDTH):
            t = first_tile + offset // WIDTH
            chunk = level0[offset:offset + WIDTH]
            self._put(0, t, chunk)
            if len(chunk) == WIDTH:
                self._lift(0, t, _root(chunk))
        self._size, self._tail = end, level0[(len(level0) // WIDTH) * WIDTH:]
        if end % WIDTH == 0:
            self._tail = []

    def _put(self, level: int, index: int, chunk: list[bytes]) -> None:
        data = b"".join(chunk)
        key = self._key(tile_path(level, index, len(chunk)))
        if not self.blobs.create(key, data) and self.blobs.get(key) != data:
            raise Fenced(f"{self.prefix}: tile {key} exists with other hashes; the log was written by another writer")

    def _lift(self, level: int, index: int, root: bytes) -> None:
        """Tile ``index`` of ``level`` became full with subtree root ``root``: add it to its parent tile at
        level + 1 (a wider partial tile, or the full one), and so on up."""
        parent, slot = divmod(index, WIDTH)
        below = (self._upper(level + 1, parent, slot) if slot else []) + [root]
        self._put(level + 1, parent, below)
        if len(below) == WIDTH:
            self._lift(level + 1, parent, _root(below))

    def _upper(self, level: int, index: int, width: int) -> list[bytes]:
        """Tile ``index`` of ``level`` (>= 1) with ``width`` hashes; if a writer was killed after writing the full
        tiles below it but before lifting them, it is missing: made again from the roots of those tiles (and
        written, once). The CI run of 2026-12-01 killed a worker in exactly that gap; the next writer stopped."""
        data = self.blobs.get(self._key(tile_path(level, index, width)))
        if data is not None:
            return self._tile(level, index, width, data)  # (there, but the wrong length: an error, not a crash's gap)
        below = [self._tile(0, index * WIDTH + i, WIDTH) if level == 1 else self._upper(level - 1, index * WIDTH + i, WIDTH)
                 for i in range(width)]
        hashes = [_root(tile) for tile in below]
        self._put(level, index, hashes)
        return hashes


class TileCheckpoints:
    """``ledger.log.CheckpointStore`` as write-once objects ``checkpoint/<size>.note``.

    A checkpoint at a size that already has a different note is refused (``Fenced``): a second writer's
    tree of the same size can never replace the first one's."""

    def __init__(self, blobs: Blobs, prefix: str) -> None:
        self.blobs, self.prefix = blobs, prefix.rstrip("/") + "/checkpoint/"

    def put(self, size: int, note: str) -> None:
        key = f"{self.prefix}{size:020d}.note"
        if not self.blobs.create(key, note.encode()) and self.blobs.get(key) != note.encode():
            raise Fenced(f"{key}: another writer signed a checkpoint at this size first")

    def all(self) -> list[str]:
        keys = sorted(k for k in self.blobs.list(self.prefix) if k.endswith(".note"))
        return [(self.blobs.get(k) or b"").decode() for k in keys]
