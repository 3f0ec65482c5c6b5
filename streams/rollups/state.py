"""A partition's rollup state (``cells.PartitionRollup``) as one sealed blob in the store, ``rollups/state/pNNN``.

The blob holds open cells — a few hours and one day of each meter's consumption, and the meter ids they belong
to — so it is sealed (AES-256-GCM, version-1 envelope) under a key derived from the index key, like the
validator's per-meter state and the detector's profiles: the worker, which holds the index key and sees every
reading in clear as it seals it, can read it back after a restart; the store operator cannot. The associated data
binds the partition, so one partition's state cannot be passed off as another's.
"""

from __future__ import annotations

import orjson

from streams.crypto import _primitives
from streams.crypto.envelope import DataKey, FixedKey
from streams.rollups.cells import Agg, Emission, MeterCell, PartitionRollup, RegionCell

_KEY_ID = b"meterseal-rollup"
FORMAT = 1


def state_key(index_key: bytes) -> FixedKey:
    return FixedKey(DataKey(_KEY_ID, _primitives.hkdf_sha256(index_key, info=b"meterseal/rollup-state/v1")))


def member_key(index_key: bytes) -> bytes:
    """The key of the hourly member tokens (``rollup_meter.member``)."""
    return _primitives.hkdf_sha256(index_key, info=b"meterseal/rollup-member/v1")


def blob_name(partition: int) -> str:
    return f"rollups/state/p{partition:03d}"


def _agg(values: list) -> Agg:
    return Agg(int(values[0]), float(values[1]), float(values[2]), float(values[3]))


def _cells(cells: dict) -> list:
    return [[start, list(who), agg.as_list()] for (start, who), agg in cells.items()]


def _uncells(items: list) -> dict:
    return {(int(start), tuple(who)): _agg(agg) for start, who, agg in items}


def _emission(e: Emission) -> dict:
    return {"key": e.key,
            "meters": [[m.period, m.start, list(m.who), m.agg.as_list(), m.late] for m in e.meters],
            "regions": [[r.hour, r.region, r.category, r.meters, r.agg.as_list()] for r in e.regions]}


def _unemission(doc: dict) -> Emission:
    return Emission(doc["key"],
                    [MeterCell(p, int(s), tuple(w), _agg(a), bool(late)) for p, s, w, a, late in doc["meters"]],
                    [RegionCell(int(h), r, c, int(n), _agg(a)) for h, r, c, n, a in doc["regions"]])


def encode(state: PartitionRollup, key: FixedKey) -> bytes:
    doc = {"format": FORMAT, "partition": state.partition, "watermark": state.watermark,
           "closed_hour": state.closed_hour, "closed_day": state.closed_day,
           "max_ts": None if state.max_ts == float("-inf") else state.max_ts, "emissions": state.emissions,
           "hours": _cells(state.hours), "days": _cells(state.days), "late_hours": _cells(state.late_hours),
           "late_days": _cells(state.late_days), "pending": [_emission(e) for e in state.pending]}
    return key.seal(orjson.dumps(doc), aad=f"meterseal/rollup-state/v1|{state.partition}".encode())


def decode(blob: bytes, partition: int, key: FixedKey) -> PartitionRollup:
    """Raises ``InvalidEnvelope`` for a blob of another partition or key, or changed bytes."""
    doc = orjson.loads(key.open(blob, aad=f"meterseal/rollup-state/v1|{partition}".encode()))
    return PartitionRollup(
        partition=partition, watermark=doc["watermark"], closed_hour=doc["closed_hour"], closed_day=doc["closed_day"],
        max_ts=float("-inf") if doc["max_ts"] is None else doc["max_ts"], emissions=doc["emissions"],
        hours=_uncells(doc["hours"]), days=_uncells(doc["days"]), late_hours=_uncells(doc["late_hours"]),
        late_days=_uncells(doc["late_days"]), pending=[_unemission(e) for e in doc["pending"]])
