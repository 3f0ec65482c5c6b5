"""A small sealed store of simulated readings for the privacy tests (built once per module)."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from streams.ingest import sources
from streams.keys.keystore import Keystore
from streams.pipeline import Pipeline
from streams.seal import Source
from streams.settings import Settings
from streams.store.segments import SegmentStore

PASSPHRASE = "pw"
REGIONS = ("north", "south", "east")
END = dt.datetime(2025, 3, 2, 23, 45, tzinfo=dt.timezone.utc)  # two days, 2025-03-01 and 02


def seal_readings(data, readings, regions=REGIONS):
    """Seal ``readings`` into ``data``'s store with the real pipeline (no broker); returns the unlocked keys."""
    keystore = Keystore.init(data, PASSPHRASE)
    keys = keystore.unlock(PASSPHRASE)
    settings = Settings.from_env({}, data_dir=data, regions=",".join(regions))
    pipeline = Pipeline(settings, keys.index_key, keystore.owner_public, SegmentStore(settings.store_dir))
    table: dict = {}
    msgs: dict[int, list] = {}
    for i, r in enumerate(readings):
        part = int(r["meter_id"][-1]) % 2
        out = pipeline.seal_reading(json.dumps(r).encode(), Source("readings.raw", part, i), table)
        msgs.setdefault(part, []).append((part, i, out.encode()))
    for batch in msgs.values():
        pipeline.store_batch("readings.sealed", batch)
    return keystore, keys


@pytest.fixture(scope="module")
def dp_store(tmp_path_factory):
    """12 simulated meters, a reading every 15 minutes for two days, 3 regions."""
    data = tmp_path_factory.mktemp("privacy")
    readings = list(sources.simulate(meters=12, readings=12 * 96 * 2, regions=REGIONS, interval_min=15, end=END))
    keystore, keys = seal_readings(data, readings)
    return data, keystore, keys, readings
