"""Producing raw input to the raw topics, with a progress bar and an optional rate limit."""

from __future__ import annotations

import json
import time
from typing import Iterable, Iterator

import schemas
from streams.ingest.broker import Producer
from streams.exceptions import InvalidInput
from streams.validate import check_bill


def encode_reading(reading: dict, fmt: str = "json") -> bytes:
    if fmt == "avro":
        return schemas.encode("reading", {**{"account_id": None, "label": None}, **reading})
    return json.dumps(reading, separators=(",", ":")).encode()


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
