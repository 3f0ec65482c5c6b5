"""``SealedBatch`` messages: how sealed records travel on the sealed topics (``readings.sealed``,
``bills.sealed``). A seal batch's records of one raw partition go out as one message (or a few, each at
most ``MAX_BATCH_RECORDS`` records and about ``MAX_BATCH_BYTES``); ``sealed_records`` reads one back.
"""

from __future__ import annotations

from typing import Any

import schemas

_zigzag = schemas._zigzag  # Avro's zig-zag varint

MAX_BATCH_RECORDS = 1000
MAX_BATCH_BYTES = 512 * 1024  # well under Kafka's default 1 MiB message limit


def batch_messages(records: list[dict[str, Any]], *, max_records: int = MAX_BATCH_RECORDS,
                   max_bytes: int = MAX_BATCH_BYTES) -> list[bytes]:
    """Sealed records as ``SealedBatch`` messages for a sealed topic, in order, each holding at most
    ``max_records`` records and about ``max_bytes`` bytes (an envelope plus ~200 bytes of ids and tokens
    a record).

    >>> rec = {"format": 1, "record_id": "r", "kind": "reading", "schema_version": 2, "key_id": "k",
    ...        "meter_tok": "m", "day_tok": "d", "month_tok": "mo", "year_tok": "y", "envelope": b"x" * 100,
    ...        "sealed_at_ms": 0}
    >>> [len(sealed_records(m)) for m in batch_messages([rec] * 5, max_records=2)]
    [2, 2, 1]
    """
    sealed = schemas.get("sealed")
    return batch_bodies([schemas.encode_body(sealed, r) for r in records], max_records=max_records, max_bytes=max_bytes)


def batch_bodies(bodies: list[bytes], *, max_records: int = MAX_BATCH_RECORDS,
                 max_bytes: int = MAX_BATCH_BYTES) -> list[bytes]:
    """``batch_messages`` for records already encoded (``Sealed.body``): a ``SealedBatch`` is its single-object
    header, one Avro array block (count, then the record bodies) and the array's closing zero, so records are
    joined as they are, not encoded again (a test checks the bytes equal fastavro's)."""
    prefix = schemas.MARKER + schemas.get("sealed_batch").fingerprint
    out, start, size = [], 0, 0
    for i, body in enumerate(bodies):
        cost = len(body) + 50
        if i > start and (i - start >= max_records or size + cost > max_bytes):
            out.append(b"".join((prefix, _zigzag(i - start), *bodies[start:i], b"\x00")))
            start, size = i, 0
        size += cost
    if start < len(bodies):
        out.append(b"".join((prefix, _zigzag(len(bodies) - start), *bodies[start:], b"\x00")))
    return out


def sealed_records(value: bytes) -> list[dict[str, Any]]:
    """The sealed records in one message of a sealed topic: a ``SealedBatch`` (what workers write), or a
    single ``SealedRecord``. Raises ``schemas.SchemaError`` on anything else."""
    if schemas.writer_of(value).name == "sealed_batch":
        return schemas.decode("sealed_batch", value)["records"]
    return [schemas.decode("sealed", value)]
