"""``meterseal bench store --s3 --expiry`` on the session's servers, small: it measures both tables in one run and
the expiring one ends with fewer snapshots."""

from __future__ import annotations

import pytest

from streams.bench.objstore import bench_expiry

pytestmark = pytest.mark.objectstore


def test_bench_expiry_compares_both_tables_in_one_run(objectstore):
    out = bench_expiry(20, keep_s=0, every=10)
    assert [w["commits"] for w in out["windows"]] == ["0-9", "10-19"]
    assert all(w["ms_with_expiry"] > 0 and w["ms_without"] > 0 for w in out["windows"])
    assert out["snapshots_at_end"]["plain"] == 20 and out["snapshots_at_end"]["expiring"] < 20
    assert out["expiries"][0]["expired"] == 9  # all but the head of the first ten
