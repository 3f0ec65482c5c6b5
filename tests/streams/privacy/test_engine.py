"""The DP engine over a sealed store: budgets per analyst and per data set, refusals release nothing,
spends survive a restart and are leaves of the privacy log."""

from __future__ import annotations

from streams import capabilities

import datetime as dt
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from ledger.storage import FileHashStore
from streams.privacy import budget, dp, engine
from streams.store.segments import SegmentStore

from .conftest import PASSPHRASE, REGIONS


@pytest.fixture
def store(dp_store, tmp_path):
    """A private copy of the module's store (budgets are per store)."""
    data, keystore, keys, readings = dp_store
    shutil.copytree(data, tmp_path / "d")
    return tmp_path / "d" / "store", keystore.ledger_signer(PASSPHRASE), keys, readings


def q(metric="sum", by=("region", "hour")) -> dp.DPQuery:
    return dp.DPQuery(metric=metric, by=by, start=dt.date(2025, 3, 1), end=dt.date(2025, 3, 2), regions=REGIONS,
                      bounds=dp.Bounds(clamp_kwh=2.0, per_hour=4))


def ask(store_dir, signer, keys, analyst, rho, *, dataset_rho=10.0, query=None):
    return engine.answer_query(store_dir, owner=keys, signer=signer, analyst=analyst, query=query or q(), rho=rho,
                               default_dataset_rho=dataset_rho)


def test_answer_estimates_the_true_aggregate_of_the_opened_store(store):
    store_dir, signer, keys, readings = store
    engine.set_budget(store_dir, signer=signer, analyst="alice", rho=100.0)
    answer = ask(store_dir, signer, keys, "alice", 50.0, dataset_rho=100.0, query=q(by=("region", "day")))
    truth = {(r, d): 0.0 for r in REGIONS for d in ("2025-03-01", "2025-03-02")}
    for r in readings:
        truth[(r["region"], r["ts"][:10])] += min(r["kwh"], 2.0)
    got = {(row["region"], row["day"]): row for row in answer.rows}
    assert got.keys() == truth.keys()
    for key, row in got.items():
        assert abs(row["value"] - truth[key]) < 5 * row["noise_scale"]  # fails with probability ~6e-7 per group
        assert row["high"] - row["low"] == pytest.approx(2 * 1.959964 * row["noise_scale"], rel=1e-4)
    out = answer.to_dict()
    assert out["rho"] <= 50.0 and out["noise_scale"]["sum_kwh"] > 0 and out["spend_leaf"] == 1
    assert "at most 4 readings per meter per hour" in out["bounds"]


def test_analyst_budget_is_refused_when_exhausted_and_a_refusal_releases_nothing(store):
    store_dir, signer, keys, _ = store
    engine.set_budget(store_dir, signer=signer, analyst="alice", rho=1.0)
    ask(store_dir, signer, keys, "alice", 0.4)
    ask(store_dir, signer, keys, "alice", 0.4)
    events = budget.read_events(store_dir)
    with pytest.raises(dp.BudgetExceeded, match="analyst 'alice' has rho 0.2 left of 1"):
        ask(store_dir, signer, keys, "alice", 0.4)
    assert budget.read_events(store_dir) == events  # nothing spent, nothing released
    status = engine.budget_status(store_dir, default_dataset_rho=10.0, analyst="alice")["analysts"][0]
    assert status["rho_spent"] == pytest.approx(0.8) and status["releases"] == 2
    with pytest.raises(dp.BudgetExceeded, match="no privacy budget"):
        ask(store_dir, signer, keys, "mallory", 0.1)


def test_data_set_budget_stops_colluding_analysts(store):
    store_dir, signer, keys, _ = store
    for name in ("alice", "bob"):
        engine.set_budget(store_dir, signer=signer, analyst=name, rho=1.0)
    engine.set_budget(store_dir, signer=signer, dataset="readings", rho=1.0)
    ask(store_dir, signer, keys, "alice", 0.7)
    with pytest.raises(dp.BudgetExceeded, match="data set 'readings' has rho 0.3 left"):
        ask(store_dir, signer, keys, "bob", 0.7)
    ask(store_dir, signer, keys, "bob", 0.3)  # what is left still can be spent, by anyone
    datasets = engine.budget_status(store_dir, default_dataset_rho=10.0)["datasets"]
    assert datasets == [pytest.approx({**datasets[0], "rho_spent": 1.0})] and datasets[0]["rho_left"] == pytest.approx(0)


