"""Tamper tests on a real store written by a worker: each change is caught by `meterseal ledger verify`
and located (log, leaf index, record id)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from ledger.note import Signer, sign
from ledger.checkpoint import Checkpoint
from streams.cli.main import main
from streams.store.segments import SegmentStore, arrow_schema

from ..rig import PASSPHRASE, running_rig

pytestmark = pytest.mark.broker


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, seed_csv_path):
    data = tmp_path_factory.mktemp("ledgered")
    with running_rig(data, METERSEAL_CHECKPOINT_LEAVES="100") as rig:
        assert rig.cli("ingest", "bills", str(seed_csv_path)).returncode == 0
        rig.wait_for(lambda: rig.query("SELECT count(*) FROM bills")[0][0] >= 1000, "1000 sealed bills")
        rig.stop_worker()  # a clean stop signs a checkpoint of every log's last leaves
    return data


@pytest.fixture(scope="module")
def seed_csv_path():
    from ..conftest import SEED_CSV

    return SEED_CSV


def verify(data: Path):
    return CliRunner().invoke(main, ["ledger", "verify"], env={"METERSEAL_DATA_DIR": str(data),
                                                               "METERSEAL_PASSPHRASE": PASSPHRASE})


@pytest.fixture
def copy(pristine, tmp_path):
    target = tmp_path / "data"
    shutil.copytree(pristine, target)
    return target


def segment_rows(data: Path, partition: int = 0):
    store = SegmentStore(data / "store")
    seg = store.segments("bills", partition)[0]
    return seg, pq.read_table(seg).to_pylist()


def rewrite(seg: Path, rows: list[dict]) -> None:
    pq.write_table(pa.Table.from_pylist(rows, schema=arrow_schema("bills")), seg)


def test_the_worker_written_store_verifies(pristine):
    result = verify(pristine)
    assert result.exit_code == 0, result.output
    import re

    leaves, signed = map(int, re.search(r"(\d+) leaves \((\d+) under signed", result.output).groups())
    assert leaves == signed and leaves > 1000  # 1000 bills + one leaf per data key


def test_modified_ciphertext_byte(copy):
    seg, rows = segment_rows(copy)
    victim = rows[3]
    env = bytearray(victim["envelope"])
    env[40] ^= 0x01
    victim["envelope"] = bytes(env)
    rewrite(seg, rows)
    result = verify(copy)
    assert result.exit_code == 1
    assert f"modified at leaf {victim['leaf_index']} (record {victim['record_id']})" in result.output
    assert "bills/0" in result.output


def test_deleted_record(copy):
    seg, rows = segment_rows(copy)
    victim = rows.pop(5)
    rewrite(seg, rows)
    result = verify(copy)
    assert result.exit_code == 1 and f"deleted at leaf {victim['leaf_index']}" in result.output


def test_inserted_forged_record(copy):
    seg, rows = segment_rows(copy)
    forged = {**rows[0], "record_id": "f" * 32}
    rewrite(seg, rows + [forged])
    result = verify(copy)
    assert result.exit_code == 1 and "inserted" in result.output and "f" * 32 in result.output


def test_swapped_records(copy):
    seg, rows = segment_rows(copy)
    a, b = rows[1], rows[2]
    a["leaf_index"], b["leaf_index"] = b["leaf_index"], a["leaf_index"]
    rewrite(seg, rows)
    result = verify(copy)
    assert result.exit_code == 1 and "moved" in result.output
    assert a["record_id"] in result.output or b["record_id"] in result.output


def test_truncated_tail(copy):
    store = SegmentStore(copy / "store")
    hashes = store.hash_path("bills", 0)
    size = hashes.stat().st_size // 32
    with open(hashes, "r+b") as fh:
        fh.truncate((size - 3) * 32)
    # and drop the records of those leaves, as a careful attacker would
    for seg in store.segments("bills", 0):
        rows = [r for r in pq.read_table(seg).to_pylist() if r["leaf_index"] < size - 3]
        rewrite(seg, rows)
    result = verify(copy)
    assert result.exit_code == 1 and "truncated" in result.output and f"leaf {size - 3}" in result.output


def test_replaced_checkpoint(copy):
    store = SegmentStore(copy / "store")
    note_path = sorted(store.checkpoint_dir("bills", 0).glob("*.note"))[-1]
    text = note_path.read_text()
    cp = Checkpoint.parse(text.split("\n\n")[0] + "\n")
    forged = sign(Checkpoint(cp.origin, cp.size, bytes(32)).body(), Signer.generate("meterseal-ledger"))
    note_path.write_text(forged)
    result = verify(copy)
    assert result.exit_code == 1 and "checkpoint-signature" in result.output


def test_altered_hash_log_is_caught_by_the_signed_roots(copy):
    store = SegmentStore(copy / "store")
    hashes = store.hash_path("bills", 0)
    data = bytearray(hashes.read_bytes())
    data[64] ^= 1
    hashes.write_bytes(bytes(data))
    result = verify(copy)
    assert result.exit_code == 1 and ("hash-log-altered" in result.output or "modified" in result.output)


def test_altered_wrapped_key_is_caught_in_the_key_log(copy):
    import json

    store = SegmentStore(copy / "store")
    key_id = next(k for k in store.dek_ids() if store.get_dek(k).get("leaf_index") is not None)
    path = copy / "store" / "deks" / f"{key_id}.json"
    doc = json.loads(path.read_text())
    doc["owner_fingerprint"] = "0" * 64  # pretend the key was wrapped for someone else
    path.write_text(json.dumps(doc))
    result = verify(copy)
    assert result.exit_code == 1 and "deks" in result.output and "modified" in result.output


def test_a_proof_from_prove_verifies_offline_with_only_the_public_key(pristine, tmp_path):
    env = {"METERSEAL_DATA_DIR": str(pristine), "METERSEAL_PASSPHRASE": PASSPHRASE}
    runner = CliRunner()
    record_id = runner.invoke(main, ["ledger", "records", "--limit", "7"], env=env).output.splitlines()[-1].split("\t")[0]
    vkey, pq_vkey = runner.invoke(main, ["keys", "show", "--public"], env=env).output.split()
    bundle = tmp_path / "proof.json"
    assert runner.invoke(main, ["ledger", "prove", record_id, "-o", str(bundle)], env=env).exit_code == 0
    offline = {"METERSEAL_DATA_DIR": str(tmp_path / "no-keystore-here")}
    result = runner.invoke(main, ["ledger", "verify-proof", str(bundle), "--vkey", vkey], env=offline)
    assert result.exit_code == 0 and record_id in result.output
    assert "meterseal-ledger (Ed25519)" in result.output
    # the post-quantum key alone, or both: each key given is checked and named
    result = runner.invoke(main, ["ledger", "verify-proof", str(bundle), "--vkey", pq_vkey], env=offline)
    assert result.exit_code == 0 and "keys checked: meterseal-ledger-mldsa65 (ML-DSA-65)" in result.output
    result = runner.invoke(main, ["ledger", "verify-proof", str(bundle), "--vkey", vkey, "--vkey", pq_vkey], env=offline)
    assert result.exit_code == 0 and "(Ed25519), meterseal-ledger-mldsa65 (ML-DSA-65)" in result.output
    # without a trusted key it refuses; with a changed index, or another key, it fails
    assert runner.invoke(main, ["ledger", "verify-proof", str(bundle)], env=offline).exit_code != 0
    import json

    data = json.loads(bundle.read_text())
    data["index"] += 1
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    assert runner.invoke(main, ["ledger", "verify-proof", str(bad), "--vkey", vkey], env=offline).exit_code == 1
    other = Signer.generate("meterseal-ledger").verifier.vkey
    assert runner.invoke(main, ["ledger", "verify-proof", str(bundle), "--vkey", other], env=offline).exit_code == 1
