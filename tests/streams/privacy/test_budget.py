"""Budget bookkeeping under contention and bad input (no store data needed)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from ledger.note import Signer
from streams.privacy import budget, dp


@pytest.fixture
def signer():
    return Signer.generate("test-ledger")


def test_concurrent_spends_never_overdraw(tmp_path, signer):
    budget.set_budget(tmp_path, signer, analyst="alice", rho=1.0)

    def try_spend(_):
        try:
            budget.spend(tmp_path, signer, analyst="alice", dataset="readings", rho=0.25, query={},
                         default_dataset_rho=10.0)
            return True
        except dp.BudgetExceeded:
            return False

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(try_spend, range(8)))
    assert sum(results) == 4
    state = budget.load(tmp_path)
    assert state.spent_analyst["alice"] == pytest.approx(1.0) and state.events == 5


def test_bad_names_and_rho_are_clear_errors(tmp_path, signer):
    with pytest.raises(dp.DPError, match="analyst name"):
        budget.set_budget(tmp_path, signer, analyst="a b", rho=1.0)
    with pytest.raises(dp.DPError, match="either --analyst or --dataset"):
        budget.set_budget(tmp_path, signer, rho=1.0)
    with pytest.raises(dp.DPError, match=">= 0"):
        budget.set_budget(tmp_path, signer, dataset="readings", rho=float("nan"))
    assert budget.read_events(tmp_path) == []


def test_a_lowered_budget_refuses_further_spends(tmp_path, signer):
    budget.set_budget(tmp_path, signer, analyst="alice", rho=1.0)
    budget.spend(tmp_path, signer, analyst="alice", dataset="readings", rho=0.5, query={}, default_dataset_rho=10.0)
    budget.set_budget(tmp_path, signer, analyst="alice", rho=0.4)
    with pytest.raises(dp.BudgetExceeded, match="rho 0 left of 0.4"):
        budget.spend(tmp_path, signer, analyst="alice", dataset="readings", rho=0.01, query={},
                     default_dataset_rho=10.0)
