"""When is the next federated run due? Decided from the store's per-region reading counts, which the
store holds in clear (region is a clear column), so the scheduler opens nothing.

>>> due(30.0, {"north": 500}, {"north": 100}, every_s=3600, after_readings=400)
'north has 400 new readings'
>>> due(30.0, {"north": 500}, {"north": 100}, every_s=3600, after_readings=0) is None
True
>>> due(4000.0, {"north": 500}, {"north": 100}, every_s=3600, after_readings=0)
'67 min since the last run'
>>> due(4000.0, {"north": 500}, {"north": 500}, every_s=3600, after_readings=0) is None  # nothing new
True
"""

from __future__ import annotations

from typing import Any


def due(since_s: float, counts: dict[str, int], last: dict[str, int], *, every_s: float,
        after_readings: int) -> str | None:
    """Why a run is due now (a short reason), or None."""
    new = {region: n - last.get(region, 0) for region, n in counts.items()}
    if after_readings > 0:
        for region, k in sorted(new.items()):
            if k >= after_readings:
                return f"{region} has {k} new readings"
    if every_s > 0 and since_s >= every_s and any(k > 0 for k in new.values()):
        return f"{since_s / 60:.0f} min since the last run"
    return None


def region_counts(store_dir: Any) -> dict[str, int]:
    """Readings per region in the store (a directory, ``s3://...`` or a ``Store``), counted by DuckDB over the
    sealed rows (nothing opened)."""
    from streams.store.base import connect

    con = connect(store_dir)
    try:
        return {region: n for region, n in con.execute("SELECT region, count(*) FROM readings GROUP BY region").fetchall()
                if region is not None}
    finally:
        con.close()