def test_spends_survive_a_restart_and_are_privacy_log_leaves(store):
    store_dir, signer, keys, _ = store
    engine.set_budget(store_dir, signer=signer, analyst="alice", rho=1.0)
    ask(store_dir, signer, keys, "alice", 0.25)
    # a new process, nothing in memory: the state comes from the store alone
    code = ("import json, sys; from streams.privacy.engine import budget_status; "
            "print(json.dumps(budget_status(sys.argv[1], default_dataset_rho=10.0)))")
    out = json.loads(subprocess.run([sys.executable, "-c", code, str(store_dir)], capture_output=True, text=True,
                                    check=True).stdout)
    assert out["analysts"][0]["rho_spent"] == pytest.approx(0.25) and out["events"] == 2
    hashes = FileHashStore(SegmentStore(store_dir).hash_path("privacy", 0)).read()
    assert len(hashes) == 2 and list((store_dir / "ledger" / "privacy" / "p000").iterdir())  # signed checkpoints


def test_a_deleted_spend_is_detected_and_every_query_refused(store):
    store_dir, signer, keys, _ = store
    engine.set_budget(store_dir, signer=signer, analyst="alice", rho=1.0)
    ask(store_dir, signer, keys, "alice", 0.9)
    path = store_dir / "privacy" / "events.jsonl"
    path.write_bytes(b"".join(path.read_bytes().splitlines(keepends=True)[:-1]))  # win the budget back?
    with pytest.raises(budget.BudgetLogError, match="events were removed"):
        ask(store_dir, signer, keys, "alice", 0.5)


def test_torn_last_event_line_is_skipped_and_cut(store):
    store_dir, signer, keys, _ = store
    engine.set_budget(store_dir, signer=signer, analyst="alice", rho=1.0)
    path = store_dir / "privacy" / "events.jsonl"
    with open(path, "ab") as fh:
        fh.write(b'{"event":"spend","ana')  # a crash mid-write: nothing was released
    assert budget.load(store_dir).events == 1
    ask(store_dir, signer, keys, "alice", 0.5)
    assert [e["event"] for e in budget.read_events(store_dir)] == ["limit", "spend"]


def test_mean_and_count(store):
    store_dir, signer, keys, readings = store
    engine.set_budget(store_dir, signer=signer, analyst="alice", rho=100.0)
    rows = ask(store_dir, signer, keys, "alice", 40.0, dataset_rho=100.0, query=q("mean", ("region",))).rows
    true_mean = np.mean([min(r["kwh"], 2.0) for r in readings if r["region"] == "north"])
    north = rows[0]
    assert north["region"] == "north" and north["low"] <= north["value"] <= north["high"]
    assert abs(north["value"] - true_mean) < 0.2
    answer = ask(store_dir, signer, keys, "alice", 40.0, dataset_rho=100.0, query=q("count", ("region",)))
    assert abs(answer.rows[0]["value"] - sum(r["region"] == "north" for r in readings)) < 5 * answer.noise_scale["count"]


def test_ledger_verify_audits_the_privacy_log(store, dp_store):
    from streams.store.audit import audit_store

    store_dir, signer, keys, _ = store
    verifier = dp_store[1].ledger_verifier
    engine.set_budget(store_dir, signer=signer, analyst="alice", rho=1.0)
    ask(store_dir, signer, keys, "alice", 0.5)

    def privacy_findings():
        (summary, findings), = [(s, f) for s, f in audit_store(store_dir, verifier, registry=capabilities.registry()) if s.log.endswith("/privacy/0")]
        return summary, findings

    summary, findings = privacy_findings()
    assert findings == [] and summary.leaves == 2
    path = store_dir / "privacy" / "events.jsonl"
    path.write_text(path.read_text().replace('"rho":0.5', '"rho":0.05'))  # under-report a spend
    assert privacy_findings()[1]
    with pytest.raises(budget.BudgetLogError, match="altered"):
        budget.load(store_dir)
