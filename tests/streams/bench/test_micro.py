"""`bench detect` runs the worker's detection path (sealed profiles opened and written back) and times it."""

from __future__ import annotations

import pytest

from streams.bench.micro import bench_detect


def test_bench_detect_measures_the_worker_path():
    out = bench_detect(2000, meters=20, batch=200)
    assert out["observe_us"] > 0 and out["profile_flush_us"] > 0
    assert out["detect_us"] == pytest.approx(out["observe_us"] + out["profile_flush_us"], abs=0.02)
