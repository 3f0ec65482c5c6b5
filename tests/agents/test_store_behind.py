"""agents.batches: the seal agent's readings stored from its own batch (``Batch.stored_rows``, ``StoreBehind``):
each record with its sealed-topic offset, raw events acked only once stored, seal batches written together."""

import asyncio
from types import SimpleNamespace

import pytest

from agents import batches
from agents.batches import Batch, StoreBehind
from streams.sealed_batch import sealed_records

from .test_batch import Event, record


class Message:
    def __init__(self) -> None:
        self.refcount = 1

    def incref(self) -> None:
        self.refcount += 1


class AckEvent(Event):
    def ack(self) -> None:
        self.message.refcount -= 1


class Producer:
    """Takes every send; a send's result carries the offset the broker gave it (per partition)."""

    def __init__(self) -> None:
        self.sent, self.next = [], {}

    async def send(self, topic, key, value, partition, timestamp, headers):
        offset = self.next.get(partition, 100)
        self.next[partition] = offset + 1
        self.sent.append((partition, offset, value))
        future = asyncio.get_running_loop().create_future()
        future.set_result(SimpleNamespace(topic=topic, partition=partition, offset=offset))
        return future


def test_stored_rows_are_the_sealed_records_with_the_offset_of_the_message_that_carries_them():
    async def run():
        producer, batch = Producer(), Batch([])
        for i in range(1500):  # partition 0: two SealedBatch messages (at most 1,000 records each)
            batch.seal(0, i, record(f"0-{i}"), {"record_id": f"0-{i}"})
        batch.seal(3, 7, record("3-7"), {"record_id": "3-7"})
        await batch.send_sealed(producer, "readings.sealed", "readings.raw")
        await batch.confirm(producer)
        return producer, batch

    producer, batch = asyncio.run(run())
    carried = {(p, o): [r["record_id"] for r in sealed_records(v)] for p, o, v in producer.sent}
    assert {(p, o): [r["record_id"] for _, r in rows if _ == o]
            for p, rows in batch.stored_rows.items() for o in {o for o, _ in rows}} == carried
    assert [len(ids) for ids in carried.values()] == [1000, 500, 1]


def test_events_are_acked_only_once_their_records_are_stored_and_batches_are_written_together():
    calls, events = [], [[AckEvent(), AckEvent()], [AckEvent()]]

    def store(partition, rows):
        calls.append((partition, [o for o, _ in rows]))
        return len(rows)

    stored = []

    async def on_stored(written):
        stored.append(written)

    async def run():
        behind = StoreBehind(store, on_stored, min_rows=100, max_wait_s=30.0)
        await behind.submit({0: [(5, {}), (5, {})], 1: [(9, {})]}, events[0])
        await behind.submit({0: [(6, {})]}, events[1])
        await asyncio.sleep(0.05)
        held = [e.message.refcount for batch in events for e in batch]  # (take_events' own ack not run here)
        await behind.drain()  # a rebalance or shutdown: written now, not after max_wait_s
        return held

    held = asyncio.run(run())
    assert held == [2, 2, 2] and calls == [(0, [5, 5, 6]), (1, [9])] and stored == [4]
    assert [e.message.refcount for batch in events for e in batch] == [1, 1, 1]


def test_a_store_that_fails_stops_the_worker_before_anything_is_acked(monkeypatch):
    exits = []
    def exit_(code):
        exits.append(code)
        raise RuntimeError("exited")  # (the real os._exit never returns)

    monkeypatch.setattr(batches.os, "_exit", exit_)
    monkeypatch.setattr(batches.logging, "shutdown", lambda: None)
    events = [AckEvent()]

    def store(partition, rows):
        raise OSError("disk full")

    async def run():
        behind = StoreBehind(store, None, min_rows=1, max_wait_s=0.01)
        await behind.submit({0: [(1, {})]}, events)
        with pytest.raises(RuntimeError, match="exited"):
            await behind._task

    asyncio.run(run())
    assert exits == [batches.EXIT_SOFTWARE] and events[0].message.refcount == 2
