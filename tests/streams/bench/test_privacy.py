"""`meterseal bench privacy` exists and its parts produce the figures (tiny sizes here; the real run is the bench)."""

from __future__ import annotations

from click.testing import CliRunner

from streams.bench.privacy import bench_billing, bench_dp
from streams.cli.main import main


def test_bench_privacy_command_exists():
    result = CliRunner().invoke(main, ["bench", "privacy", "--help"])
    assert result.exit_code == 0 and "--format" in result.output


def test_dp_table_and_prototype_on_a_tiny_fleet():
    out = bench_dp(fleets=(20,), rhos=(2.0,), days=2, sealed_max=20, repeats=1)
    row = out["table"][0]
    assert out["stores"]["20"] == {"sealed_and_opened": 20 * 48, "aggregate_equals_in_memory": True}
    assert row["fleet"] == 20 and row["gaussian_noise_scale_kwh"] > 0 and row["dp_median_rel_error"] > 0
    assert row["prototype_median_rel_error"] > row["dp_median_rel_error"]  # per-value noise adds up over meters
    averaging = out["prototype_averaging"]
    assert averaging["mean_abs_error_average_of_100_kwh"] < averaging["mean_abs_error_one_release_kwh"] / 5


def test_billing_figures_on_a_few_customers():
    out = bench_billing(customers=200, prototype_sample=10, prototype_seed_bills=10, uci_months=False)
    assert out["seed_bills"]["identical_to_clear_to_the_paisa"] == out["seed_bills"]["customers"] == 1000
    assert out["fleet"]["identical_to_clear_to_the_paisa"] == 200 and out["fleet"]["bills_per_s"] > 0
    assert out["prototype_ckks_decrypt_then_compute"]["first_10_of_fleet"]["bills_per_s"] > 0
