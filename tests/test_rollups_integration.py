"""Rollups kept by a real worker equal a recomputation from the raw rows, through a worker killed (SIGKILL)
between storing readings and counting them and another killed at a random moment. Marked ``broker``."""

from __future__ import annotations

import datetime as dt
import random
import time

import pytest

from streams.crypto.tokens import BlindIndex
from streams.keys.keyring import Keyring
from streams.rollups import cells
from streams.rollups.cells import Contribution
from streams.store.base import connect
from streams.store.segments import SegmentStore
from streams.unseal import open_table

from .rig import running_rig
from .test_reliability import _messages, _produce, _stored, _uci

pytestmark = pytest.mark.broker


def _opened(rig, table):
    store = SegmentStore(rig.data_dir / "store")
    con = connect(store)
    data = con.sql(f"SELECT * FROM {table}").to_arrow_table()
    return open_table(data, Keyring(store, rig.keys.unwrappers(), index_key=rig.keys.index_key), BlindIndex(rig.keys.index_key)), con


def _counted(rig) -> int:
    return rig.query("SELECT coalesce(sum(readings), 0) FROM rollup_region")[0][0] if (
        rig.data_dir / "store" / "rollup_region").exists() else 0


def assert_rollups_equal_recomputation(rig) -> None:
    readings, con = _opened(rig, "readings")
    want_meters, want_regions = cells.recompute(
        Contribution(0, r["meter_id"], r["account_id"], r["region"], r["category"],
                     dt.datetime.fromisoformat(r["ts"]).timestamp(), r["kwh"]) for r in readings)
    plains, _ = _opened(rig, "rollup_meter")
    got: dict = {}
    for p in plains:
        key = (p["period"], int(dt.datetime.fromisoformat(p["start"]).timestamp()),
               (p["meter_id"], p["account_id"], p["region"], p["category"]))
        acc = got.setdefault(key, [0, 0.0, float("inf"), float("-inf")])
        acc[0], acc[1] = acc[0] + p["readings"], acc[1] + p["kwh_sum"]
        acc[2], acc[3] = min(acc[2], p["kwh_min"]), max(acc[3], p["kwh_max"])
    assert got.keys() == want_meters.keys()
    assert all(got[k][0] == w[0] and got[k][1] == pytest.approx(w[1]) and got[k][2:] == w[2:]
               for k, w in want_meters.items())
    regions = {(hour // 1000, region, category): [m, n, s] for hour, region, category, m, n, s in con.execute(
        "SELECT hour_ms, region, category, sum(meters), sum(readings), sum(kwh_sum) FROM rollup_region GROUP BY ALL"
    ).fetchall()}
    assert regions.keys() == want_regions.keys()
    assert all(regions[k][:2] == w[:2] and regions[k][2] == pytest.approx(w[2]) for k, w in want_regions.items())


def test_rollups_equal_recomputation_after_sigkills(tmp_path):
    n = 30_000
    readings = _uci(n)
    with running_rig(tmp_path, METERSEAL_ROLLUP_IDLE_S="2", METERSEAL_TEST_KILL_BEFORE_ROLLUP="4") as rig:
        _produce(rig, _messages(readings))
        deadline = time.monotonic() + 120
        while rig.worker.poll() is None and time.monotonic() < deadline:  # its 4th store: killed before counting
            time.sleep(0.2)
        assert rig.worker.returncode == -9, "the failpoint did not kill the worker"
        assert _stored(rig) < n
        del rig.environ["METERSEAL_TEST_KILL_BEFORE_ROLLUP"]
        rig.start_worker()
        before = _stored(rig)
        rig.wait_for(lambda: _stored(rig) > before + 2000, "progress after the restart", timeout=120)
        time.sleep(random.uniform(0.0, 2.0))
        rig.kill_worker()  # and once at a random moment
        rig.start_worker()
        rig.wait_for(lambda: _stored(rig) >= n, f"all {n} readings", timeout=300)
        rig.wait_for(lambda: _counted(rig) >= n, "every reading in the rollups (idle close)", timeout=120)
        assert "were not counted yet (a writer stopped)" in (tmp_path / "worker.log").read_text()
        assert_rollups_equal_recomputation(rig)
