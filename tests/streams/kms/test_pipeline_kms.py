"""The whole path on each key service: seal (the worker's keys), search, unseal, share, DP query, bill, ledger
verify (the owner's keys) — and what the key service leaves on disk: no private key, no key in clear.

The worker and the readers are separate ``open_keys`` calls with their own roles (and, on OpenBao, their own
tokens with the shipped policies), as separate processes are; the broker is not needed for the keys (the
broker path runs in ``tests/test_kms_integration.py``)."""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path

import pytest

from ledger.note import Signer
from streams.exceptions import KeyServiceDenied
from streams.keys.keystore import Keystore
from streams.kms.access import init_kms, open_keys
from streams.kms.uri import parse
from streams.pipeline import Pipeline
from streams.seal import Source
from streams.settings import Settings
from streams.store.segments import SegmentStore
from tests.conftest import SEED_CSV
from tests.streams.share.conftest import make_readings

PASS = "pipeline-passphrase"
PROVIDERS = ["local", pytest.param("openbao", marks=pytest.mark.kms), pytest.param("pkcs11", marks=pytest.mark.kms)]


def deploy(provider: str, request, data: Path) -> dict[str, dict[str, str]]:
    """A keystore in ``data`` on ``provider``; the environment each role's process runs with."""
    if provider == "local":
        Keystore.init(data, PASS)
        return {role: {} for role in ("worker", "console", "admin")}
    if provider == "openbao":
        server = request.getfixturevalue("openbao")
        uri = request.getfixturevalue("bao_uri")
        mount = parse(uri).mount
        tokens = {role: server.token(server.policy(role, mount=mount)) for role in ("worker", "console", "admin")}
        init_kms(data, parse(uri), environ={"BAO_TOKEN": tokens["admin"]})
        return {role: {"BAO_TOKEN": token} for role, token in tokens.items()}
    hsm = request.getfixturevalue("softhsm")
    init_kms(data, parse(request.getfixturevalue("hsm_uri")))
    return {role: hsm.env() for role in ("worker", "console", "admin")}


def keys_of(data: Path, role: str, env: dict[str, str]):
    return open_keys(Settings.from_env({}, data_dir=data), role=role, passphrase=PASS, environ=env, check=True)


@pytest.fixture(params=PROVIDERS)
def sealed(request, tmp_path):
    """(provider, data dir, role environments, readings, bills) of a store the worker's keys sealed."""
    data = tmp_path / "data"
    envs = deploy(request.param, request, data)
    worker = keys_of(data, "worker", envs["worker"])
    settings = Settings.from_env({}, data_dir=data, dek_max_records=60)  # a few DEKs per region
    pipeline = Pipeline(settings, worker.index_key(), worker.dek_maker(), SegmentStore(settings.store_dir), worker.signer())
    from streams.ingest.sources import read_bills_csv

    bills = list(read_bills_csv(SEED_CSV))[:40]
    readings = [r for r in make_readings() if r["ts"] < "2024-03-03"]
    states: dict = {}
    messages = {"bills.sealed": [], "readings.sealed": []}
    for i, row in enumerate(bills):
        messages["bills.sealed"].append((0, i, pipeline.seal_bill(json.dumps(row).encode(), Source("bills.raw", 0, i)).encode()))
    for i, row in enumerate(readings):
        out = pipeline.seal_reading(json.dumps(row).encode(), Source("readings.raw", 0, i), states)
        messages["readings.sealed"].append((0, i, out.encode()))
    for topic, batch in messages.items():
        pipeline.store_batch(topic, batch)
    for key, record in pipeline.take_new_keys():  # keys.deks, as the store_keys agent keeps them
        import schemas

        pipeline.store_key(schemas.encode("wrapped_key", record), 0)
    pipeline.checkpoint_due(force=True)
    return request.param, data, envs, readings, bills, worker


