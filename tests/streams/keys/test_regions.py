"""Region keys: files, the keystore's registry, per-region DEKs, grants, and opening with a region key."""

import json

import pytest

from streams.crypto.envelope import key_id_of
from streams.exceptions import InvalidEnvelope, KeystoreError
from streams.keys.keyring import Keyring
from streams.keys.keystore import Keystore
from streams.keys.owner import HPKE, OwnerKeyPair
from streams.pipeline import Pipeline
from streams.keys.regions import RegionKey, RegionKeyring, grant_existing
from streams.seal import Source
from streams.unseal import SEALED_COLUMNS, open_many
from streams.settings import Settings
from streams.store.segments import SegmentStore, connect


def _reading(meter: str, region: str, minute: int) -> bytes:
    return json.dumps({"meter_id": meter, "ts": f"2024-01-01T00:{minute:02d}:00Z", "kwh": 0.5,
                       "register_kwh": 10 + minute, "region": region, "category": "Domestic"}).encode()


def _seal_some(data, keystore, keys, *, region_keys=None, per_region: bool = True) -> SegmentStore:
    """20 readings each of north and south meters, through the real pipeline into the store."""
    settings = Settings.from_env({}, data_dir=data, regions="north,south", dek_max_records=7)
    pipeline = Pipeline(settings, keys.index_key, keystore.owner_public, SegmentStore(settings.store_dir),
                        clock=lambda: 1.8e9, region_keys=region_keys or (lambda: {}))
    if not per_region:  # a store sealed before DEKs were kept per region: one ring for everything
        pipeline.sealer.region_ring = None
    table, batch = {}, []
    for minute in range(20):
        for meter, region in (("N-1", "north"), ("S-1", "south")):
            offset = len(batch)
            out = pipeline.seal_reading(_reading(meter, region, minute), Source("readings.raw", 0, offset), table)
            batch.append((0, offset, out.encode()))
    assert pipeline.store_batch("readings.sealed", batch) == (40, [])
    return pipeline.store


def _rows(data, region):
    con = connect(data / "store")
    try:
        cur = con.execute(f"SELECT {', '.join(SEALED_COLUMNS)} FROM readings WHERE region = ?", [region])
        return [dict(zip(SEALED_COLUMNS, r)) for r in cur.fetchall()]
    finally:
        con.close()


def test_region_key_file_round_trip_and_wrong_passphrase(tmp_path):
    key = RegionKey.generate("north", HPKE)
    path = key.save(tmp_path / "north.key", "s3cret")
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    back = RegionKey.load(path, "s3cret")
    assert back.region == "north" and back.pair == key.pair
    with pytest.raises(KeystoreError, match="wrong passphrase"):
        RegionKey.load(path, "guess")
    doc = json.loads(path.read_text())
    doc["region"] = "south"  # the region name is bound to the sealed private key
    (tmp_path / "moved.key").write_text(json.dumps(doc))
    with pytest.raises(KeystoreError, match="wrong passphrase|altered"):
        RegionKey.load(tmp_path / "moved.key", "s3cret")
    with pytest.raises(KeystoreError, match="bad region name"):
        RegionKey.generate("../etc")


def test_keystore_registry_refuses_a_region_key_slipped_into_the_file(tmp_path):
    store = Keystore.init(tmp_path, "pw")
    added = store.add_region("pw", "north")
    keys = store.unlock("pw")
    assert Keystore.load(tmp_path).region_publics(keys.index_key) == {"north": added.public_key}
    assert Keystore.load(tmp_path).region_key("pw", "north").pair == added.pair
    with pytest.raises(KeystoreError, match="already has a key"):
        Keystore.load(tmp_path).add_region("pw", "north")
    with pytest.raises(KeystoreError, match="wrong passphrase"):
        Keystore.load(tmp_path).add_region("nope", "south")
    # an attacker with write access to keystore.json swaps in their own public key: workers refuse it
    doc = json.loads((tmp_path / "keystore.json").read_text())
    doc["regions"]["north"]["public"] = Keystore.load(tmp_path)._doc["owners"][0]["public"]
    (tmp_path / "keystore.json").write_text(json.dumps(doc))
    with pytest.raises(KeystoreError, match="fails its check"):
        Keystore.load(tmp_path).region_publics(keys.index_key)


def test_each_region_key_opens_its_region_only(tmp_path):
    keystore = Keystore.init(tmp_path, "pw")
    north = keystore.add_region("pw", "north")
    keys = keystore.unlock("pw")
    store = _seal_some(tmp_path, keystore, keys, region_keys=lambda: Keystore.load(tmp_path).region_publics(keys.index_key))
    north_rows, south_rows = _rows(tmp_path, "north"), _rows(tmp_path, "south")
    north_deks, south_deks = {key_id_of(r["envelope"]).hex() for r in north_rows}, {key_id_of(r["envelope"]).hex() for r in south_rows}
    assert len(north_deks) == 3 and not north_deks & south_deks  # 20 records, 7 per DEK; no DEK spans regions
    assert set(store.grant_ids("north")) == north_deks and store.grant_ids("south") == []  # south has no key
    ring = RegionKeyring(store, north)
    assert {p["meter_id"] for p in open_many(north_rows, ring)} == {"N-1"}
    with pytest.raises(InvalidEnvelope):
        open_many(south_rows[:1], ring)
    # a grant of another key copied into north's directory does not unwrap (wrong key, region bound in)
    other = RegionKey("north", OwnerKeyPair.generate())
    with pytest.raises(InvalidEnvelope):
        open_many(north_rows[:1], RegionKeyring(store, other))
    # the owner still opens everything
    assert len(open_many(north_rows + south_rows, Keyring(store, keys.unwrappers(), index_key=keys.index_key))) == 40


def test_grant_existing_grants_region_pure_deks_and_refuses_shared_ones(tmp_path):
    keystore = Keystore.init(tmp_path, "pw")
    keys = keystore.unlock("pw")
    store = _seal_some(tmp_path, keystore, keys)  # sealed before any region had a key: no grants yet
    south = keystore.add_region("pw", "south")
    owner = Keyring(store, keys.unwrappers(), index_key=keys.index_key)
    written, refused = grant_existing(tmp_path / "store", owner, south)
    south_rows = _rows(tmp_path, "south")
    assert written == len({key_id_of(r["envelope"]).hex() for r in south_rows}) and refused == []
    assert len(open_many(south_rows, RegionKeyring(store, south))) == 20
    assert grant_existing(tmp_path / "store", owner, south) == (0, [])  # idempotent


def test_grant_existing_refuses_deks_shared_across_regions(tmp_path):
    keystore = Keystore.init(tmp_path, "pw")
    keys = keystore.unlock("pw")
    store = _seal_some(tmp_path, keystore, keys, per_region=False)  # one ring: DEKs span north and south
    north = keystore.add_region("pw", "north")
    written, refused = grant_existing(tmp_path / "store", Keyring(store, keys.unwrappers(), index_key=keys.index_key), north)
    assert written == 0 and len(refused) == len({key_id_of(r["envelope"]).hex() for r in _rows(tmp_path, "north")}) > 0
    with pytest.raises(InvalidEnvelope):
        open_many(_rows(tmp_path, "north")[:1], RegionKeyring(store, north))
