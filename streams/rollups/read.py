"""Reading rollups: region cells in clear (any staff role), per-meter rows opened with the owner's keys.

Readers add deltas up (a late reading's rows join its bucket's earlier ones), so every function here returns
one row per bucket. Per-meter rows are found by their meter and day tokens and opened through
``streams.unseal.open_table`` — the owner's keyring, the same path as the readings they summarize.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Callable, Iterable

import duckdb

from streams.crypto.tokens import BlindIndex
from streams.store import duck
from streams.unseal import SEALED_COLUMNS, open_table

PERIODS = ("hour", "day")


def region_view_sql(min_meters: int) -> str:
    """``usage_hourly_region``: partitions added up, cells of fewer than ``min_meters`` distinct meters left out."""
    return f"""CREATE OR REPLACE VIEW usage_hourly_region AS
SELECT make_timestamp(hour_ms * 1000) AS hour, region, category, CAST(sum(meters) AS BIGINT) AS meters,
       CAST(sum(readings) AS BIGINT) AS readings, sum(kwh_sum) AS kwh_sum, min(kwh_min) AS kwh_min,
       max(kwh_max) AS kwh_max
FROM rollup_region GROUP BY hour_ms, region, category HAVING sum(meters) >= {int(min_meters)}"""


def meter_view_sql(period: str) -> str:
    """``usage_hourly_meter`` / ``usage_daily_meter`` over ``unseal()`` (registered by ``register_functions``)."""
    cols = ", ".join(SEALED_COLUMNS)
    name = {"hour": "usage_hourly_meter", "day": "usage_daily_meter"}[period]
    return f"""CREATE OR REPLACE VIEW {name} AS
WITH opened AS (SELECT unseal({cols}) AS plain FROM rollup_meter WHERE period = '{period}')
SELECT strptime(plain->>'start', '%Y-%m-%dT%H:%M:%S+00:00') AS {period}, plain->>'meter_id' AS meter_id,
       plain->>'account_id' AS account_id, plain->>'region' AS region, plain->>'category' AS category,
       CAST(sum(CAST(plain->>'readings' AS BIGINT)) AS BIGINT) AS readings,
       sum(CAST(plain->>'kwh_sum' AS DOUBLE)) AS kwh_sum, min(CAST(plain->>'kwh_min' AS DOUBLE)) AS kwh_min,
       max(CAST(plain->>'kwh_max' AS DOUBLE)) AS kwh_max
