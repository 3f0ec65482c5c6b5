"""``keys migrate --to-kms``: a passphrase keystore's store moves into a key service, every record still opens,
the logs keep their names and keys, the old keystore is retired — and nothing changes if a record does not open."""

from __future__ import annotations

import json

import pytest

from streams import capabilities
from streams.exceptions import InvalidEnvelope
from streams.keys.keystore import Keystore
from streams.kms.access import open_keys
from streams.kms.migrate import migrate_to_kms, verify_opens
from streams.kms.uri import parse
from streams.pipeline import Pipeline
from streams.seal import Source
from streams.settings import Settings
from streams.store.audit import audit_store
from streams.store.segments import SegmentStore
from tests.streams.share.conftest import make_readings

pytestmark = pytest.mark.kms
PASS = "migrate-passphrase"


def seal(pipeline, readings, first=0):
    states: dict = {}
    batch = [(0, first + i, pipeline.seal_reading(json.dumps(r).encode(), Source("readings.raw", 0, first + i),
                                                  states).encode()) for i, r in enumerate(readings)]
    bad = pipeline.seal_reading(b'{"meter_id": "M-A", "kwh": -1}', Source("readings.raw", 0, 10_000 + first), states)
    pipeline.store_batch("readings.sealed", batch)
    pipeline.store_batch("dlq", [(0, first, __import__("schemas").encode("dead_letter", bad.record))])
    pipeline.checkpoint_due(force=True)


@pytest.fixture
def passphrase_store(tmp_path):
    """A passphrase keystore with a region key, and a store its worker sealed (readings, a dead letter)."""
    data = tmp_path / "data"
    keystore = Keystore.init(data, PASS)
    keystore.add_region(PASS, "north")
    keys = open_keys(Settings.from_env({}, data_dir=data), role="worker", passphrase=PASS)
    settings = Settings.from_env({}, data_dir=data, dek_max_records=30)
    pipeline = Pipeline(settings, keys.index_key(), keys.dek_maker(), SegmentStore(settings.store_dir), keys.signer())
    seal(pipeline, [r for r in make_readings() if r["ts"] < "2024-03-02"])
    return data


def target(provider, request):
    """(uri, environment of an admin) for ``provider``."""
    if provider == "openbao":
        server = request.getfixturevalue("openbao")
        uri = request.getfixturevalue("bao_uri")
        return uri, {"BAO_TOKEN": server.token(server.policy("admin", mount=parse(uri).mount))}
    request.getfixturevalue("softhsm")
    return request.getfixturevalue("hsm_uri"), {}


@pytest.mark.parametrize("provider", ["openbao", "pkcs11"])
def test_migration_keeps_every_record_and_every_log(provider, passphrase_store, request, monkeypatch, tmp_path):
    data = passphrase_store
    uri, env = target(provider, request)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    before = Keystore.load(data)
    vkeys = [v.vkey for v in before.ledger_verifiers]
    region_private = before.region_key(PASS, "north").pair.private
    old = open_keys(Settings.from_env({}, data_dir=data), role="admin", passphrase=PASS)
    store = SegmentStore(data / "store")
    done = migrate_to_kms(data, store, old, parse(uri), keep_old=tmp_path / "old-keystore.json")
    assert done["deks"] == len(store.dek_ids()) >= 3 and done["records"]["dlq"] == 1 and done["regions"] == ["north"]
    after = Keystore.load(data)
    assert after.kms["uri"] == uri and "private" not in json.dumps(after._doc.get("ledger"))
    assert json.loads((tmp_path / "old-keystore.json").read_text())["owners"]  # kept where asked, nowhere else
    if provider == "openbao":  # the same checkpoint keys, now in the service
        assert [v.vkey for v in after.ledger_verifiers] == vkeys and done["retired_pq_vkey"] is None
    else:  # SoftHSM2 has no ML-DSA: the Ed25519 key goes in, the ML-DSA-65 vkey is handed back to keep
        assert [v.vkey for v in after.ledger_verifiers] == vkeys[:1] and done["retired_pq_vkey"] == vkeys[1]
    # the owner's side opens everything through the service; the region key came along
    owner = open_keys(Settings.from_env({}, data_dir=data), role="admin")
    assert not owner.local and owner.region_key("north").pair.private == region_private
    assert verify_opens(store, owner.keyring(store), owner.index_key()) == done["records"]
    # a worker on the migrated keystore goes on in the same logs, signing in the service
    worker = open_keys(Settings.from_env({}, data_dir=data), role="worker")
    settings = Settings.from_env({}, data_dir=data, dek_max_records=30)
    pipeline = Pipeline(settings, worker.index_key(), worker.dek_maker(), store, worker.signer())
    seal(pipeline, [r for r in make_readings() if "2024-03-02" <= r["ts"] < "2024-03-03"], first=1000)
    results = audit_store(store, after.ledger_verifiers, registry=capabilities.registry())
    assert not [f for _, findings in results for f in findings]
    assert {s.log for s, _ in results if "readings" in s.log} == {pipeline.origin("readings", 0)}


def test_nothing_changes_when_a_record_does_not_open(passphrase_store, request, monkeypatch):
    data = passphrase_store
    uri, env = target("openbao", request)
    monkeypatch.setenv("BAO_TOKEN", env["BAO_TOKEN"])
    keystore_before = (data / "keystore.json").read_bytes()
    store = SegmentStore(data / "store")
    segment = store.segments("readings")[0]
    import pyarrow.parquet as pq

    table = pq.read_table(segment)
    envelopes = table.column("envelope").to_pylist()
    envelopes[3] = envelopes[3][:-1] + bytes([envelopes[3][-1] ^ 1])
    pq.write_table(table.set_column(table.schema.get_field_index("envelope"), "envelope",
                                    __import__("pyarrow").array(envelopes, table.schema.field("envelope").type)), segment)
    old = open_keys(Settings.from_env({}, data_dir=data), role="admin", passphrase=PASS)
    with pytest.raises(InvalidEnvelope):
        migrate_to_kms(data, store, old, parse(uri))
    assert (data / "keystore.json").read_bytes() == keystore_before  # the passphrase keystore still rules
    assert store.blobs.list("kms/wraps/") == []  # and no new wrap was kept
