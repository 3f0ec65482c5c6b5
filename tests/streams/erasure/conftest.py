from __future__ import annotations

import json

import pytest

import schemas
from streams.keys.keystore import Keystore
from streams.pipeline import Pipeline
from streams.seal import Sealed, Source
from streams.settings import Settings
from streams.store.base import open_store

PASS = "erasure-tests"


def reading(meter: str, minute: int, *, account: str | None = None, day: int = 1, region: str = "north",
            month: str = "2024-01") -> bytes:
    doc = {"meter_id": meter, "ts": f"{month}-{day:02d}T00:{minute:02d}:00Z", "kwh": 0.25 + minute / 100,
           "register_kwh": 100 + day * 100 + minute, "region": region, "category": "Domestic"}
    if account:
        doc["account_id"] = account
    return json.dumps(doc).encode()


class Rig:
    """A pipeline (no broker) over a fresh store, its keystore, and a counter of raw offsets."""

    def __init__(self, data, location=None, **settings) -> None:
        self.data = data
        self.keystore = Keystore.init(data, PASS) if not Keystore.exists(data) else Keystore.load(data)
        self.keys = self.keystore.unlock(PASS)
        self.signer = self.keystore.ledger_signer(PASS)
        self.settings = Settings.from_env({}, data_dir=data, regions="north,south", partitions=2, **settings)
        self.location = location or self.settings.store_dir
        self.offset = 0
        self.now = 1.8e9  # 2027-01-15T08:00:00Z: the pipeline's clock
        self.pipeline = self.new_pipeline()

    def new_pipeline(self) -> Pipeline:
        store = open_store(self.location, work_dir=self.data / f"work-{self.offset}")
        return Pipeline(self.settings, self.keys.index_key, self.keystore.owner_public, store, self.signer,
                        clock=lambda: self.now)

    def ingest(self, messages: list[bytes], partition: int = 0) -> list:
        table, batch, outcomes = {}, [], []
        for data in messages:
            out = self.pipeline.seal_reading(data, Source("readings.raw", partition, self.offset), table)
            outcomes.append(out)
            if isinstance(out, Sealed):
                batch.append((partition, self.offset, out.encode()))
            self.offset += 1
        for _, wrapped in self.pipeline.take_new_keys():  # what the store_keys agent does with keys.deks
            self.pipeline.store_key(schemas.encode("wrapped_key", wrapped), 0)
        if batch:
            self.pipeline.store_batch("readings.sealed", batch)
        self.pipeline.checkpoint_due(force=True)
        return outcomes


@pytest.fixture
def rig(tmp_path):
    return Rig(tmp_path / "data")
