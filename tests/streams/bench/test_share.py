"""`bench seal` measures envelope v2 beside v1 in the same run; `bench share` measures a real bundle."""

from __future__ import annotations

from streams.bench.micro import bench_seal
from streams.bench.share import bench_share


def test_bench_seal_reports_v1_and_v2_from_one_run():
    out = bench_seal(400, 50)
    assert round(out["envelope_bytes_v2"] - out["envelope_bytes_v1"]) == 32  # the key commitment
    for name in ("seal", "envelope", "open", "open_many"):
        assert out[f"{name}_v2_vs_v1"] > 0
    assert out["recipient_open_per_s"] > 0 and out["record_key_derive_per_s"] > 0


def test_bench_share_one_meter_one_day():
    out = bench_share(meters=1, days=1, interval_min=15)
    assert out["bundle_records"] == 96 and out["bundle_bytes"] > 96 * 500 and out["open_s"] > 0