def test_every_step_opens_with_the_owner_keys_of_each_provider(sealed):
    from streams.privacy import billrun, engine
    from streams.share.bundle import export_bundle, open_bundle
    from streams.share.grants import create_grant
    from streams.share.parties import PartyKey, add_party
    from streams.store.audit import audit_store
    from streams.store.query import Query, Reader

    provider, data, envs, readings, bills, worker = sealed
    store = data / "store"
    assert len(SegmentStore(store).dek_ids()) >= 4  # rotated: several DEKs, each made by the service
    owner = keys_of(data, "console", envs["console"])
    reader = Reader(store, owner.unlocked())
    # search + unseal
    hits = reader.search(Query(meter="M-A", start=dt.date(2024, 3, 1), end=dt.date(2024, 3, 2)), kinds=["readings"])
    want = sorted((r for r in readings if r["meter_id"] == "M-A"), key=lambda r: r["ts"])
    got = sorted(({k: v for k, v in r.items() if k not in ("label", "device")} for r in reader.open_many(hits)),
                 key=lambda r: r["ts"])
    assert got == want
    # share: a grant signed by the service's ledger key, a bundle the recipient verifies with the keystore's vkeys
    party = PartyKey.generate()
    grant = create_grant(store, signer=owner.signer(), index_key=owner.index_key(),
                         party=add_party(store, "acme", party.public_key), meters=["M-B"], start="2024-03-01",
                         end="2024-03-01")
    blob, summary = export_bundle(store, grant.grant_id, owner=owner.unlocked(), signer=owner.signer())
    opened = open_bundle(blob, party=party, verifiers=owner.verifiers)
    assert len(opened.records) == 24 == summary["record_keys"] and all(r["verified"] for r in opened.records)
    # DP query (its budget log signed in the service too)
    query = engine.DPQuery(metric="sum", by=("region",), start=dt.date(2024, 3, 1), end=dt.date(2024, 3, 2),
                           regions=("north", "south"), bounds=engine.Bounds(clamp_kwh=2.0, per_hour=4))
    engine.set_budget(store, signer=owner.signer(), analyst="ana", rho=10.0)
    answer = engine.answer_query(store, owner=owner.unlocked(), signer=owner.signer(), analyst="ana", query=query,
                                 rho=1.0, default_dataset_rho=10.0)
    out = answer.to_dict()
    assert {r["region"] for r in out["rows"]} == {"north", "south"} and out["spend_leaf"] is not None
    # bill
    usage = billrun.usage_from_store(store, owner.unlocked(), kind="bills")
    assert sorted(str(u["bill_no"]) for u in usage) == sorted(b["Bill No."] for b in bills)
    # every checkpoint, consent and budget event verifies under the keystore's public keys
    from streams import capabilities

    results = audit_store(store, owner.verifiers, registry=capabilities.registry())
    assert not [f for _, findings in results for f in findings]
    assert sum(s.checkpoints for s, _ in results) >= 3
    # the worker's keys cannot open a record: a passphrase worker has no owner key unlocked, a service refuses it
    if provider == "openbao":
        with pytest.raises(KeyServiceDenied):
            Reader(store, worker.unlocked()).open_many(hits[:1])
    elif provider == "local":
        assert worker.service._unlocked is None  # the worker unlocked the index and ledger keys only


def test_no_private_key_and_no_key_in_clear_on_disk(sealed):
    provider, data, envs, _, _, worker = sealed
    owner = keys_of(data, "console", envs["console"])
    store = SegmentStore(data / "store")
    secrets = [owner.index_key()] + [owner.keyring(store)(bytes.fromhex(k)).secret for k in store.dek_ids()]
    doc = json.loads((data / "keystore.json").read_text())
    if provider == "local":  # the passphrase keystore holds the private keys, each sealed under the passphrase
        assert doc["kdf"]["name"] == "scrypt" and doc["owners"]
        assert all(base64.b64decode(o["private"])[:17] == b"\x01meterseal-kstore" for o in doc["owners"])  # sealed
    else:  # a service keystore holds no private key at all
        assert "private" not in json.dumps(doc) and "kdf" not in doc and doc["owners"] == []
    files = [p for p in data.rglob("*") if p.is_file()]
    assert len(files) > 10  # keystore, DEK files, segments, hashes, checkpoints
    for path in files:
        blob = path.read_bytes()
        for secret in secrets:
            for form in (secret, secret.hex().encode(), base64.b64encode(secret), base64.b64encode(secret[:30])):
                assert form not in blob, f"a key in clear in {path.relative_to(data)}"
    # and the ledger keys are not there either: only their public halves (the service signs)
    if provider != "local":
        assert isinstance(worker.signer(), type(owner.signer())) and not isinstance(worker.signer(), Signer)


@pytest.mark.kms
def test_the_console_vault_fails_closed_when_its_token_is_revoked(openbao, bao_uri, tmp_path, request):
    from streams.console.data import KeysUnavailable, Vault

    data = tmp_path / "data"
    mount = parse(bao_uri).mount
    tokens = {role: openbao.token(openbao.policy(role, mount=mount)) for role in ("worker", "console", "admin")}
    init_kms(data, parse(bao_uri), environ={"BAO_TOKEN": tokens["admin"]})
    worker = keys_of(data, "worker", {"BAO_TOKEN": tokens["worker"]})
    settings = Settings.from_env({}, data_dir=data, dek_max_records=24)
    pipeline = Pipeline(settings, worker.index_key(), worker.dek_maker(), SegmentStore(settings.store_dir), worker.signer())
    readings = [r for r in make_readings() if r["meter_id"] == "M-A" and r["ts"] < "2024-03-03"]
    states: dict = {}
    batch = [(0, i, pipeline.seal_reading(json.dumps(r).encode(), Source("readings.raw", 0, i), states).encode())
             for i, r in enumerate(readings)]
    pipeline.store_batch("readings.sealed", batch)
    request.getfixturevalue("monkeypatch").setenv("BAO_TOKEN", tokens["console"])
    vault = Vault.open(data, settings=Settings.from_env({}, data_dir=data))
    first = vault.readings("M-A", dt.date(2024, 3, 1), dt.date(2024, 3, 1))
    assert len(first) == 24
    assert vault.key_status()["unwraps"][0]["role"] == "console"
    openbao.revoke(tokens["console"])
    with pytest.raises(KeysUnavailable, match="cannot be opened right now") as caught:
        vault.readings("M-A", dt.date(2024, 3, 2), dt.date(2024, 3, 2))  # a DEK it had not unwrapped yet
    assert mount not in str(caught.value)  # the page says nothing about the service; the log does
    with pytest.raises(KeysUnavailable):
        vault.readings("M-A", dt.date(2024, 3, 1), dt.date(2024, 3, 1))  # nor what it had cached a moment ago
