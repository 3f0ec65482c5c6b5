"""The seal and store agents' batch machinery: ``Batch`` (a seal batch's sends, confirmed before its events are
acked), ``StoreBehind`` (the seal agent's readings stored in a thread, events acked once stored) and ``InOrder``
(no hole in a partition's offsets reaches an agent). Plain asyncio around Faust events; ``agents.app`` wires them.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from streams.sealed_batch import batch_bodies

log = logging.getLogger("meterseal.worker")
EXIT_SOFTWARE = 70  # EX_SOFTWARE: an unexpected error in a seal batch; restart the worker


class Batch:
    """One seal batch (``take_events``): its sealed records, sent as one ``SealedBatch`` message per raw
    partition (to the same partition number of the sealed topic, so a meter's records stay in order on one
    partition; the key names the raw partition and first offset), confirmed before Faust acks its raw messages.
    One message per batch instead of one per reading: a Kafka message costs this worker more than sealing a
    reading does, on both ends (produce here, consume in the store agent).

    Faust acks every event of a batch when the batch's body ends, and commits after flushing the producer —
    but a flush does not fail when a send failed, so a raw offset could be committed for a sealed record
    the broker never took. ``confirm`` waits for every send of the batch and sends again any the broker
    refused. If the body ends with an exception instead, no event of the batch may be acked: on a cancel
    (shutdown) each keeps an extra reference, so it stays uncommitted and is read again after a restart;
    any other exception is a bug that stops the worker (exit 70) before anything is acked.
    """

    def __init__(self, events) -> None:
        self.events = events
        # raw partition -> (offset, encoded sealed record, the record's fields)
        self.sealed: dict[int, list[tuple[int, bytes, dict | None]]] = {}
        self.sent: list[tuple[Any, str, bytes, bytes, int | None]] = []  # (delivery future, topic, key, value, partition)
        self._carried: list[tuple[int, int, list[dict]]] = []  # (index in sent, partition, the message's records)
        self.stored_rows: dict[int, list[tuple[int, dict]]] = {}  # after confirm: partition -> (sealed offset, record)

    def seal(self, partition: int, offset: int, body: bytes, record: dict | None = None) -> None:
        self.sealed.setdefault(partition, []).append((offset, body, record))

    async def send_sealed(self, producer, topic: str, source_topic: str) -> None:
        for partition, items in self.sealed.items():
            key = f"{source_topic}/{partition}/{items[0][0]}".encode()
            done = 0
            for value in batch_bodies([body for _, body, _ in items]):
                await self.send(producer, topic, key, value, partition)
                count = _batch_count(value)
                self._carried.append((len(self.sent) - 1, partition, [r for _, _, r in items[done:done + count]]))
                done += count
        self.sealed.clear()

    async def send(self, producer, topic: str, key: bytes, value: bytes, partition: int | None = None) -> None:
        self.sent.append((await producer.send(topic, key, value, partition, None, None), topic, key, value, partition))

    async def confirm(self, producer) -> None:
        """Wait until the broker has every message of the batch (sending again what it refused); then
        ``stored_rows`` holds each sealed record with the offset of the sealed-topic message that carries it."""
        offsets = []
        for future, topic, key, value, partition in self.sent:
            while True:
                try:
                    offsets.append(getattr(await future, "offset", None))
                    break
                except Exception as exc:  # noqa: BLE001 - a record the broker refused is sent again, never dropped
                    log.error("broker did not take a sealed record on %s (%s: %s): sending it again in 1 s",
                              topic, type(exc).__name__, exc)
                    await asyncio.sleep(1.0)
                    future = await producer.send(topic, key, value, partition, None, None)
        for index, partition, records in self._carried:
            if records and records[0] is not None:
                self.stored_rows.setdefault(partition, []).extend((offsets[index], r) for r in records)
        self._carried.clear()
        self.sent.clear()

    async def __aenter__(self) -> "Batch":
        return self

    async def __aexit__(self, kind, exc, tb) -> bool:
        if kind is None:
            return False
        for event in self.events:
            event.message.incref()  # never acked by take_events: uncommitted, redelivered after a restart
        if issubclass(kind, asyncio.CancelledError):
            return False
        log.critical("seal batch failed (%s: %s): stopping the worker (exit 70) so that nothing of the batch is "
                     "committed; restart it", kind.__name__, exc, exc_info=(kind, exc, tb))
        logging.shutdown()
        os._exit(EXIT_SOFTWARE)


def _batch_count(value: bytes) -> int:
    """How many records a ``SealedBatch`` message from ``batch_bodies`` holds: its array block's count (an Avro
    long after the 10-byte single-object header)."""
    shift = result = 0
    for byte in value[10:20]:
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            break
        shift += 7
    return (result >> 1) ^ -(result & 1)


class StoreBehind:
    """Stores the seal agent's sealed records in a thread while the agent seals the next batches.

    The store (Parquet segment, ledger leaves, checkpoints) is written straight from the records the seal
    agent just made — no second Faust consume and Avro decode of ``readings.sealed``, which is still produced
    for other consumers and for ``store rebuild``; each row keeps the partition and offset of the sealed-topic
    message that carries it, as when a store agent read them. Seal batches queue up and are written together
    once ``min_rows`` are queued or the oldest has waited ``max_wait_s`` (a segment per partition per write,
    not per seal batch: a segment's fixed cost — DuckDB's COPY, the hash file's fsync — is paid per write), and
    the agent waits only when ``max_rows`` are queued. The raw events are acked only once their records are
    stored (an extra reference until then), so a crash before that reads them again and the idempotent store
    drops what it already has: delivery stays at-least-once. One thread writes, in queue order, so a
    partition's records are stored in order. A store that raises stops the worker (exit 70) before anything of
    the batch is acked, as a failed seal batch does. DuckDB's Parquet writer and the fsyncs release the GIL, so
    that part runs beside the event loop on a second core.
    """

    def __init__(self, store, on_stored, *, min_rows: int = 2000, max_wait_s: float = 0.5,
                 max_rows: int = 50_000) -> None:
        import concurrent.futures

        self._store, self._on_stored = store, on_stored  # store(partition, rows) -> written; on_stored(written)
        self.min_rows, self.max_wait_s, self.max_rows = min_rows, max_wait_s, max_rows
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="meterseal-store")
        self._queue: list[tuple[dict[int, list[tuple[int, dict]]], Any]] = []  # (rows by partition, events)
        self._queued_rows, self._oldest = 0, 0.0
        self._task: asyncio.Task | None = None
        self._changed: asyncio.Event | None = None
        self._flush_now = self._writing = False

    async def submit(self, rows: dict[int, list[tuple[int, dict]]], events) -> None:
        loop = asyncio.get_running_loop()
        if self._task is None:
            self._changed = asyncio.Event()
            self._task = loop.create_task(self._run())
        while self._queued_rows >= self.max_rows:  # the writer is behind: wait for it
            await self._wait_changed()
        for event in events:
            event.message.incref()  # take_events' ack leaves them referenced: acked once stored
        if not self._queue:
            self._oldest = loop.time()
        self._queue.append((rows, events))
        self._queued_rows += sum(len(items) for items in rows.values())
        self._changed.set()

    async def _wait_changed(self, timeout: float | None = None) -> None:
        self._changed.clear()
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    async def _run(self) -> None:
        """The writer task. Anything it raises (a store error, a bug in acking or in ``on_stored``) stops the
        worker with exit 70: a writer task that died quietly would leave the agent waiting for it for ever."""
        try:
            await self._write_forever()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - stop before anything of the queued batches is acked
            log.critical("storing sealed readings failed (%s: %s): stopping the worker (exit 70) so that nothing "
                         "of the batch is committed; restart it", type(exc).__name__, exc, exc_info=exc)
            logging.shutdown()
            os._exit(EXIT_SOFTWARE)

    async def _write_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue:
                await self._wait_changed()
            while (self._queued_rows < self.min_rows and not self._flush_now
                   and loop.time() < self._oldest + self.max_wait_s):
                await self._wait_changed(self._oldest + self.max_wait_s - loop.time())
            taken, self._queue, self._queued_rows = self._queue, [], 0
            self._writing = True
            self._changed.set()
            merged: dict[int, list[tuple[int, dict]]] = {}
            for rows, _ in taken:
                for partition, items in rows.items():
                    merged.setdefault(partition, []).extend(items)
            written = await loop.run_in_executor(self._pool, self._store_all, merged)
            for _, events in taken:
                for event in events:
                    event.ack()
            self._writing = False
            self._changed.set()
            await self._on_stored(written)

    def _store_all(self, rows: dict[int, list[tuple[int, dict]]]) -> int:
        return sum(self._store(partition, items) for partition, items in rows.items())

    async def drain(self, *, warn_after_s: float = 30.0) -> None:
        """Store (and ack) everything queued now, without waiting for more. A drain that takes longer than
        ``warn_after_s`` says so in the log every ``warn_after_s`` (a slow or unreachable store), and goes on
        waiting: returning early would hand over partitions whose records are not stored yet."""
        if self._task is None:
            return
        self._flush_now = True
        loop = asyncio.get_running_loop()
        began = warned = loop.time()
        try:
            while self._queue or self._writing:
                if self._task.done():  # (cannot happen: _run exits the process on any error)
                    raise RuntimeError("the store writer stopped with records still queued")
                if loop.time() - warned > warn_after_s:
                    warned = loop.time()
                    log.warning("still storing %d queued row(s) before handing partitions over (%.0f s)",
                                self._queued_rows, warned - began)
                self._changed.set()
                await self._wait_changed(0.05)
        finally:
            self._flush_now = False


class InOrder:
    """Checks that each partition reaches its agent without a hole in its offsets, and mends a hole.

    Measured in the crash test: after a worker restart, Faust (0.15) can drop one fetched message — the
    agent saw offset 16,795, then 16,797 — and its commit logic then moves past the dropped offset (it
    treats the committed offset as the last one processed, not the next to read), so that reading would
    never be sealed. On a hole, ``admit`` seeks the partition back to the missing offset and holds every
    event after it that was fetched before the seek (an extra reference: never acked, so never committed;
    Faust may deliver thousands of them, not always contiguous). The re-read from the missing offset on is
    processed normally (sealing is idempotent). A re-read that starts *after* the missing offset (the
    stream goes back below the highest held offset without it) is asked again; after ``max_rereads`` such
    re-reads the offsets are taken to be missing on the broker itself: logged and accepted. Events Faust
    fetched before the seek look the same (a crash-test run saw two of them before the real re-read came),
    so ``max_rereads`` is 10, not a few: giving up too early would lose a reading. If no re-read
    shows up within ``max_held`` held events, the seek is asked again. The first event of a newly assigned
    partition is checked against the group's committed offset (the next to read): the crash test also saw
    the store agent lose the first sealed batch after a restart, and a rebalance while a second worker joined
    lose a store agent the first sealed batches of partitions nothing had been committed on yet: with no
    committed offset the first event must be offset 0. The store agents use the same guard.
    """

    def __init__(self, max_held: int = 50_000, max_rereads: int = 10) -> None:
        self.max_held, self.max_rereads = max_held, max_rereads
        self._next: dict[Any, int] = {}  # TP -> the offset expected next
        # TP -> [highest held offset, events held since the hole, re-reads that began past the hole]
        self._mending: dict[Any, list[int]] = {}

    async def admit(self, event, consumer) -> bool:
        tp, offset = event.message.tp, event.message.offset
        expected = self._next.get(tp)
        if expected is None:  # first event of a newly assigned partition: it should be the committed offset
            committed = getattr(consumer, "_committed_offset", None)
            if committed is not None:  # (a Faust consumer; it keeps no committed offset 0, and None = no commit)
                # nothing committed yet: the group reads the partition from its start, so offset 0 comes first
                # (on a topic whose start was deleted by retention, the re-reads begin later: accepted below)
                expected = committed.get(tp) or 0
        if expected is None or offset <= expected:  # in order, or a re-read of what was seen before
            self._next[tp] = offset + 1
            if offset == expected:
                self._mending.pop(tp, None)  # (the hole, if there was one, is mended)
            return True
        mending = self._mending.get(tp)
        if mending is not None and offset <= mending[0]:  # a re-read began, but past the hole
            mending[2] += 1
            if mending[2] >= self.max_rereads:
                log.error("%s/%d: offsets %d..%d are missing on the broker (%d re-reads start at %d); going on",
                          tp.topic, tp.partition, expected, offset - 1, mending[2], offset)
                self._next[tp] = offset + 1
                del self._mending[tp]
                return True
            log.warning("%s/%d: the re-read began at %d, not %d: reading again", tp.topic, tp.partition, offset,
                        expected)
            await self._seek(consumer, tp, expected)
        event.message.incref()  # held: this copy is never acked; the re-read copy is
        if mending is None:
            log.warning("%s/%d: offset %d never reached its agent (next came %d): reading again from %d",
                        tp.topic, tp.partition, expected, offset, expected)
            self._mending[tp] = [offset, 1, 0]
            await self._seek(consumer, tp, expected)
            return False
        mending[0], mending[1] = offset, mending[1] + 1
        if mending[1] % self.max_held == 0:
            log.warning("%s/%d: still waiting for offset %d after %d held events: seeking again",
                        tp.topic, tp.partition, expected, mending[1])
            await self._seek(consumer, tp, expected)
        return False

    @staticmethod
    async def _seek(consumer, tp, offset: int) -> None:
        """Seek in the consumer's own thread and wait for it. (Faust's plain ``seek`` runs in the caller's
        thread, racing aiokafka's fetcher in the consumer thread: it crashed the worker once in CI, KeyError
        in ``Fetcher.fetched_records``.) ``seek_wait`` also moves Faust's read offset back, so the re-read
        messages are not dropped as already seen."""
        try:
            await consumer.seek_wait({tp: offset})
        except Exception as exc:  # noqa: BLE001 - e.g. revoked meanwhile: its next owner reads from the commit
            log.warning("%s/%d: seek to %d failed (%s: %s); the events after it stay held (never committed)",
                        tp.topic, tp.partition, offset, type(exc).__name__, exc)

    def forget(self, tps) -> None:
        for tp in tps:
            self._next.pop(tp, None)
            self._mending.pop(tp, None)
