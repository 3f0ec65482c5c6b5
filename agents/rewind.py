"""After a rebalance, partitions nothing was committed on are read again from their start.

Faust (0.15) drops records it has already taken from aiokafka when a rebalance stops the flow mid-batch or
a partition is not active yet (``Consumer.getmany``), and relies on ``perform_seek`` after recovery to
go back to each partition's committed offset. But aiokafka's ``seek_to_committed`` only seeks partitions
that *have* a committed offset: a partition with none stays wherever the dropped records left it, so its
records are never delivered. Measured on 2026-12-01 (``tests/test_scale_out.py``, S3 store, one of three
workers SIGKILLed 4 s after it started): the new owner of the killed worker's partition, which had no
commit yet, sat at offset 3,600 — the partition's end — with 2,442 of its readings never sealed; the
group's committed offset was none, and no later reading came to show the hole (``InOrder`` finds holes
only when a later offset arrives). The CI runs of 2026-12-01 failed on this, twice.

``install()`` wraps ``perform_seek``: afterwards, every assigned stream partition (not a table changelog)
without a committed offset is sought to its beginning, which is what ``consumer_auto_offset_reset =
"earliest"`` promises for a partition with no commit. Re-reading is safe: every sink is idempotent.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable

from aiokafka import TopicPartition
from faust.transport import consumer as faust_consumer

log = logging.getLogger("meterseal.worker")
_original = faust_consumer.Consumer.perform_seek


def uncommitted(assigned: Iterable[Any], committed: dict[Any, Any], is_changelog: Callable[[Any], bool]) -> list:
    """The assigned stream partitions with no committed offset (Faust keeps none for offset 0 either)."""
    return sorted((tp for tp in assigned if not is_changelog(tp) and not committed.get(tp)),
                  key=lambda tp: (tp.topic, tp.partition))


async def perform_seek(self) -> None:
    await _original(self)
    fresh = uncommitted(self.assignment(), self._committed_offset, self._is_changelog_tp)
    if not fresh:
        return
    try:  # (aiokafka wants its own TopicPartition, not Faust's TP)
        await self._thread.seek_to_beginning(*(TopicPartition(tp.topic, tp.partition) for tp in fresh))
    except Exception as exc:  # noqa: BLE001 - e.g. revoked meanwhile: the next rebalance seeks again
        log.warning("could not rewind %d uncommitted partition(s) (%s: %s)", len(fresh), type(exc).__name__, exc)
        return
    for tp in fresh:
        self._read_offset[tp] = None
    log.info("no committed offset on %s: reading from the start", ", ".join(f"{tp.topic}/{tp.partition}" for tp in fresh))


def install() -> None:
    """Patch Faust's consumer (idempotent)."""
    faust_consumer.Consumer.perform_seek = perform_seek
