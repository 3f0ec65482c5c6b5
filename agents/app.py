"""The meterseal Faust app: declare topics, one table, and the agents; the logic is ``streams.pipeline``.

Agents::

    readings.raw  --seal_readings-->  readings.sealed | dlq        (+ keys.deks when a DEK is made,
                                                                    + alerts from the anomaly detector)
    bills.raw     --seal_bills----->  bills.sealed    | dlq
                  (one SealedBatch message per seal batch and raw partition, to the same partition number)
    seal_readings (its batch, in a thread) ->  Parquet segments in the store (StoreBehind; readings.sealed is
                                               still produced, for other consumers and ``store rebuild``)
    bills.sealed, dlq  --store_*-->  Parquet segments in the store
                       (+ a Merkle log per partition, signed checkpoints on ledger.checkpoints)
    keys.deks     --store_keys----->  <store>/deks

Delivery is at-least-once (the embedded broker has no transactions); record ids and the store's
offset/id checks make every sink idempotent.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter, deque
from typing import Any

import faust

from streams.ingest.broker import BrokerWatch, bootstrap_servers, ensure_topics, faust_url
from streams.exceptions import InvalidInput
from streams.pipeline import BatchState, MeterStates, Pipeline
from streams.seal import Sealed, Source, batch_bodies
from streams.settings import Settings

from . import tansu
from .codecs import codec_name, register_all

log = logging.getLogger("meterseal.worker")
EXIT_BROKER_RESET = 75  # EX_TEMPFAIL: the broker lost its data; restart the worker (systemd, Kubernetes, the rig)
EXIT_SOFTWARE = 70  # EX_SOFTWARE: an unexpected error in a seal batch; restart the worker


def build_app(settings: Settings, pipeline: Pipeline, *, broker: str, started: float | None = None) -> faust.App:
    started = time.monotonic() if started is None else started
    tansu.install()  # whole changelogs on recovery, short fetch waits (see agents/tansu.py)
    app = faust.App(
        settings.app_id,
        broker=faust_url(broker),
        store="memory://",  # table state lives in memory, recovered from its changelog topic
        datadir=str(settings.data_dir / "faust"),  # Faust's own files: in the data dir, not the current directory
        web_enabled=False,
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        # short group timeouts: a worker joins in seconds instead of ~30 s on the embedded broker
        broker_session_timeout=6.0,
        broker_heartbeat_interval=1.0,
        broker_rebalance_timeout=6.0,
        broker_commit_interval=1.0,
        producer_acks=-1,
        producer_linger=0.005,  # batch produce requests (the default, 0, sends one request per message)
        stream_wait_empty=False,
    )

    register_all()

    def topic(name: str, schema: str | None = None) -> faust.TopicT:
        """Raw bytes (the consuming side decodes, so bad bytes become dead letters), or Avro records to send."""
        return app.topic(name, key_type=bytes, key_serializer="raw", partitions=settings.partitions,
                         value_serializer=codec_name(schema) if schema else "raw")

    readings_raw, bills_raw = topic("readings.raw"), topic("bills.raw")
    bills_sealed, dlq, deks = (topic(t) for t in ("bills.sealed", "dlq", "keys.deks"))
    # the same topics, for sending records through the fastavro codec
    # (sealed records go straight to the producer, already encoded: see publish)
    send_to = {"dlq": topic("dlq", "dead_letter"), "keys.deks": topic("keys.deks", "wrapped_key"),
               "ledger.checkpoints": topic("ledger.checkpoints", "checkpoint")}
    raw_schema = faust.Schema(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    # meter token -> sealed MeterState: the changelog topic carries no meter id and no reading in clear
    # key_type/value_type bytes make recovery read the changelog raw too (the schema alone covers only writes)
    meter_state = app.Table("meter-state", default=lambda: None, partitions=settings.partitions, schema=raw_schema,
                            key_type=bytes, value_type=bytes)
    # meter token -> sealed anomaly Profile (features.Profile), co-partitioned with readings.raw like meter-state
    meter_profile = app.Table("meter-profile", default=lambda: None, partitions=settings.partitions, schema=raw_schema,
                              key_type=bytes, value_type=bytes)
    alerts = topic("alerts", "alert")
    first_sealed = []
    counts = Counter()  # what this worker did, logged every few seconds (see report_progress)
    batch_seconds: deque = deque(maxlen=100_000)  # seal batch durations, drained by agents/metrics.py
    app.meterseal_stats = (counts, batch_seconds)  # what METERSEAL_METRICS_PORT serves (agents/metrics.py)

    async def publish(outcome, event, batch: "Batch") -> None:
        for key, record in pipeline.take_new_keys():
            counts["deks"] += 1
            await send_to["keys.deks"].send(key=key, value=record)
        if isinstance(outcome, Sealed):
            batch.seal(event.message.partition, event.message.offset, outcome.body, outcome.record)  # sent at the end
        else:
            counts["dead letters:" + outcome.record["rule"]] += 1
            await send_to["dlq"].send(key=outcome.key, value=outcome.record)
        if not first_sealed and isinstance(outcome, Sealed):
            first_sealed.append(time.monotonic())
            log.warning("first record sealed %.1f s after worker start (at %.4f)", first_sealed[0] - started, time.time())

    def source(event) -> Source:
        return Source(event.message.topic, event.message.partition, event.message.offset)

    # Seal agents take small batches: Faust's per-event overhead, not the crypto, is the cost that matters.
    # Events are acked after their batch is handled, so delivery stays at-least-once.
    in_order = InOrder()  # each partition reaches its agent without holes in its offsets, or is read again

    @app.agent(readings_raw, name="seal_readings")
    async def seal_readings(stream):
        async for events in stream.take_events(settings.seal_batch, within=0.02):
            began = time.perf_counter()
            async with Batch(events) as batch:
                states = MeterStates(pipeline.states, meter_state)
                profiles = BatchState(pipeline.alerting.profiles, meter_profile)
                seen = []  # (outcome, raw partition, event, ingested ms): the detector looks at them all at once
                for event in events:
                    if not await in_order.admit(event, app.consumer):
                        continue  # after a hole: held until the consumer has re-read the hole (InOrder)
                    src = source(event)
                    ingested_ms = int(event.message.timestamp * 1000)
                    # one outcome per reading: a head-end batch message holds many (Sealer.message)
                    for outcome in guarded_all(pipeline.sealer.message(event.value, src, states.get, key=event.key),
                                               event.value, src):
                        counts["sealed" if isinstance(outcome, Sealed) else "dead letters"] += 1
                        share(outcome, src)
                        states.update(outcome, event)
                        seen.append((outcome, src.partition, event, ingested_ms))
                        await publish(outcome, event, batch)
                # alerts go out before the batch's sealed records: the alert path is the latency that matters
                for key, alert in detect(seen, profiles):
                    counts["alerts"] += 1
                    counts["alerts:" + alert["kind"]] += 1
                    await alerts.send(key=key, value=alert)

                current = stream.current_event
                states.flush(writer(stream, meter_state))
                profiles.flush(writer(stream, meter_profile))
                stream._set_current_event(current)
                await batch.send_sealed(app.producer, "readings.sealed", "readings.raw")
                for share_topic, key, value in pipeline.take_shares():  # continuous shares, one message per grant
                    if share_topic not in share_topics:
                        await asyncio.to_thread(ensure_topics, bootstrap, 1, [share_topic])
                        share_topics.add(share_topic)
                    counts["shared"] += 1
                    await batch.send(app.producer, share_topic, key, value)
                await batch.confirm(app.producer)
                await store_behind.submit(batch.stored_rows, events)  # stored while the next batch is sealed
            batch_seconds.append(time.perf_counter() - began)

    async def stored_readings(written: int) -> None:
        counts["stored readings.sealed"] += written
        await publish_checkpoints()

    store_behind = StoreBehind(lambda partition, rows: pipeline.store_sealed("readings", partition, rows),
                               stored_readings, min_rows=settings.store_batch, max_wait_s=settings.store_flush_s)

    share_topics: set[str] = set()
    bootstrap = bootstrap_servers(broker)

    def share(outcome, src: Source) -> None:
        """Queue a sealed reading for the grants that cover it; a sharing bug never costs a reading."""
        try:
            pipeline.tap(outcome)
        except Exception:  # noqa: BLE001 - the reading is sealed and stored either way
            log.exception("continuous share failed on %s", src.id)

    def writer(stream, table):
        def write(key: bytes, value: bytes, event) -> None:
            # a Faust table writes its changelog to the partition of the *current* event; in a batch we
            # name it: the meter's own last event, so state stays co-partitioned with readings.raw
            stream._set_current_event(event)
            table[key] = value
        return write

    def detect(seen, profiles) -> list:
        """Anomaly alerts for a batch's outcomes; a detector bug is logged, never a lost reading or a dead worker."""
        try:
            return pipeline.alerting.observe_many(seen, profiles)
        except Exception:  # noqa: BLE001 - the readings are sealed either way
            log.exception("anomaly detector failed on a batch of %d reading(s)", len(seen))
            return []

    @app.agent(bills_raw, name="seal_bills")
    async def seal_bills(stream):
        async for events in stream.take_events(settings.seal_batch, within=0.02):
            async with Batch(events) as batch:
                for event in events:
                    if not await in_order.admit(event, app.consumer):
                        continue
                    src = source(event)
                    await publish(guarded(lambda: pipeline.seal_bill(event.value, src), event.value, src), event, batch)
                await batch.send_sealed(app.producer, "bills.sealed", "bills.raw")
                await batch.confirm(app.producer)

    def guarded_all(outcomes, data: bytes, src: Source):
        """``guarded`` for the outcomes of one message: if a bug makes the sealer raise, the message's readings
        not yet sealed go to dlq as the whole message."""
        try:
            yield from outcomes
        except Exception as exc:  # noqa: BLE001 - the worker must not die on one message
            log.exception("unexpected error sealing %s; sent to dlq", src.id)
            yield pipeline.sealer.reject(data, src, InvalidInput("internal", f"unexpected {type(exc).__name__}"))

    def guarded(step, data: bytes, src: Source):
        """The seal step never raises on data; if a bug makes it raise anyway, the message is a dead letter."""
        try:
            return step()
        except Exception as exc:  # noqa: BLE001 - the worker must not die on one message
            log.exception("unexpected error sealing %s; sent to dlq", src.id)
            return pipeline.sealer.reject(data, src, InvalidInput("internal", f"unexpected {type(exc).__name__}"))

    def sink(topic: faust.TopicT, name: str, take: int):
        async def store(stream):
            async for events in stream.take_events(take, within=settings.store_flush_s):
                async with Batch(events):  # a store that raises acks nothing (exit 70); see Batch
                    # the crash test caught Faust skipping a sealed batch here too: InOrder reads it again
                    events = [e for e in events if await in_order.admit(e, app.consumer)]
                    messages = [(e.message.partition, e.message.offset, e.value) for e in events]
                    written, rejected = pipeline.store_batch(topic.get_topic_name(), messages)
                    counts[f"stored {topic.get_topic_name()}"] += written
                    for dead in rejected:
                        counts["dead letters:" + dead.record["rule"]] += 1
                        await send_to["dlq"].send(key=dead.key, value=dead.record)
                await publish_checkpoints()
                if pipeline.unreadable_dead_letters:
                    log.error("%d unreadable message(s) on dlq skipped", pipeline.unreadable_dead_letters)
                    pipeline.unreadable_dead_letters = 0
        app.agent(topic, name=name)(store)

    # a sealed-topic message holds a seal batch's records of one partition (tens to hundreds; at most 1,000):
    # take up to store_batch / 10 of them, or what came within store_flush_s
    batches = max(8, settings.store_batch // 10)
    # (readings are stored by the seal agent itself: StoreBehind)
    sink(bills_sealed, "store_bills", batches)
    sink(dlq, "store_dlq", settings.store_batch)

    async def publish_checkpoints() -> None:
        for key, record in pipeline.take_checkpoints():
            counts["checkpoints signed"] += 1
            await send_to["ledger.checkpoints"].send(key=key, value=record)

    @app.timer(interval=max(1.0, settings.checkpoint_s / 2))
    async def checkpoint_quiet_logs() -> None:
        """Logs that stopped growing still get a checkpoint of their last leaves within checkpoint_s."""
        if pipeline.checkpoint_due():
            await publish_checkpoints()

    last = {"at": time.monotonic(), "counts": Counter()}

    @app.timer(interval=5.0)
    async def report_progress() -> None:
        """One log line every 5 s while work is done: what this worker sealed and stored, per second."""
        now, done = time.monotonic(), counts - last["counts"]
        if done:
            rate = sum(done[k] for k in ("sealed", "dead letters")) / (now - last["at"])
            log.info("%s (%.0f raw/s)", ", ".join(f"{k} +{v}" for k, v in sorted(done.items())), rate)
        last.update(at=now, counts=counts.copy())

    watch = BrokerWatch(bootstrap_servers(broker))

    @app.timer(interval=2.0)
    async def watch_broker() -> None:
        """Say clearly when the broker goes away and comes back; exit if it came back without its data."""
        status = await asyncio.get_running_loop().run_in_executor(None, watch.check)
        if status.kind == "down":
            log.error("broker %s unreachable (%s): retrying every 2 s; readings wait on the broker meanwhile",
                      watch.bootstrap, status.detail)
        elif status.kind == "still down" and int(status.down_s) % 30 < 2:
            log.error("broker %s still unreachable after %.0f s: retrying", watch.bootstrap, status.down_s)
        elif status.kind == "back":
            log.warning("broker %s reachable again after %.0f s: resuming", watch.bootstrap, status.down_s)
        elif status.kind == "lost data":
            # an in-memory broker restarted: its topics start again at offset 0, and this worker's consumer
            # positions and table changelogs refer to data that is gone. Exit (code 75, "try again") so a
            # restarted worker reads the new topics from the start; the store's record ids drop what it had.
            log.error("broker %s came back without its data (%s start over): exiting with code 75 to be restarted",
                      watch.bootstrap, status.detail)
            pipeline.alerting.save()
            logging.shutdown()
            os._exit(EXIT_BROKER_RESET)

    @app.timer(interval=max(1.0, settings.checkpoint_s))
    async def save_detectors() -> None:
        pipeline.alerting.save()

    @app.on_partitions_revoked.connect
    async def checkpoint_before_handing_over(sender, revoked, **kwargs) -> None:
        """Store the seal batch in flight, sign what this worker appended, and save its detectors, before another
        worker takes over."""
        await store_behind.drain()
        pipeline.alerting.release([tp.partition for tp in revoked if tp.topic == "readings.raw"])
        in_order.forget(revoked)  # another worker reads on from here
        if pipeline.checkpoint_due(force=True):
            await publish_checkpoints()

    @app.on_before_shutdown.connect
    async def checkpoint_on_shutdown(sender, **kwargs) -> None:
        await store_behind.drain()
        pipeline.alerting.save()
        if pipeline.checkpoint_due(force=True):
            await publish_checkpoints()

    @app.agent(deks, name="store_keys")
    async def store_keys(stream):
        async for event in stream.events():
            pipeline.store_key(event.value, event.message.partition)
            await publish_checkpoints()
            if pipeline.unreadable_keys:
                log.error("%d unreadable message(s) on keys.deks skipped", pipeline.unreadable_keys)
                pipeline.unreadable_keys = 0

    @app.on_partitions_assigned.connect
    async def on_assigned(sender, assigned, **kwargs) -> None:
        log.warning("worker ready: %d partition(s) assigned %.1f s after start", len(assigned), time.monotonic() - started)

    return app


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
            try:
                if os.environ.get("MS_STORE_THREAD", "1") == "1":
                    written = await loop.run_in_executor(self._pool, self._store_all, merged)
                else:
                    written = self._store_all(merged)
            except Exception as exc:  # noqa: BLE001 - stop before anything of the batch is acked
                log.critical("storing sealed readings failed (%s: %s): stopping the worker (exit 70) so that nothing "
                             "of the batch is committed; restart it", type(exc).__name__, exc, exc_info=exc)
                logging.shutdown()
                os._exit(EXIT_SOFTWARE)
            for _, events in taken:
                for event in events:
                    event.ack()
            self._writing = False
            self._changed.set()
            await self._on_stored(written)

    def _store_all(self, rows: dict[int, list[tuple[int, dict]]]) -> int:
        return sum(self._store(partition, items) for partition, items in rows.items())

    async def drain(self) -> None:
        """Store (and ack) everything queued now, without waiting for more."""
        if self._task is None:
            return
        self._flush_now = True
        try:
            while self._queue or self._writing:
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
