"""``meterseal store migrate --to s3://...``, then ``ledger verify`` / ``ledger prove`` / ``status`` give the same
answers on the local store and on its copy in Iceberg + tlog tiles (``objectstore``)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from streams.cli.main import main
from streams.keys.keystore import Keystore
from streams.pipeline import Pipeline
from streams.settings import Settings
from streams.store.segments import SegmentStore
from tests.streams.store.test_contract import load, sealed_bills

pytestmark = pytest.mark.objectstore


def _invoke(env, *args):
    result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_migrate_then_verify_and_prove_answer_the_same_on_both_backends(tmp_path, s3_location, seed_csv):
    from streams.ingest.sources import read_bills_csv

    keystore = Keystore.init(tmp_path, "pw")
    keys = keystore.unlock("pw")
    settings = Settings.from_env({}, data_dir=tmp_path, dek_max_records=60)
    pipeline = Pipeline(settings, keys.index_key, keystore.owner_public, SegmentStore(settings.store_dir),
                        keystore.ledger_signer("pw"))
    load(pipeline, *sealed_bills(pipeline, list(read_bills_csv(seed_csv))[:200]))
    local = {"METERSEAL_DATA_DIR": str(tmp_path), "METERSEAL_PASSPHRASE": "pw"}
    remote = {**local, "METERSEAL_STORE": s3_location}
    report = json.loads(_invoke(local, "store", "migrate", "--to", s3_location))
    assert report["rows"]["bills"] == 200 and report["deks"] == 4
    verified = _invoke(local, "ledger", "verify")
    assert verified.startswith("ok:") and _invoke(remote, "ledger", "verify") == verified
    assert json.loads(_invoke(remote, "status")) == json.loads(_invoke(local, "status"))
    record_id = _invoke(local, "ledger", "records", "--limit", "1").split("\t")[0]
    assert json.loads(_invoke(remote, "ledger", "prove", record_id)) == json.loads(_invoke(local, "ledger", "prove", record_id))
    # expiring every snapshot but the current one changes no answer; the local store has none to expire
    expired = json.loads(_invoke(remote, "store", "expire", "--older-than", "0"))
    assert expired["tables"]["bills"]["kept"] == 1 and expired["tables"]["bills"]["expired"] >= 1
    assert _invoke(remote, "ledger", "verify") == verified
    refused = CliRunner().invoke(main, ["store", "expire"], env=local)
    assert refused.exit_code != 0 and "for a store on object storage" in refused.output
