"""Two workarounds that make Faust right and fast on the bundled Tansu broker (harmless on Kafka).

1. **Changelog high watermarks.** Faust recovers a table by reading its changelog up to the partition's end offset, which it asks
for with ListOffsets(latest). The bundled Tansu broker answers that with the *first* offset of the
last record batch plus one, so recovery would stop before the rest of that batch and the table
would silently miss the last state written — a restarted worker would forget recent meters. The
high watermark in a Fetch response is right, so ``install()`` makes Faust take, per partition, the
larger of the two: on a correct broker they are equal and nothing changes.

2. **Fetch wait.** Faust's consumer asks for fetches that may wait up to 1.5 s for data. Kafka
answers as soon as data arrives; Tansu holds the request for the whole wait (measured: a message
produced to an idle partition reached the consumer after ~450 ms with a 500 ms wait, ~5 ms with a
50 ms wait). The worker's consumer waits ``FETCH_MAX_WAIT_MS`` instead, which bounds how long a
reading can sit on the broker before its alert is raised.
"""

from __future__ import annotations

import asyncio
from typing import Any, Mapping

from aiokafka import AIOKafkaConsumer
from faust.transport.drivers import aiokafka as faust_aiokafka

FETCH_MAX_WAIT_MS = 50
_original = faust_aiokafka.AIOKafkaConsumerThread._highwaters
_original_consumer = faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer


async def fetched_highwaters(bootstrap: Any, ends: Mapping[Any, int], timeout: float = 5.0) -> dict[Any, int]:
    """``ends`` raised to the high watermark a Fetch from ``end - 1`` reports (partitions with ``end > 0``)."""
    out = dict(ends)
    probe = [tp for tp, end in ends.items() if end]
    if not probe:
        return out
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None)
    await consumer.start()
    try:
        consumer.assign(probe)
        for tp in probe:
            consumer.seek(tp, ends[tp] - 1)
        pending = set(probe)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while pending and loop.time() < deadline:
            batches = await consumer.getmany(*pending, timeout_ms=200)
            for tp, messages in batches.items():
                out[tp] = max(out[tp], messages[-1].offset + 1)
            for tp in list(pending):
                hw = consumer.highwater(tp)
                if hw is not None:
                    out[tp] = max(out[tp], hw)
                    pending.discard(tp)
    finally:
        await consumer.stop()
    return out


async def _highwaters(self, partitions):
    ends = await _original(self, partitions)
    if self.consumer.in_transaction:
        return ends
    transport = self.transport
    servers = faust_aiokafka.server_list(transport.url, transport.default_port)
    return await fetched_highwaters(servers, ends)


def _create_worker_consumer(self, transport):
    consumer = _original_consumer(self, transport)
    consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read by the fetcher when the consumer starts
    return consumer


def install() -> None:
    """Patch Faust's aiokafka consumer thread (idempotent)."""
    faust_aiokafka.AIOKafkaConsumerThread._highwaters = _highwaters
    faust_aiokafka.AIOKafkaConsumerThread._create_worker_consumer = _create_worker_consumer
