"""The owner's recomputation of the rollups from the raw rows: ``meterseal store rollup rebuild``.

Opens every stored reading with the owner's keys (``streams.unseal``), partition by partition inside the
partition's store lock, and replaces that partition's rollup rows and state with what the readings give. For a
store written before rollups existed, after ``meterseal store rebuild`` (which replays sealed records without
their plaintext), or to check that the kept rollups are right (``check_rollups``). Stop the workers first: a
worker keeps a partition's state in memory between writes and would write over the rebuilt state.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Callable

from streams.crypto.tokens import BlindIndex
from streams.rollups import cells
from streams.rollups.cells import Contribution
from streams.rollups.keeper import RollupKeeper
from streams.unseal import open_many


def contributions(store: Any, partition: int, keys: Callable[[bytes], Any], index: BlindIndex) -> list[Contribution]:
    """Every stored reading of a partition, opened, as ``Contribution``s."""
    rows = store.rows("readings", partition)
    out = []
    for row, plain in zip(rows, open_many(rows, keys, index) if rows else []):
        out.append(Contribution(row["leaf_index"], plain["meter_id"], plain["account_id"], plain["region"],
                                plain["category"], dt.datetime.fromisoformat(plain["ts"]).timestamp(), plain["kwh"]))
    return out


def rebuild(store: Any, keeper: RollupKeeper, keys: Callable[[bytes], Any], index: BlindIndex, *,
            locked: Callable[[str, int], Any], progress: Callable[[str], None] = lambda line: None) -> dict[str, int]:
    """Rebuild every readings partition's rollups; returns counts (partitions, readings, rows written)."""
    done = {"partitions": 0, "readings": 0, "rows": 0}
    for partition in store.partitions("readings"):
        with locked("readings", partition):
            found = contributions(store, partition, keys, index)
            rows = keeper.replace(partition, found, store.max_leaf("readings", partition) + 1)
        done["partitions"] += 1
        done["readings"] += len(found)
        done["rows"] += rows
        progress(f"readings/{partition}: {len(found)} readings, {rows} rollup rows")
    return done


def check(store: Any, con: Any, keys: Callable[[bytes], Any], index: BlindIndex) -> list[str]:
    """Differences between the stored rollups and a recomputation from the raw rows (empty: they agree). Counts
    only what is closed: run it when the workers have closed their cells (idle) or after ``rebuild``."""
    readings = [c for p in store.partitions("readings") for c in contributions(store, p, keys, index)]
    want_meters, want_regions = cells.recompute(readings)
    from streams.unseal import SEALED_COLUMNS, open_table

    table = con.sql(f"SELECT {', '.join(SEALED_COLUMNS)} FROM rollup_meter").to_arrow_table()
    got_meters: dict = {}
    for p in open_table(table, keys, index) if table.num_rows else []:
        key = (p["period"], int(dt.datetime.fromisoformat(p["start"]).timestamp()),
               (p["meter_id"], p["account_id"], p["region"], p["category"]))
        acc = got_meters.setdefault(key, [0, 0.0, float("inf"), float("-inf")])
        acc[0], acc[1] = acc[0] + p["readings"], acc[1] + p["kwh_sum"]
        acc[2], acc[3] = min(acc[2], p["kwh_min"]), max(acc[3], p["kwh_max"])
    got_regions = {(h // 1000, r, c): [m, n, s, lo, hi] for h, r, c, m, n, s, lo, hi in con.execute(
        "SELECT hour_ms, region, category, sum(meters), sum(readings), sum(kwh_sum), min(kwh_min), max(kwh_max) "
        "FROM rollup_region GROUP BY ALL").fetchall()}
    problems = []
    for name, got, want in (("meter", got_meters, want_meters), ("region", got_regions, want_regions)):
        for key in sorted(set(got) | set(want), key=str):
            g, w = got.get(key), want.get(key)
            if g is None or w is None or any(abs(a - b) > 1e-6 * max(1.0, abs(b)) for a, b in zip(g, w)):
                problems.append(f"{name} cell {key[:2]}: rollup {g}, raw rows {w}")
    return problems
