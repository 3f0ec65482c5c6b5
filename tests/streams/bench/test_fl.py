"""``meterseal bench fl`` on a tiny sealed UCI store: the same path as the full benchmark, numbers measured."""

from streams.bench.fl import bench_federated


def test_bench_federated_reports_measured_rounds_and_baselines_per_strategy():
    out = bench_federated(meters=2, days=3, rounds=2, epochs=1, regions=("north", "south"))
    assert out["readings"] == 2 * 3 * 1440 and set(out["regions"]) == {"north", "south"}
    assert set(out["runs"]) == {"fedavg", "fedprox"}
    for run in out["runs"].values():
        assert [h["round"] for h in run["rounds"]] == [1, 2]
        assert run["rounds"][0]["mae"] != run["rounds"][1]["mae"]  # trained between rounds
        assert all(c.startswith("region key") for c in run["capabilities"].values())  # no owner key opened them
        base = run["baselines"]
        assert set(base) == {"persistence", "local_only", "centralized"} and all(m["mae"] > 0 for m in base.values())
        last = run["rounds"][-1]["mae"]
        assert abs(run["better_than_persistence_pct"] - 100 * (1 - last / base["persistence"]["mae"])) < 0.06
        assert abs(run["above_centralized_pct"] - 100 * (last / base["centralized"]["mae"] - 1)) < 0.06
