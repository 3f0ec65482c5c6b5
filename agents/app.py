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
import signal
import time
from collections import Counter, deque
from typing import Callable

import faust

from streams.ingest import forwarded
from streams.ingest.broker import BrokerWatch, bootstrap_servers, ensure_topics, faust_url
from streams.exceptions import InvalidInput, KeyServiceError
from streams.pipeline import BatchState, MeterStates, Pipeline
from streams.seal import Sealed, Source
from streams.settings import Settings

from . import diagnose, erasures, notify, rewind, rollups, tansu
from .batches import EXIT_SOFTWARE, Batch, InOrder, StoreBehind  # noqa: F401 - EXIT_SOFTWARE: part of the worker's exits
from .codecs import codec_name, register_all

log = logging.getLogger("meterseal.worker")
EXIT_BROKER_RESET = 75  # EX_TEMPFAIL: the broker lost its data; restart the worker (systemd, Kubernetes, the rig)


def build_app(settings: Settings, pipeline: Pipeline, *, broker: str, started: float | None = None,
              enforce_retention: Callable[[], dict] | None = None) -> faust.App:
    started = time.monotonic() if started is None else started
    tansu.install()  # whole changelogs on recovery, short fetch waits (see agents/tansu.py)
    rewind.install()  # partitions with no commit read from their start after a rebalance (agents/rewind.py)
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
    # device window key (a token of the KEY_ID) -> sealed device_seq window (streams.devices.counters); a signed
    # reading is keyed by its meter, so the device's window lives in the meter's partition, like meter-state
    device_seq = app.Table("device-seq", default=lambda: None, partitions=settings.partitions, schema=raw_schema,
                           key_type=bytes, value_type=bytes)
    alerts = topic("alerts", "alert")
    first_sealed = []
    counts = Counter()  # what this worker did, logged every few seconds (see report_progress)
    batch_seconds: deque = deque(maxlen=100_000)  # seal batch durations, drained by agents/metrics.py
    app.meterseal_stats = (counts, batch_seconds)  # what METERSEAL_METRICS_PORT serves (agents/metrics.py)
    app.meterseal_collectors = []  # more of it, from the capability wiring below (agents/rollups.py, ...)
    note_for_rollups = rollups.note(pipeline)

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
                windows = BatchState(pipeline.windows, device_seq)
                seen = []  # (outcome, raw partition, event, ingested ms): the detector looks at them all at once
                # after a hole, events are held until the consumer has re-read the hole (InOrder)
                admitted = [event for event in events if await in_order.admit(event, app.consumer)]
                sources = [source(event) for event in admitted]
                # one list of outcomes per message (a head-end batch message holds many readings), sealed together
                per_message = await until_keys(lambda: seal_all(admitted, sources, states, windows))
                for n, (event, src) in enumerate(zip(admitted, sources)):
                    ingested_ms = int(event.message.timestamp * 1000)
                    outcomes = per_message[n] if per_message is not None else guarded_all(
                        one_message(event, src, states, windows), event.value, src)
                    for outcome in outcomes:
                        counts["sealed" if isinstance(outcome, Sealed) else "dead letters"] += 1
                        share(outcome, src)
                        note_for_rollups(outcome)
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
                windows.flush(writer(stream, device_seq))
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
        for key, record in pipeline.take_new_keys():  # DEKs the rollups made while storing
            counts["deks"] += 1
            await send_to["keys.deks"].send(key=key, value=record)
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
            key_partitions[key] = event.message.partition
        return write

    key_partitions: dict[bytes, int] = {}  # per-meter state key -> its changelog partition (for erasures)
    forget_erased: list = []  # the worker's own state of erased subjects, besides its tables (the notifier's)
    async def delete_wrapped(key_ids: list[str]) -> None:
        """Tombstones on the compacted keys.deks topic for DEKs retention destroyed: the topic forgets them too."""
        for key_id in key_ids:
            await deks.send(key=key_id.encode(), value=None)

    erasures.install(app, pipeline, [meter_state, meter_profile], key_partitions,
                     retention_every_s=settings.retention_every_s, enforce=enforce_retention, also=forget_erased,
                     delete_wrapped=delete_wrapped)

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
                    outcome = await until_keys(lambda: guarded(lambda: pipeline.seal_bill(event.value, src), event.value, src))
                    await publish(outcome, event, batch)
                await batch.send_sealed(app.producer, "bills.sealed", "bills.raw")
                await batch.confirm(app.producer)

    async def until_keys(step):
        """``step()``, run again every second while the key service cannot give a new DEK (down, sealed, refusing).
        Meanwhile this agent consumes nothing: its batch's raw messages stay unacked and the rest wait on the
        broker (no plaintext goes anywhere else, not to disk); nothing of the batch was sent or stored, so
        running the step again loses and duplicates nothing. Logged when it starts, every 30 s, and when it ends."""
        since = None
        while True:
            try:
                result = step()
            except KeyServiceError as exc:
                now = time.monotonic()
                if since is None or now - kms_logged[0] >= 30:
                    log.error("key service: %s; consumption paused%s", exc,
                              f" for {now - since:.0f} s" if since is not None else "")
                    kms_logged[0] = now
                since = now if since is None else since
                counts["kms waits"] += 1
                await asyncio.sleep(1.0)
                continue
            if since is not None:
                log.warning("key service back after %.0f s: consumption resumed", time.monotonic() - since)
            return result

    kms_logged = [0.0]  # when until_keys last logged

    def seal_all(events, sources: list[Source], states: MeterStates, windows: BatchState) -> list | None:
        """The outcomes of a seal batch's messages (``Pipeline.seal_messages``: signed envelopes verified, then
        ``Sealer.messages``), or None if a bug made that raise: then the agent seals message after message
        (``guarded_all``), so the bug costs its own message only."""
        try:
            return pipeline.seal_messages([e.value for e in events], sources, states.get, windows=windows,
                                          keys=[e.key for e in events], contexts=events,
                                          rejects=[forwarded.rejection(e.headers) for e in events])
        except KeyServiceError:
            raise  # no DEK to be had: until_keys waits and seals the batch again
        except Exception:  # noqa: BLE001 - the worker must not die on data
            log.exception("unexpected error sealing a batch of %d message(s); sealing them one by one", len(events))
            return None

    def one_message(event, src: Source, states: MeterStates, windows: BatchState):
        """One message's outcomes on its own (after a bug made the batch raise): the same device check first."""
        yield from pipeline.seal_messages([event.value], [src], states.get, windows=windows, keys=[event.key],
                                          contexts=[event], rejects=[forwarded.rejection(event.headers)])[0]

    def guarded_all(outcomes, data: bytes, src: Source):
        """``guarded`` for the outcomes of one message: if a bug makes the sealer raise, the message's readings
        not yet sealed go to dlq as the whole message."""
        try:
            yield from outcomes
        except KeyServiceError:
            raise  # not the message's fault: the batch is not acked, the worker stops (exit 70) and reads it again
        except Exception as exc:  # noqa: BLE001 - the worker must not die on one message
            log.exception("unexpected error sealing %s; sent to dlq", src.id)
            yield pipeline.sealer.reject(data, src, InvalidInput("internal", f"unexpected {type(exc).__name__}"))

    def guarded(step, data: bytes, src: Source):
        """The seal step never raises on data; if a bug makes it raise anyway, the message is a dead letter."""
        try:
            return step()
        except KeyServiceError:
            raise  # until_keys waits for the key service and seals the message again
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
                    # (a dead letter is sealed under a DEK: until_keys waits if the key service cannot give one)
                    written, rejected = await until_keys(lambda: pipeline.store_batch(topic.get_topic_name(), messages))
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
        """Logs that stopped growing still get a checkpoint of their last leaves within checkpoint_s. (In a thread:
        it takes each log's lock, which the seal agent's store thread or another worker may hold for a while.)"""
        if await asyncio.to_thread(pipeline.checkpoint_due):
            await publish_checkpoints()

    if settings.snapshot_keep_s > 0 and hasattr(pipeline.store, "try_locked"):  # an s3:// store (Iceberg)
        from streams.store.expire import expire_in_worker

        @app.timer(interval=min(600.0, max(5.0, settings.snapshot_keep_s / 6)))
        async def expire_snapshots() -> None:
            """Old Iceberg snapshots dropped (one worker at a time): each commit rewrites the list of them all."""
            await asyncio.to_thread(expire_in_worker, pipeline.store, older_than_s=settings.snapshot_keep_s, log=log)

    rollups.install(app, pipeline, interval_s=max(1.0, min(10.0, settings.rollup_idle_s / 3)))
    app.meterseal_notifier = notify.install(app, pipeline, settings)  # alert history, routing, notifications
    forget_erased.append(app.meterseal_notifier.forget_erased)

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

    @app.timer(interval=settings.device_refresh_s)
    async def refresh_devices() -> None:
        """Devices registered or revoked since the last look (a revocation takes effect within the interval)."""
        errors = pipeline.registry_errors
        await asyncio.to_thread(pipeline.directory.refresh)
        if pipeline.registry_errors > errors:
            log.error("the device registry could not be read: keeping the last %d device(s)", len(pipeline.directory))

    @app.timer(interval=max(1.0, settings.checkpoint_s))
    async def save_detectors() -> None:
        pipeline.alerting.save()

    @app.on_partitions_revoked.connect
    async def checkpoint_before_handing_over(sender, revoked, **kwargs) -> None:
        """Store the seal batch in flight, sign what this worker appended, and save its detectors, before another
        worker takes over."""
        await store_behind.drain()
        pipeline.alerting.release([tp.partition for tp in revoked if tp.topic == "readings.raw"])
        rollups.release(pipeline, [tp.partition for tp in revoked if tp.topic == "readings.raw"])
        in_order.forget(revoked)  # another worker reads on from here
        await sign_what_we_appended("before handing partitions over")

    @app.on_before_shutdown.connect
    async def checkpoint_on_shutdown(sender, **kwargs) -> None:
        await store_behind.drain()
        pipeline.alerting.save()
        await sign_what_we_appended("at shutdown")

    async def sign_what_we_appended(when: str) -> None:
        """A last checkpoint of every log this worker appended to. It must not raise: an error in a rebalance or
        shutdown signal stops Faust half way (the trial of 2026-12-01 left a worker hanging after SIGTERM when its
        catalog went down first). Its leaves are stored already; whoever appends to the log next signs them."""
        try:
            if await asyncio.to_thread(pipeline.checkpoint_due, force=True):
                await publish_checkpoints()
        except Exception as exc:  # noqa: BLE001 - store, catalog or broker gone: log it and go on stopping
            log.error("could not sign a checkpoint %s (%s: %s): the leaves are stored, the next append to each log "
                      "signs them", when, type(exc).__name__, (str(exc).strip().splitlines() or [""])[0])

    @app.agent(deks, name="store_keys")
    async def store_keys(stream):
        async for event in stream.events():
            pipeline.store_key(event.value, event.message.partition)
            await publish_checkpoints()
            if pipeline.unreadable_keys:
                log.error("%d unreadable message(s) on keys.deks skipped", pipeline.unreadable_keys)
                pipeline.unreadable_keys = 0

    @app.task
    async def state_on_sigusr2() -> None:
        """``kill -USR2 <pid>`` logs what the worker is waiting on (agents/diagnose.py)."""
        asyncio.get_running_loop().add_signal_handler(
            signal.SIGUSR2, lambda: diagnose.log_state(app, in_order, store_behind))

    @app.on_partitions_assigned.connect
    async def on_assigned(sender, assigned, **kwargs) -> None:
        log.warning("worker ready: %d partition(s) assigned %.1f s after start", len(assigned), time.monotonic() - started)
        logs = sorted({("readings", tp.partition) for tp in assigned if tp.topic == "readings.raw"}
                      | {("bills", tp.partition) for tp in assigned if tp.topic == "bills.sealed"})
        task = asyncio.get_running_loop().create_task(asyncio.to_thread(catch_up_logs, logs))
        catching_up.add(task)  # (the loop keeps only a weak reference to a task)
        task.add_done_callback(catching_up.discard)

    catching_up: set[asyncio.Task] = set()

    def catch_up_logs(logs: list[tuple[str, int]]) -> None:
        """The logs of partitions just taken over: a writer killed between storing rows and logging them left
        their leaves out (in a thread: it waits for each partition's lock). Never raises: the next store of the
        partition catches up too."""
        for table, partition in logs:
            try:
                if added := pipeline.catch_up(table, partition):
                    log.warning("%s/%d: logged %d leaves a stopped writer had stored but not logged", table, partition, added)
            except Exception as exc:  # noqa: BLE001 - store trouble: the store thread reports it on its next write
                log.error("%s/%d: could not catch the log up (%s: %s)", table, partition, type(exc).__name__, exc)

    return app
