"""agents.app.Batch: a seal batch ends only when the broker has every sealed record; a failed batch is never acked."""

import asyncio

import pytest

import schemas

from agents import app as app_module
from agents.app import Batch
from streams.sealed_batch import sealed_records


class Message:
    def __init__(self) -> None:
        self.refcount = 1

    def incref(self) -> None:
        self.refcount += 1


class Event:
    def __init__(self) -> None:
        self.message = Message()


class Producer:
    """Refuses the first send of ``refuse`` once, takes everything else."""

    def __init__(self, refuse: bytes | None = None) -> None:
        self.refuse, self.sent = refuse, []

    async def send(self, topic, key, value, partition, timestamp, headers):
        self.sent.append(value)
        self.to = getattr(self, "to", []) + [(topic, key, partition)]
        future = asyncio.get_running_loop().create_future()
        if value == self.refuse:
            self.refuse = None
            future.set_exception(RuntimeError("NotLeaderForPartition"))
        else:
            future.set_result((topic, len(self.sent)))
        return future


def test_confirm_sends_a_refused_record_again(monkeypatch):
    real_sleep = asyncio.sleep
    monkeypatch.setattr(app_module.asyncio, "sleep", lambda s: real_sleep(0))  # no real 1 s wait

    async def run():
        producer, batch = Producer(refuse=b"r2"), Batch([])
        for value in (b"r1", b"r2", b"r3"):
            await batch.send(producer, "readings.sealed", b"k", value)
        await batch.confirm(producer)
        return producer.sent, batch.sent

    sent, left = asyncio.run(run())
    assert sent == [b"r1", b"r2", b"r3", b"r2"] and left == []


def record(rid: str) -> bytes:
    """A sealed record as the seal path hands it to a batch: Avro-encoded (``Sealed.body``)."""
    return schemas.encode_body(schemas.get("sealed"), {"format": 1, "record_id": rid, "kind": "reading", "schema_version": 2, "key_id": "k", "meter_tok": "m",
            "day_tok": "d", "month_tok": "mo", "year_tok": "y", "envelope": b"sealed", "sealed_at_ms": 0})


def test_sealed_records_go_out_as_one_message_per_raw_partition_to_the_same_partition():
    async def run():
        producer, batch = Producer(), Batch([])
        for partition, offset in ((0, 10), (2, 7), (0, 11), (2, 8), (0, 12)):
            batch.seal(partition, offset, record(f"{partition}-{offset}"))
        await batch.send_sealed(producer, "readings.sealed", "readings.raw")
        await batch.confirm(producer)
        return producer

    producer = asyncio.run(run())
    assert producer.to == [("readings.sealed", b"readings.raw/0/10", 0), ("readings.sealed", b"readings.raw/2/7", 2)]
    assert [[r["record_id"] for r in sealed_records(v)] for v in producer.sent] == [["0-10", "0-11", "0-12"],
                                                                                     ["2-7", "2-8"]]


def test_a_cancelled_batch_keeps_every_event_unacked():
    events = [Event(), Event()]

    async def run():
        async with Batch(events):
            raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(run())
    assert [e.message.refcount for e in events] == [2, 2]  # take_events' ack leaves each still referenced


def test_a_failing_batch_stops_the_worker_before_anything_is_acked(monkeypatch):
    exits = []
    monkeypatch.setattr(app_module.os, "_exit", exits.append)
    monkeypatch.setattr(app_module.logging, "shutdown", lambda: None)  # the test process's logging stays open
    events = [Event()]

    async def run():
        async with Batch(events):
            raise ValueError("a bug")

    with pytest.raises(ValueError):  # (os._exit is stubbed here, so the error goes on up)
        asyncio.run(run())
    assert exits == [app_module.EXIT_SOFTWARE] and events[0].message.refcount == 2
