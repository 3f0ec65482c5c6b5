"""A small real store for the share tests: the seed CSV's bills and three meters' hourly readings."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from streams.keys.keystore import Keystore
from streams.pipeline import Pipeline
from streams.seal import Source
from streams.settings import Settings
from streams.share.parties import PartyKey, add_party
from streams.ingest.sources import read_bills_csv
from streams.store.segments import SegmentStore
from tests.conftest import SEED_CSV

PASS = "pw"
METERS = {"M-A": "north", "M-B": "north", "M-C": "south"}
DAYS = [dt.date(2024, 3, d) for d in range(1, 6)]


def make_readings() -> list[dict]:
    out = []
    for meter, region in METERS.items():
        register = 100.0
        for day in DAYS:
            for hour in range(24):
                kwh = round(0.2 + ((ord(meter[-1]) * 31 + day.day * 7 + hour * 13) % 100) / 250, 3)
                register = round(register + kwh, 3)
                ts = dt.datetime(day.year, day.month, day.day, hour, tzinfo=dt.timezone.utc)
                out.append({"meter_id": meter, "ts": ts.isoformat(), "kwh": kwh,
                            "register_kwh": register, "region": region, "category": "Domestic",
                            "account_id": "ACC-" + meter})
    return out


@pytest.fixture(scope="session")
def shared_store(tmp_path_factory):
    """(data dir, keystore, unlocked keys, signer, readings, bills) of a store sealed by the real pipeline."""
    data = tmp_path_factory.mktemp("share-store")
    keystore = Keystore.init(data, PASS)
    keys = keystore.unlock(PASS)
    signer = keystore.ledger_signer(PASS)
    settings = Settings.from_env({}, data_dir=data, dek_max_records=40)
    pipeline = Pipeline(settings, keys.index_key, keystore.owner_public, SegmentStore(settings.store_dir), signer)
    bills = list(read_bills_csv(SEED_CSV))
    msgs: dict[str, list] = {"bills.sealed": [], "readings.sealed": []}
    for i, row in enumerate(bills):
        sealed = pipeline.seal_bill(json.dumps(row).encode(), Source("bills.raw", i % 2, i))
        msgs["bills.sealed"].append((i % 2, i, sealed.encode()))
    readings = make_readings()
    states: dict = {}
    for i, r in enumerate(readings):
        p = list(METERS).index(r["meter_id"]) % 2
        sealed = pipeline.seal_reading(json.dumps(r).encode(), Source("readings.raw", p, i), states)
        assert not hasattr(sealed, "decoded"), sealed.record
        msgs["readings.sealed"].append((p, i, sealed.encode()))
    half = len(msgs["readings.sealed"]) // 2  # two checkpoints per readings log (an older one for the tests)
    for batch in (msgs["bills.sealed"], msgs["readings.sealed"][:half]), (msgs["readings.sealed"][half:],):
        for b in batch:
            pipeline.store_batch("bills.sealed" if b is msgs["bills.sealed"] else "readings.sealed", b)
        pipeline.checkpoint_due(force=True)
    return data, keystore, keys, signer, readings, bills


@pytest.fixture(scope="session")
def party_key():
    return PartyKey.generate()


@pytest.fixture(scope="session")
def party(shared_store, party_key):
    return add_party(shared_store[0] / "store", "acme", party_key.public_key)
