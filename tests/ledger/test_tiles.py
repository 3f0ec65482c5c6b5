"""C2SP tlog-tiles: paths, tile contents against RFC 6962 roots, write-once fencing, and a ``Log`` over tiles."""

from __future__ import annotations

import random

import pytest

from ledger.compact import root
from ledger.hashing import leaf_hash, subtree_root
from ledger.log import Log
from ledger.note import Signer
from ledger.exceptions import LedgerError
from ledger.tiles import WIDTH, Fenced, MemoryBlobs, TileCheckpoints, TileHashStore, tile_path


def _hashes(n: int) -> list[bytes]:
    return [leaf_hash(i.to_bytes(8, "big")) for i in range(n)]


@pytest.mark.parametrize(("level", "index", "width", "path"), [
    (0, 0, 256, "tile/0/000"), (0, 1234067, 256, "tile/0/x001/x234/067"), (1, 5, 17, "tile/1/005.p/17"),
    (2, 999, 256, "tile/2/999"), (0, 1000, 1, "tile/0/x001/000.p/1"),
])
def test_tile_paths_follow_the_spec(level, index, width, path):
    assert tile_path(level, index, width) == path


def test_appends_in_any_batches_read_back_and_higher_tiles_hold_subtree_roots():
    hashes = _hashes(3 * WIDTH * WIDTH // 2 + 37)  # past a full level-1 tile: level 2 appears
    blobs, store, rng, i = MemoryBlobs(), None, random.Random(7), 0
    store = TileHashStore(blobs, "log")
    while i < len(hashes):
        k = rng.choice([1, 3, 255, 256, 257, 1000])
        store.append(hashes[i:i + k])
        i += k
    fresh = TileHashStore(blobs, "log")  # a reader that never wrote: size from the tiles alone
    assert fresh.size() == len(hashes)
    assert fresh.read() == hashes
    assert fresh.read(250, 600) == hashes[250:600]
    level1 = blobs.get("log/" + tile_path(1, 0))
    assert [level1[j * 32:(j + 1) * 32] for j in (0, 255)] == [subtree_root(hashes[j * WIDTH:(j + 1) * WIDTH]) for j in (0, 255)]
    assert blobs.get("log/" + tile_path(2, 0, 1)) == subtree_root(hashes[:WIDTH * WIDTH])
    assert root(fresh.read()) == root(hashes)


def test_a_second_writer_from_the_same_size_is_fenced_and_the_log_does_not_fork():
    blobs = MemoryBlobs()
    a, b = TileHashStore(blobs, "log"), TileHashStore(blobs, "log")
    a.append(_hashes(10))
    b.size()
    a.append([leaf_hash(b"a")] * 5)
    with pytest.raises(Fenced):
        b.append([leaf_hash(b"b")] * 7)  # b still thinks the log has 10 leaves
    assert TileHashStore(blobs, "log").read() == _hashes(10) + [leaf_hash(b"a")] * 5
    b.size()  # reloaded: b now appends after a
    b.append([leaf_hash(b"b")])
    assert TileHashStore(blobs, "log").size() == 16


def test_repeating_the_same_append_after_a_crash_is_idempotent():
    blobs = MemoryBlobs()
    TileHashStore(blobs, "log").append(_hashes(300))
    again = TileHashStore(blobs, "log")
    again._size = 0  # a writer that crashed before learning its own append went through
    again.append(_hashes(300))
    assert TileHashStore(blobs, "log").read() == _hashes(300)


def test_a_writer_killed_between_a_full_tile_and_its_lift_leaves_a_gap_the_next_writer_fills():
    """The kill test on S3 once stopped the next writer: tile/0/002 was full but tile/1/000.p/3 never written."""
    want = MemoryBlobs()
    TileHashStore(want, "log").append(_hashes(1100))
    blobs = MemoryBlobs()
    TileHashStore(blobs, "log").append(_hashes(768))
    del blobs.objects["log/tile/1/000.p/3"]  # killed after writing the third full tile, before lifting it
    TileHashStore(blobs, "log").append(_hashes(1100)[768:])
    assert {k: v for k, v in blobs.objects.items() if "/tile/" in k} == {k: v for k, v in want.objects.items() if "/tile/" in k}
    assert TileHashStore(blobs, "log").read() == _hashes(1100)


def test_a_wrong_length_upper_tile_is_an_error_not_rebuilt():
    blobs = MemoryBlobs()
    TileHashStore(blobs, "log").append(_hashes(768))
    blobs.objects["log/tile/1/000.p/3"] = blobs.objects["log/tile/1/000.p/3"][:-1]
    with pytest.raises(LedgerError, match="wrong length"):
        TileHashStore(blobs, "log").append(_hashes(1024)[768:])


def test_checkpoints_are_write_once_and_a_log_over_tiles_signs_and_reloads():
    blobs, signer = MemoryBlobs(), Signer.generate("test")
    log = Log("o", TileHashStore(blobs, "log"), TileCheckpoints(blobs, "log"))
    log.append(_hashes(513))
    note = log.checkpoint(signer)
    again = Log("o", TileHashStore(blobs, "log"), TileCheckpoints(blobs, "log"))
    assert again.size == 513 and again.root() == root(_hashes(513))
    with pytest.raises(Fenced):
        TileCheckpoints(blobs, "log").put(513, note.replace("o\n", "x\n", 1))
    TileCheckpoints(blobs, "log").put(513, note)  # the same note again: fine
    assert TileCheckpoints(blobs, "log").all() == [note]