FROM opened GROUP BY ALL"""


def create_views(con: duckdb.DuckDBPyConnection, *, min_meters: int, can_open: bool) -> None:
    """The rollup views on a connection that has the store's tables (``streams.store.connect``); the per-meter
    ones only where ``unseal()`` can open (the owner's key)."""
    con.execute(region_view_sql(min_meters))
    if can_open:
        for period in PERIODS:
            con.execute(meter_view_sql(period))


def region_hourly(con: duckdb.DuckDBPyConnection, start: dt.datetime, end: dt.datetime, *, min_meters: int,
                  region: str | None = None) -> list[dict[str, Any]]:
    """Region cells with ``start <= hour < end`` (UTC), suppressed below ``min_meters``, ordered by hour."""
    sql = ("SELECT hour_ms, region, category, sum(meters) AS meters, sum(readings) AS readings, sum(kwh_sum) AS kwh_sum,"
           " min(kwh_min) AS kwh_min, max(kwh_max) AS kwh_max FROM rollup_region WHERE hour_ms >= ? AND hour_ms < ?"
           + (" AND region = ?" if region else "") + " GROUP BY hour_ms, region, category HAVING sum(meters) >= ?"
           " ORDER BY hour_ms, region, category")
    params: list[Any] = [_ms(start), _ms(end)] + ([region] if region else []) + [int(min_meters)]
    cur = con.execute(sql, params)
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def region_connection(store: Any) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with just the ``rollup_region`` view (what the region chart reads): binding every
    table's view, as ``streams.store.connect`` does, reads the footers of every readings segment first. A cursor on
    the process's shared database (``streams.store.duck``: opening a database of its own cost more than the query)
    with a TEMP view, the caller's alone; close it when done."""
    con = duck.cursor()
    if hasattr(store, "segments"):  # local segments
        if store.segments("rollup_region"):
            pattern = str(store.root / "rollup_region" / "p*" / "*.parquet").replace("'", "''")
            con.execute(f"CREATE TEMP VIEW rollup_region AS SELECT * FROM read_parquet('{pattern}', union_by_name=true)")
            return con
    else:  # Iceberg: the table's current snapshot
        try:
            con.register("_rollup_region", store.arrow("rollup_region"))
            con.execute("CREATE TEMP VIEW rollup_region AS SELECT * FROM _rollup_region")
            return con
        except Exception:  # noqa: BLE001 - no such table yet: empty
            pass
    con.execute("CREATE TEMP VIEW rollup_region AS SELECT CAST(NULL AS BIGINT) AS hour_ms, CAST(NULL AS VARCHAR) AS region, "
                "CAST(NULL AS VARCHAR) AS category, CAST(NULL AS BIGINT) AS meters, CAST(NULL AS BIGINT) AS readings, "
                "CAST(NULL AS DOUBLE) AS kwh_sum, CAST(NULL AS DOUBLE) AS kwh_min, CAST(NULL AS DOUBLE) AS kwh_max "
                "WHERE false")
    return con


def region_slots(con: duckdb.DuckDBPyConnection, start: dt.datetime, end: dt.datetime, width_s: int, *,
                 min_meters: int) -> tuple[list[tuple[int, str, float, int]], int]:
    """Region kWh and readings per chart slot of ``width_s`` seconds from ``start`` (hour cells below ``min_meters``
    meters left out), summed by DuckDB: ``([(slot, region, kwh, readings)], suppressed cells)``. What the
    operator's chart draws, in one query whatever the range."""
    t0, t1 = int(start.timestamp()) * 1000, int(end.timestamp()) * 1000
    rows = con.execute(
        "WITH cells AS (SELECT hour_ms, region, category, sum(meters) AS meters, sum(readings) AS readings, "
        "sum(kwh_sum) AS kwh FROM rollup_region WHERE hour_ms >= ? AND hour_ms < ? GROUP BY hour_ms, region, category) "
        "SELECT CAST((hour_ms - ?) // ? AS BIGINT) AS slot, region, sum(kwh), CAST(sum(readings) AS BIGINT), "
        "CAST(count(*) FILTER (WHERE meters < ?) AS BIGINT) FROM cells GROUP BY ALL ORDER BY slot, region",
        [t0, t1, t0, int(width_s) * 1000, int(min_meters)]).fetchall()
    suppressed = sum(r[4] for r in rows)
    kept = con.execute(
        "WITH cells AS (SELECT hour_ms, region, category, sum(meters) AS meters, sum(readings) AS readings, "
        "sum(kwh_sum) AS kwh FROM rollup_region WHERE hour_ms >= ? AND hour_ms < ? GROUP BY hour_ms, region, category "
        "HAVING sum(meters) >= ?) SELECT CAST((hour_ms - ?) // ? AS BIGINT) AS slot, region, sum(kwh), "
        "CAST(sum(readings) AS BIGINT) FROM cells GROUP BY ALL ORDER BY slot, region",
        [t0, t1, int(min_meters), t0, int(width_s) * 1000]).fetchall() if suppressed else [r[:4] for r in rows]
    return [tuple(r) for r in kept], suppressed


def newest_hour(con: duckdb.DuckDBPyConnection) -> dt.datetime | None:
    found = con.execute("SELECT max(hour_ms) FROM rollup_region").fetchone()[0]
    return None if found is None else dt.datetime.fromtimestamp(found / 1000, dt.timezone.utc)


def meter_rows_sql(index: BlindIndex, meter_ids: Iterable[str], period: str, first: dt.date,
                   last: dt.date) -> tuple[str, list[Any]]:
    """SQL (and parameters) for the sealed ``rollup_meter`` rows of some meters over days ``first..last``."""
    meters = sorted(set(meter_ids))
    cover = index.range_tokens(first, last)
    parts, params = [], [period] + [index.meter(m) for m in meters]
    for column, tokens in (("year_tok", cover.year), ("month_tok", cover.month), ("day_tok", cover.day)):
        if tokens:
            parts.append(f"{column} IN ({', '.join('?' * len(tokens))})")
            params.extend(tokens)
    sql = (f"SELECT {', '.join(SEALED_COLUMNS)} FROM rollup_meter WHERE period = ? AND meter_tok IN "
           f"({', '.join('?' * len(meters))}) AND ({' OR '.join(parts) or 'TRUE'})")
    return sql, params


def meter_usage(con: duckdb.DuckDBPyConnection, keys: Callable[[bytes], Any], index: BlindIndex,
                meter_ids: Iterable[str], period: str, start: dt.datetime, end: dt.datetime) -> list[dict[str, Any]]:
    """One row per (meter, bucket) with ``start <= bucket start < end``: meter_id, start (aware UTC datetime),
    readings, kwh_sum, kwh_min, kwh_max — the meters' rollup rows opened and their deltas added up."""
    meter_ids = list(meter_ids)
    if not meter_ids or end <= start:
        return []
    if period not in PERIODS:
        raise ValueError(f"period must be one of {PERIODS}")
    sql, params = meter_rows_sql(index, meter_ids, period, start.date(), (end - dt.timedelta(microseconds=1)).date())
    table = con.sql(sql, params=params).to_arrow_table()
    plains = open_table(table, keys, index) if table.num_rows else []
    return fold_plains(plains, start, end)


def all_meter_usage(con: duckdb.DuckDBPyConnection, keys: Callable[[bytes], Any], index: BlindIndex, period: str,
                    start: dt.datetime, end: dt.datetime) -> list[dict[str, Any]]:
    """``meter_usage`` for every meter (the DP engine's per-meter hourly sums): rows found by day tokens alone."""
    cover = index.range_tokens(start.date(), (end - dt.timedelta(microseconds=1)).date())
    parts, params = [], [period]
    for column, tokens in (("year_tok", cover.year), ("month_tok", cover.month), ("day_tok", cover.day)):
        if tokens:
            parts.append(f"{column} IN ({', '.join('?' * len(tokens))})")
            params.extend(tokens)
    table = con.sql(f"SELECT {', '.join(SEALED_COLUMNS)} FROM rollup_meter WHERE period = ? AND "
                    f"({' OR '.join(parts) or 'TRUE'})", params=params).to_arrow_table()
    return fold_plains(open_table(table, keys, index) if table.num_rows else [], start, end)


def fold_plains(plains: Iterable[dict[str, Any]], start: dt.datetime, end: dt.datetime) -> list[dict[str, Any]]:
    """Opened ``rollup`` bodies added up per (meter, bucket), those in ``[start, end)``, ordered."""
    cells: dict[tuple[str, str], dict[str, Any]] = {}
    for p in plains:
        bucket = dt.datetime.fromisoformat(p["start"])
        if not start <= bucket < end:
            continue
        cell = cells.get((p["meter_id"], p["start"]))
        if cell is None:
            cells[(p["meter_id"], p["start"])] = {"meter_id": p["meter_id"], "start": bucket, "readings": p["readings"],
                                                  "kwh_sum": p["kwh_sum"], "kwh_min": p["kwh_min"], "kwh_max": p["kwh_max"],
                                                  "region": p["region"], "category": p["category"]}
        else:
            cell["readings"] += p["readings"]
            cell["kwh_sum"] += p["kwh_sum"]
            cell["kwh_min"] = min(cell["kwh_min"], p["kwh_min"])
            cell["kwh_max"] = max(cell["kwh_max"], p["kwh_max"])
    return [cells[k] for k in sorted(cells, key=lambda k: (k[0], cells[k]["start"]))]


def interval_sums(con: duckdb.DuckDBPyConnection, keys: Callable[[bytes], Any], index: BlindIndex, meter_id: str,
                  start: dt.datetime, end: dt.datetime, interval_s: int) -> list[tuple[dt.datetime, float, int]]:
    """A meter's consumption in intervals of ``interval_s`` (3600, 86400, or a multiple of an hour) from its
    rollups: (interval start, kWh, readings), for Green Button feeds of coarser intervals than the readings'.
    Intervals are aligned to ``start``; those without readings are left out."""
    if interval_s % 3600:
        raise ValueError("rollup intervals are whole hours (3600 s, 86400 s, ...)")
    period = "day" if interval_s % 86400 == 0 and start.timestamp() % 86400 == 0 else "hour"
    out: dict[dt.datetime, list] = {}
    for cell in meter_usage(con, keys, index, [meter_id], period, start, end):
        slot = start + dt.timedelta(seconds=(cell["start"] - start).total_seconds() // interval_s * interval_s)
        acc = out.setdefault(slot, [0.0, 0])
        acc[0] += cell["kwh_sum"]
        acc[1] += cell["readings"]
    return [(slot, kwh, n) for slot, (kwh, n) in sorted(out.items())]


def _ms(when: dt.datetime) -> int:
    return int(when.timestamp() * 1000)
