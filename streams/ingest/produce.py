"""Producing raw input to the raw topics, with a progress bar and an optional rate limit."""

from __future__ import annotations

import json
import time
import zlib
from typing import Iterable, Iterator

import schemas
from streams.ingest.broker import Producer
from streams.exceptions import InvalidInput
from streams.validate import check_bill


def encode_reading(reading: dict, fmt: str = "json") -> bytes:
    if fmt == "avro":
        return schemas.encode("reading", {**{"account_id": None, "label": None}, **reading})
    return json.dumps(reading, separators=(",", ":")).encode()


def reading_messages(readings: Iterable[dict], *, fmt: str = "json", batch: int = 0,
                     collectors: int = 8) -> Iterator[tuple[bytes, bytes]]:
    """``(key, message)`` for readings.raw: one reading a message keyed by meter id, or with ``batch`` > 0
    head-end batches of that many readings keyed by collector id (``batch_readings``)."""
    if batch:
        return batch_readings(readings, batch, fmt=fmt, collectors=collectors)
    return ((r["meter_id"].encode(), encode_reading(r, fmt)) for r in readings)


def collector_of(meter_id: str, collectors: int) -> str:
    """The head-end a meter reports through: always the same one (per-meter order holds only then)."""
    return f"HE-{zlib.crc32(meter_id.encode()) % collectors:03d}"


def batch_readings(readings: Iterable[dict], size: int, *, fmt: str = "json",
                   collectors: int = 8) -> Iterator[tuple[bytes, bytes]]:
    """Readings as head-end batch messages ``(collector id, message)``: each meter belongs to one of
    ``collectors`` collectors, and a collector sends a message once it holds ``size`` readings (the rest at
    the end). JSON: an array of readings; Avro: a ``ReadingBatch`` in single-object encoding.

    >>> rs = [{"meter_id": f"m{i % 3}", "ts": "t", "kwh": 0.1, "register_kwh": 1.0, "region": "north",
    ...        "category": "Domestic"} for i in range(7)]
    >>> [(k, len(json.loads(v))) for k, v in batch_readings(rs, 3, collectors=1)]
    [(b'HE-000', 3), (b'HE-000', 3), (b'HE-000', 1)]
    """
    if size < 1 or collectors < 1:
        raise ValueError("batch size and collectors must be >= 1")
    pending: dict[str, list[dict]] = {}

    def message(collector: str, items: list[dict]) -> tuple[bytes, bytes]:
        if fmt == "avro":
            return collector.encode(), schemas.encode("reading_batch", {
                "collector_id": collector, "readings": [{"account_id": None, "label": None, **r} for r in items]})
        return collector.encode(), json.dumps(items, separators=(",", ":")).encode()

    for reading in readings:
        collector = collector_of(reading["meter_id"], collectors)
        items = pending.setdefault(collector, [])
        items.append(reading)
        if len(items) >= size:
            yield message(collector, items)
            pending[collector] = []
    for collector, items in pending.items():
        if items:
            yield message(collector, items)


def encode_bill(row: dict, fmt: str = "json") -> bytes:
    """A CSV row as JSON (column headers as keys), or as a typed Avro ``Bill``.

    A row that cannot be typed is sent as JSON all the same, so the worker dead-letters it with a reason.
    """
    if fmt == "avro":
        try:
            return schemas.encode("bill", check_bill(row))
        except InvalidInput:
            pass
    return json.dumps(row, separators=(",", ":"), ensure_ascii=False).encode()


def paced(items: Iterable, rate: float | None) -> Iterator:
    """Yield ``items`` no faster than ``rate`` per second (None: as fast as possible)."""
    if not rate:
        yield from items
        return
    start = time.monotonic()
    for i, item in enumerate(items):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield item


def produce(producer: Producer, topic: str, messages: Iterable[tuple[bytes, bytes]], *, total: int | None,
            rate: float | None = None, label: str = "", quiet: bool = False) -> int:
    """Send ``(key, value)`` pairs to ``topic`` with a rich progress bar; returns the count delivered."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    sent = 0
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  disable=quiet, transient=False) as bar:
        task = bar.add_task(label or f"producing to {topic}", total=total)
        for key, value in paced(messages, rate):
            producer.send(topic, value, key)
            sent += 1
            if sent % 500 == 0:
                bar.update(task, completed=sent)
        producer.flush()
        bar.update(task, completed=sent, total=sent)
    return sent
