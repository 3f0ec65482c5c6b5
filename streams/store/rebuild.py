"""Rebuilding the store from the sealed topics: the store is a projection of the log.

Every sealed topic is read from its beginning, partition by partition in offset order, through the same
sink logic the worker uses (``Pipeline.store_batch`` / ``store_key``), into a fresh store directory. The
same records, the same dedup decisions and so the same leaf order come out.
"""

from __future__ import annotations

from typing import Callable

from streams.ingest.broker import consume
from streams.pipeline import Pipeline

REPLAYED = ("keys.deks", "readings.sealed", "bills.sealed", "dlq")


def read_topic(bootstrap: str, topic: str, *, idle: float = 2.0, on_message: Callable[[], None] | None = None) -> dict[int, list[tuple[int, bytes]]]:
    """All messages of ``topic`` as ``{partition: [(offset, value), ...]}``, read until idle for ``idle`` s."""
    out: dict[int, list[tuple[int, bytes]]] = {}
    for msg in consume(bootstrap, topic, idle=idle):
        out.setdefault(msg.partition(), []).append((msg.offset(), msg.value()))
        if on_message:
            on_message()
    return {p: sorted(msgs) for p, msgs in out.items()}


def rebuild(bootstrap: str, pipeline: Pipeline, *, idle: float = 2.0, on_message: Callable[[], None] | None = None) -> dict[str, int]:
    """Replay the sealed topics into ``pipeline``'s store; returns rows (or keys) written per topic."""
    written: dict[str, int] = {}
    for topic in REPLAYED:
        count = 0
        for partition, messages in read_topic(bootstrap, topic, idle=idle, on_message=on_message).items():
            if topic == "keys.deks":
                count += sum(pipeline.store_key(value, partition) for _, value in messages)
            else:
                n, rejected = pipeline.store_batch(topic, [(partition, o, v) for o, v in messages])
                count += n
        written[topic] = count
    pipeline.checkpoint_due(force=True)
    return written
