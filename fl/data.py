"""A region's training data, read from the sealed store by that region's client and nobody else's.

The client asks the store only for rows whose ``region`` column is its own (the region is bound into
every record's AEAD associated data, so a row relabelled to another region does not open) and opens
them with the keys it holds: its region key (``region_readings_with_key``), which opens no other
region's records, or — in an owner's all-regions run without region keys — the owner's keys. Readings become per-meter series, then forecasting windows (``fl.task``).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np

from streams.store.query import Query, Reader
from streams.keys.regions import RegionKey, RegionKeyring
from streams.unseal import SEALED_COLUMNS, open_table
from streams.store.base import connect, open_store

from fl import task


@dataclass
class RegionData:
    region: str
    train: tuple[np.ndarray, np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray, np.ndarray]
    records: int  # readings this client opened
    meters: int


def region_readings(reader: Reader, region: str) -> list[dict[str, Any]]:
    """Every reading of ``region`` in the store, opened (AEAD-verified) with the owner's keys."""
    return reader.open_many(reader.search(Query(region=region), kinds=["readings"]))


def region_readings_with_key(store_dir: Any, key: RegionKey) -> list[dict[str, Any]]:
    """Every reading of ``key.region``, opened with the region's own key (``streams.keys.regions``): no owner key
    and no index key. Raises ``InvalidEnvelope`` if a row of the region does not open with it (a DEK made
    before the region had a key and not granted: ``meterseal keys region grant``)."""
    store = open_store(store_dir, create=False)  # a directory, s3://... or a Store
    con = duckdb.connect()
    if hasattr(store, "pruned"):  # object storage: Iceberg reads only the files whose region bounds match
        con.register("readings", store.pruned("readings", region=key.region))
    else:
        con = connect(store, con)
    try:
        table = con.sql(f"SELECT {', '.join(SEALED_COLUMNS)} FROM readings WHERE region = ? "
                        "ORDER BY topic_partition, leaf_index", params=[key.region]).to_arrow_table()
    finally:
        con.close()
    return open_table(table, RegionKeyring(store, key))


def windows_of(readings: list[dict[str, Any]], *, step_s: float) -> tuple[list[tuple[np.ndarray, np.ndarray, np.ndarray]], int]:
    """Each meter's windows (``task.windows``), and how many meters there were."""
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in readings:
        series[r["meter_id"]].append((dt.datetime.fromisoformat(r["ts"]).timestamp(), r["kwh"]))
    parts = [task.windows(sorted(s), step_s=step_s) for s in series.values()]
    return parts, len(series)


def region_data(readings: list[dict[str, Any]], region: str, *, step_s: float = 3600.0, test: float = 0.2) -> RegionData:
    parts, meters = windows_of(readings, step_s=step_s)
    trains, tests = zip(*(task.split(*p, test=test) for p in parts)) if parts else ((), ())

    def cat(pieces):
        if not pieces:
            return (np.zeros((0, task.WIDTH), np.float32), np.zeros(0, np.float32), np.zeros(0, np.float32))
        return tuple(np.concatenate([p[i] for p in pieces]) for i in range(3))

    return RegionData(region, cat(trains), cat(tests), len(readings), meters)
