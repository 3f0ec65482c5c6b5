"""The worker's side of erasure and retention: it watches the erasure fence and drops what it keeps of an erased
subject, and it enforces the retention policy on its schedule.

Every 2 s the worker reads new fence entries (``Pipeline.read_fence``, in a thread): it forgets the subjects'
cached keys and tokens (their next reading gets the next token epoch) and deletes the per-meter state it keeps
under their tokens — the validator's last reading and the detector's profile — from its tables and, with a
tombstone, from their changelog topics (``drop_erased``). An erasure waits ``METERSEAL_ERASURE_GRACE_S`` after
fencing before it destroys keys, so no worker seals under a doomed key after that.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Awaitable, Callable

from streams.keys.subjects import subject_hash

log = logging.getLogger("meterseal.worker")


def drop_erased(table: Any, hashes: set[str], partitions: dict[bytes, int]) -> int:
    """Delete the entries of a per-meter table (keys: meter tokens) whose token hash is in ``hashes``: each from the
    table and, as a tombstone, from its changelog partition (``partitions``: where this worker wrote each key; the
    in-memory store knows where recovered keys came from). Returns how many."""
    store = table.data
    recovered = getattr(store, "_key_partition", {})
    doomed = [key for key in list(store.keys()) if subject_hash(key.decode()) in hashes]
    for key in doomed:
        partition = partitions.pop(key, recovered.get(key))
        if partition is not None:
            table.send_changelog(partition, key, None, value_serializer="raw")
        store.pop(key, None)
    return len(doomed)


def install(app: Any, pipeline: Any, tables: list[Any], partitions: dict[bytes, int], *,
            retention_every_s: float, enforce: Callable[[], dict] | None,
            also: list[Callable[[Callable[[str], bool]], int]] | None = None,
            delete_wrapped: Callable[[list[str]], Awaitable[None]] | None = None) -> None:
    """Register the fence watch (every 2 s) and, with ``enforce``, the retention run (every ``retention_every_s``).
    ``also``: more of the worker's own state to drop of erased subjects (``forget(erased(token))`` each; the list may
    grow after this call: the notifier adds its own). ``delete_wrapped(key_ids)``: after a retention run, delete
    the DEKs it destroyed from the compacted ``keys.deks`` topic (tombstones)."""
    also = also if also is not None else []

    @app.timer(interval=2.0)
    async def watch_erasures() -> None:
        if pipeline.erased_dropped:
            log.warning("%d sealed record(s) of erased subjects not stored (re-read from a sealed topic, or sealed "
                        "before this worker saw the fence)", pipeline.erased_dropped)
            pipeline.erased_dropped = 0
        entries = await asyncio.to_thread(pipeline.read_fence)
        if not entries:
            return
        hashes = {entry.subject_hash for entry in entries}
        pipeline.forget_erased(hashes)  # (on the event loop: the seal agent's caches)
        dropped = sum(drop_erased(table, hashes, partitions) for table in tables)
        for forget in also:
            dropped += await asyncio.to_thread(forget, lambda token: subject_hash(token) in hashes)
        log.warning("%d subject(s) erased: their keys forgotten, %d per-meter state entr(ies) dropped",
                    len(hashes), dropped)

    if enforce is not None and retention_every_s > 0:
        @app.timer(interval=retention_every_s, on_leader=True)
        async def enforce_retention() -> None:
            try:
                report = await asyncio.to_thread(enforce)
                log.warning("retention: %s (erasure log leaf %s)", report["deleted"], report["leaf_index"])
                if delete_wrapped is not None and report.get("destroyed_deks"):
                    await delete_wrapped(report["destroyed_deks"])
                    log.warning("retention: %d destroyed DEK(s) deleted from keys.deks", len(report["destroyed_deks"]))
            except Exception as exc:  # noqa: BLE001 - maintenance failing must not stop ingest; the next run retries
                log.error("retention run failed (%s: %s): retried at the next run", type(exc).__name__, exc)
