"""``meterseal dp``, ``bill --encrypted`` and ``forecast --encrypted`` end to end over a sealed store
(``streams/cli/dp.py``, ``streams/cli/he.py``)."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from streams.ingest import sources
from streams.cli.main import main
from streams.keys.keystore import Keystore
from streams.pipeline import Pipeline
from streams.privacy import tariff
from streams.seal import Source
from streams.settings import Settings
from streams.store.segments import SegmentStore

from tests.streams.privacy.conftest import PASSPHRASE, dp_store  # noqa: F401  (the fixture)


def run(data, *args, expect: int = 0):
    result = CliRunner(env={"METERSEAL_PASSPHRASE": PASSPHRASE, "METERSEAL_REGIONS": "north,south,east",
                            "METERSEAL_DP_DATASET_RHO": "1.0"}).invoke(main, ["--data-dir", str(data), *args])
    assert result.exit_code == expect, result.output
    return result


@pytest.fixture
def data(dp_store, tmp_path):
    shutil.copytree(dp_store[0], tmp_path / "d")
    return tmp_path / "d"


def test_dp_budget_query_and_refusal(data):
    run(data, "dp", "budget", "set", "--analyst", "alice", "--rho", "0.5")
    out = json.loads(run(data, "dp", "query", "--analyst", "alice", "--metric", "sum", "--by", "region,hour",
                         "--from", "2025-03-01", "--to", "2025-03-02", "--rho", "0.3", "--format", "json").stdout)
    assert len(out["rows"]) == 3 * 48 and out["rho"] <= 0.3 and out["remaining"]["analyst"] == pytest.approx(0.2)
    assert {"value", "noise_scale", "low", "high", "region", "hour"} <= out["rows"][0].keys()
    refused = run(data, "dp", "query", "--analyst", "alice", "--metric", "sum", "--from", "2025-03-01",
                  "--to", "2025-03-02", "--rho", "0.3", "--format", "json", expect=2)
    assert refused.stdout == "" and "Nothing was released" in refused.stderr
    table = run(data, "dp", "query", "--analyst", "alice", "--metric", "mean", "--from", "2025-03-01",
                "--to", "2025-03-01", "--rho", "0.1").stdout
    assert "north" in table and "noise_scale" in table
    status = json.loads(run(data, "dp", "budget", "show", "--format", "json").stdout)
    assert status["analysts"][0]["rho_spent"] == pytest.approx(0.4) and status["analysts"][0]["releases"] == 2
    run(data, "dp", "budget", "set", "--analyst", "bob", "--rho", "5")
    refused = run(data, "dp", "query", "--analyst", "bob", "--metric", "count", "--from", "2025-03-01",
                  "--to", "2025-03-01", "--rho", "0.7", expect=2)  # the data set has 0.6 left of 1.0
    assert "data set 'readings'" in refused.stderr


def test_bill_encrypted_readings_and_bills(data, tmp_path):
    out = json.loads(run(data, "bill", "--encrypted", "--kind", "readings", "--format", "json").stdout)
    assert out["customers"] == 12 and out["identical_to_clear"] == 12
    row = out["rows"][0]
    assert row["period"] == "2025-03" and row["amount_paise"] == tariff.clear_bill(tariff.units_of(row["units_kwh"]),
                                                                                   tariff.default_tariff())
    # bills: a store of generated seed-format bills
    bills_dir = tmp_path / "bills"
    keystore = Keystore.init(bills_dir, PASSPHRASE)
    keys = keystore.unlock(PASSPHRASE)
    settings = Settings.from_env({}, data_dir=bills_dir)
    pipeline = Pipeline(settings, keys.index_key, keystore.owner_public, SegmentStore(settings.store_dir))
    rows = sources.generated_bills(60)
    sealed = [pipeline.seal_bill(json.dumps(r).encode(), Source("bills.raw", 0, i)) for i, r in enumerate(rows)]
    pipeline.store_batch("bills.sealed", [(0, i, s.encode()) for i, s in enumerate(sealed)])
    month = rows[0]["Date"][:7]
    out = json.loads(run(bills_dir, "bill", "--encrypted", "--period", month, "--format", "json").stdout)
    expected = sorted(int(r["Billed Unit"]) for r in rows if r["Date"][:7] == month)
    assert sorted(int(float(r["units_kwh"])) for r in out["rows"]) == expected
    assert out["identical_to_clear"] == out["customers"] == len(expected)
    assert out["figures"]["billing_side_s"] > 0 and out["figures"]["usage_ciphertext_bytes_per_customer"] > 0
    table = run(bills_dir, "bill", "--encrypted").stdout
    assert "amount_paise" in table and "BESCOM" in table


def test_forecast_encrypted_round_trip(data):
    out = json.loads(run(data, "forecast", "--encrypted", "--meter", "SIM-00004", "--rounds", "1",
                         "--format", "json").stdout)
    assert out["meter"] == "SIM-00004" and out["abs_diff_kwh"] < 1e-3 and out["query_bytes"] > 0
    run(data, "forecast", "--encrypted", "--meter", "NOPE", expect=2)
