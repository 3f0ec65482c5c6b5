"""Malformed raw readings, each with the dead-letter rule it must get: one corpus for the unit test
(``tests/streams/test_bad_input.py``) and the broker test (``tests/test_reliability.py``).

Every entry is ``(name, key, value, rule)``; ``rule`` None means "not a dead letter" (an exact
redelivery: sealed again under the same record id, kept once by the store). The corpus assumes the
good readings in ``GOOD`` are processed first, in order, by the same worker.
"""

from __future__ import annotations

import json

import schemas

METER = "CORPUS-0001"
T0 = "2025-03-01T00:00:00+00:00"
GOOD_READING = {"meter_id": METER, "ts": T0, "kwh": 0.5, "register_kwh": 100.0, "region": "north",
                "category": "Domestic"}


def _json(**changes) -> bytes:
    return json.dumps({**GOOD_READING, **changes}).encode()


def _raw(text: str) -> bytes:
    """A reading as JSON text with ``text`` spliced in verbatim (NaN, Infinity: not valid JSON numbers)."""
    return ('{"meter_id": "%s", "ts": "2025-03-01T01:00:00Z", "register_kwh": 101, "region": "north", '
            '"category": "Domestic", %s}' % (METER, text)).encode()


def _avro(**changes) -> bytes:
    return schemas.encode("reading", {"account_id": None, "label": None, **GOOD_READING, **changes})


GOOD = [("good reading", METER.encode(), _json(), None)]

BAD = [
    ("not JSON or Avro", METER.encode(), b"this is not JSON", "decode"),
    ("empty message", METER.encode(), b"", "decode"),
    ("invalid UTF-8", METER.encode(), b'{"meter_id": "\xff\xfe"}', "decode"),
    ("deeply nested JSON", METER.encode(), b"[" * 30_000 + b"]" * 30_000, "decode"),
    ("truncated Avro", METER.encode(), _avro()[:-9], "decode"),
    ("Avro with trailing bytes", METER.encode(), _avro() + b"\x00\x01", "decode"),
    ("Avro of an unknown schema", METER.encode(), schemas.MARKER + b"\x01" * 8 + b"\x02abc", "decode"),
    ("kwh is a string", METER.encode(), _json(ts="2025-03-01T01:00:00Z", kwh="lots"), "schema"),
    ("meter_id is a boolean", b"true", _json(meter_id=True), "schema"),
    ("ts is a number", METER.encode(), _json(ts=1740787200), "schema"),
    ("ts is not a date", METER.encode(), _json(ts="yesterday"), "schema"),
    ("missing field", METER.encode(), json.dumps({"meter_id": METER, "kwh": 1}).encode(), "schema"),
    ("kwh NaN", METER.encode(), _raw('"kwh": NaN'), "kwh"),
    ("kwh Infinity", METER.encode(), _raw('"kwh": Infinity'), "kwh"),
    ("register -Infinity", METER.encode(), _raw('"kwh": 1, "register_kwh": -Infinity').replace(b'"register_kwh": 101, ', b""), "schema"),
    ("Avro kwh NaN", METER.encode(), _avro(ts="2025-03-01T01:00:00Z", kwh=float("nan")), "kwh"),
    ("negative kwh", METER.encode(), _json(ts="2025-03-01T01:00:00Z", kwh=-3.5), "kwh"),
    ("absurdly large kwh", METER.encode(), _json(ts="2025-03-01T01:00:00Z", kwh=1e12), "kwh"),
    ("far-future timestamp", METER.encode(), _json(ts="2199-01-01T00:00:00Z"), "future"),
    ("ancient timestamp", METER.encode(), _json(ts="1970-01-01T00:00:00Z"), "ancient"),
    ("unknown region", METER.encode(), _json(ts="2025-03-01T01:00:00Z", region="atlantis"), "region"),
    ("conflicting duplicate", METER.encode(), _json(register_kwh=100.5), "duplicate"),
    ("register rollback", METER.encode(), _json(ts="2025-03-01T02:00:00Z", register_kwh=50.0), "register"),
    ("oversized message", METER.encode(), _json(ts="2025-03-01T01:00:00Z", firmware="x" * 100_000), "size"),
    ("missing key", None, _json(ts="2025-03-01T01:00:00Z"), "key"),
    ("key is another meter", b"CORPUS-9999", _json(ts="2025-03-01T01:00:00Z"), "key"),
]

REDELIVERED = [("exact redelivery", METER.encode(), _json(), None)]

CORPUS = GOOD + BAD + REDELIVERED


# --- head-end batch messages (a JSON array or an Avro ReadingBatch, keyed by collector id) -------------
# Every entry is ``(name, key, value, dead letters, sealed)``: the dead letters as (batch index, rule), the
# index None for the whole message; ``sealed`` how many of its readings are sealed.

COLLECTOR = "HE-CORPUS"
BATCH_METER = "CORPUS-B001"


def _reading(minute: int, **changes) -> dict:
    return {"meter_id": BATCH_METER, "ts": f"2025-03-01T00:{minute:02d}:00Z", "kwh": 0.25, "register_kwh": 200.0 + minute,
            "region": "north", "category": "Domestic", **changes}


def _array(items: list) -> bytes:
    return json.dumps(items).encode()


def _avro_batch(items: list[dict], collector: str = COLLECTOR) -> bytes:
    return schemas.encode("reading_batch", {"collector_id": collector, "readings": [
        {"account_id": None, "label": None, **r} for r in items]})


BATCHES = [
    ("mixed good and bad", COLLECTOR.encode(), _array([
        _reading(1), {"meter_id": BATCH_METER, "kwh": 1}, _reading(2), _reading(3, kwh=-1.0), _reading(4),
        _reading(5, region="atlantis")]), [(1, "schema"), (3, "kwh"), (5, "region")], 3),
    ("JSON array of numbers", COLLECTOR.encode(), b"[1, 2, 3]", [(0, "decode"), (1, "decode"), (2, "decode")], 0),
    ("empty batch", COLLECTOR.encode(), b"[]", [(None, "decode")], 0),
    ("batch over the size limit", COLLECTOR.encode(), _array([_reading(i % 60) for i in range(10_000)]),
     [(None, "size")], 0),
    ("nested garbage", COLLECTOR.encode(), b'[[[{"a": [1, {"b": []}]}]], {"meter_id": {"x": [1]}}, null]',
     [(0, "decode"), (1, "schema"), (2, "decode")], 0),
    ("deeply nested batch", COLLECTOR.encode(), b"[" * 30_000 + b"]" * 30_000, [(None, "decode")], 0),
    ("batch without a key", None, _array([_reading(6)]), [(None, "key")], 0),
    ("Avro batch under another collector's key", b"HE-OTHER", _avro_batch([_reading(7)]), [(None, "key")], 0),
    ("reading naming another collector", COLLECTOR.encode(), _array([_reading(8, collector_id="HE-OTHER"),
                                                                     _reading(9)]), [(0, "key")], 1),
    ("truncated Avro batch", COLLECTOR.encode(), _avro_batch([_reading(10)])[:-5], [(None, "decode")], 0),
    ("Avro batch, good", COLLECTOR.encode(), _avro_batch([_reading(11), _reading(12)]), [], 2),
]
