"""``meterseal store compact``: a day partition's small files rewritten as one while another writer appends to
the same partition (``objectstore``): nothing lost, nothing doubled, the ledger still verifies, and a writer
whose dedup state predates the compaction still recognises every stored id."""

from __future__ import annotations

from streams import capabilities

import datetime as dt
import json

import pytest

from streams.exceptions import StoreError
from streams.seal import Source
from streams.store.audit import audit_store
from streams.store.base import open_store
from streams.store.compact import compact

from .test_contract import keys, pipeline_for  # noqa: F401 - fixtures

pytestmark = pytest.mark.objectstore


def _sealed_readings(pipeline, days: int = 2) -> list[tuple[int, int, bytes]]:
    """Two meters' hourly readings over ``days`` days as ``readings.sealed`` messages on topic partition 0."""
    out, states, offset = [], {}, 0
    for day in range(days):
        for hour in range(24):
            for meter in ("CM-1", "CM-2"):
                ts = dt.datetime(2024, 5, 1 + day, hour, tzinfo=dt.timezone.utc).isoformat()
                raw = json.dumps({"meter_id": meter, "ts": ts, "kwh": 0.5, "register_kwh": float(offset),
                                  "region": "north", "category": "Domestic"}).encode()
                sealed = pipeline.seal_reading(raw, Source("readings.raw", 0, offset), states)
                out.append((0, offset, sealed.encode()))
                offset += 1
    return out


def test_compaction_keeps_every_row_once_while_a_writer_appends(objectstore, s3_location, keys, tmp_path):  # noqa: F811
    import schemas

    writer = pipeline_for(s3_location, keys, tmp_path)
    msgs = _sealed_readings(writer)
    for _, wrapped in writer.take_new_keys():
        writer.store_key(schemas.encode("wrapped_key", wrapped), 0)
    early, late = msgs[:-8], msgs[-8:]
    for i in range(0, len(early), 8):  # 11 small commits: ~6 files per day partition
        writer.store_batch("readings.sealed", early[i:i + 8])
    store = writer.store
    before = store._table("readings").current_snapshot().snapshot_id
    other = pipeline_for(s3_location, keys, tmp_path)  # a second worker, racing the compaction's commit
    raced = []

    def race() -> None:
        if not raced:
            raced.append(other.store_batch("readings.sealed", late)[0])
    result = compact(store, "readings", min_files=3, before_commit=race)
    assert raced == [8] and result["rewritten"] == 2 and result["skipped"] == 0, result
    assert result["files_after"] < result["files_before"]
    tbl = store._table("readings")
    tbl.refresh()
    compacted = [s for s in tbl.snapshots() if "meterseal.compacted" in (s.summary.additional_properties or {})]
    assert compacted and compacted[0].parent_snapshot_id != before  # redone over the racing append's snapshot
    ids = store.arrow("readings").column("record_id").to_pylist()
    assert len(ids) == len(set(ids)) == len(msgs)
    assert writer.store_batch("readings.sealed", msgs)[0] == 0  # warm dedup state: every id still known
    writer.checkpoint_due(force=True)  # signs the log's 96 leaves (the other writer's too: one log)
    verifier = keys[1].ledger_verifier
    assert [f for _, fs in audit_store(open_store(s3_location, work_dir=tmp_path / "r"), verifier, registry=capabilities.registry()) for f in fs] == []


def test_compaction_refuses_a_local_store_by_name(tmp_path):
    with pytest.raises(StoreError, match="object storage"):
        compact(open_store(tmp_path / "store"), "readings")
