"""Parity with the earlier prototype's federated task: its TinyNet (1 -> 8 -> 1) predicting a bill's billed
units from the previous bill's, one client per region = bill category (Domestic, Commercial, ...).

The prototype typed its metrics in by hand; here the same task reports measured MAE/RMSE/R² per round
and the same baselines as the forecaster (``fl.rounds``). Each category's client asks the store only for
its category's bills (``category`` is a clear column) and opens them itself.
"""

from __future__ import annotations

import numpy as np

from streams.store.query import Query, Reader

from fl import task
from fl.data import RegionData

SCALE = 1000.0  # billed units / 1000: one fixed scale for every client, so their weights can be averaged


def category_bills(reader: Reader, category: str) -> list[dict]:
    """Every bill of ``category``, opened (only that category's rows are opened)."""
    rows = [r for r in reader.search(Query(), kinds=["bills"]) if r["category"] == category]
    return reader.open_many(rows)


def category_data(bills: list[dict], category: str, *, test: float = 0.2) -> RegionData:
    """(previous bill's units -> this bill's units) pairs in bill order (date, time, bill number)."""
    ordered = sorted(bills, key=lambda b: (b["date"], b["time"], b["bill_no"]))
    units = np.asarray([b["billed_unit"] for b in ordered], dtype=np.float32) / SCALE
    x, y = units[:-1].reshape(-1, 1), units[1:]
    scale = np.full(len(y), SCALE, dtype=np.float32)
    train, held_out = task.split(x, y, scale, test=test)
    return RegionData(category, train, held_out, records=len(bills), meters=len({b["meter_no"] for b in bills}))
