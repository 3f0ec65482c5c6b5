"""A small sealed store for the federated-learning tests (module-scoped: built once per test module)."""

import json

import pytest

from streams.ingest import sources
from streams.keys.keystore import Keystore
from streams.pipeline import Pipeline
from streams.seal import Source
from streams.settings import Settings
from streams.store.segments import SegmentStore


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A store of 6 UCI meters over 3 regions (2 days of minute readings each), sealed by the real pipeline,
    with a region key per region (added before sealing, so every region DEK is granted as it is made)."""
    data = tmp_path_factory.mktemp("fl")
    keystore = Keystore.init(data, "pw")
    for region in ("north", "south", "east"):
        keystore.add_region("pw", region).save(data / "regions" / f"{region}.key", f"{region}-pw")
    keys = keystore.unlock("pw")
    settings = Settings.from_env({}, data_dir=data, regions="north,south,east")
    pipeline = Pipeline(settings, keys.index_key, keystore.owner_public, SegmentStore(settings.store_dir),
                        region_keys=lambda: Keystore.load(data).region_publics(keys.index_key))
    readings = list(sources.uci_readings(meters=6, limit=6 * 60 * 48, regions=("north", "south", "east")))
    table: dict = {}
    msgs: dict[int, list] = {}
    for i, r in enumerate(readings):
        part = int(r["meter_id"][-1]) % 4
        out = pipeline.seal_reading(json.dumps(r).encode(), Source("readings.raw", part, i), table)
        msgs.setdefault(part, []).append((part, i, out.encode()))
    for batch in msgs.values():
        pipeline.store_batch("readings.sealed", batch)
    return data, keys, readings


