"""The prototype's task for parity: TinyNet per bill category, metrics measured, baselines in the same run."""

import json

import pytest
from click.testing import CliRunner

from fl import bills, rounds, task
from streams.ingest import sources
from streams.cli.main import main
from streams.keys.keystore import Keystore
from streams.pipeline import Pipeline
from streams.store.query import Reader
from streams.seal import Source
from streams.settings import Settings
from streams.store.segments import SegmentStore


@pytest.fixture(scope="module")
def bill_store(tmp_path_factory):
    data = tmp_path_factory.mktemp("fl-bills")
    keystore = Keystore.init(data, "pw")
    keys = keystore.unlock("pw")
    settings = Settings.from_env({}, data_dir=data)
    pipeline = Pipeline(settings, keys.index_key, keystore.owner_public, SegmentStore(settings.store_dir))
    rows = sources.generated_bills(600)
    sealed = [pipeline.seal_bill(json.dumps(r).encode(), Source("bills.raw", 0, i)) for i, r in enumerate(rows)]
    pipeline.store_batch("bills.sealed", [(0, i, s.encode()) for i, s in enumerate(sealed)])
    return data, keys, rows


def test_each_category_client_opens_only_its_bills(bill_store):
    data, keys, rows = bill_store
    reader = Reader(data / "store", keys)
    for category in {r["Category"] for r in rows}:
        mine = bills.category_bills(reader, category)
        assert len(mine) == sum(r["Category"] == category for r in rows) and {b["category"] for b in mine} == {category}


def test_tinynet_rounds_are_measured_against_the_baselines(bill_store):
    data, keys, rows = bill_store
    reader = Reader(data / "store", keys)
    datas = [bills.category_data(bills.category_bills(reader, c), c) for c in sorted({r["Category"] for r in rows})]
    assert all(d.train[0].shape[1] == 1 for d in datas)
    report = rounds.run(datas, rounds=3, epochs=5, model_fn=task.TinyNet)
    maes = [h["mae"] for h in report["rounds"]]
    assert len(set(maes)) == 3 and all(m > 0 for m in maes)
    # persistence is "the previous bill's units", computed from the same held-out pairs
    import numpy as np
    actual = np.concatenate([d.test[1] * d.test[2] for d in datas])
    previous = np.concatenate([d.test[0][:, 0] * d.test[2] for d in datas])
    assert report["baselines"]["persistence"]["mae"] == pytest.approx(float(np.abs(actual - previous).mean()), rel=1e-4)


def test_fl_run_task_bills_cli(bill_store):
    data, _, _ = bill_store
    result = CliRunner(env={"METERSEAL_PASSPHRASE": "pw"}).invoke(
        main, ["--data-dir", str(data), "fl", "run", "--task", "bills", "--rounds", "2", "--format", "json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["task"] == "bills" and [r["round"] for r in report["rounds"]] == [1, 2]
    assert set(report["baselines"]) == {"persistence", "local_only", "centralized"}
