import datetime as dt
import itertools

import duckdb
import pytest

from streams.ingest import sources
from streams.exceptions import ConfigError
from streams.validate import check_bill


def test_seed_csv_loads_exactly(seed_csv):
    rows = list(sources.read_bills_csv(seed_csv))
    assert len(rows) == 1000
    # an independent parser (DuckDB's CSV reader, all columns as text) agrees on every field
    ref = duckdb.sql(f"SELECT * FROM read_csv('{seed_csv}', all_varchar=true, header=true)").fetchall()
    assert [tuple(r.values()) for r in rows] == ref
    assert rows[0]["Address"] == "H.No. 114, Chahal Street, Purnia 567345"
    assert all(r["Phone No."].startswith("+91 ") for r in rows)
    assert all(check_bill(r) for r in rows)  # every seed row is a valid bill


def test_wrong_csv_format_is_named(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ConfigError, match="missing column"):
        list(sources.read_bills_csv(path))


def test_generated_bills_round_trip_through_csv(tmp_path):
    rows = sources.generated_bills(50)
    path = sources.write_bills_csv(tmp_path / "b.csv", rows)
    assert list(sources.read_bills_csv(path)) == rows
    assert any("," in r["Address"] for r in rows)
    assert all(check_bill(r) for r in rows)


def test_uci_fleet_mapping():
    readings = list(sources.uci_readings(meters=4, limit=400))
    assert len(readings) == 400
    by_meter = {}
    for r in readings:
        by_meter.setdefault(r["meter_id"], []).append(r)
    assert sorted(by_meter) == [f"UCI-{k:05d}" for k in range(4)]
    first = readings[0]
    assert first["ts"] == "2006-12-16T17:24:00Z" and first["kwh"] == round(4.216 / 60, 6)
    for k, rs in enumerate(by_meter.values()):
        assert len(rs) == 100
        regs = [r["register_kwh"] for r in rs]
        assert regs == sorted(regs)
        stamps = [dt.datetime.fromisoformat(r["ts"].rstrip("Z")) for r in rs]
        assert all(b - a == dt.timedelta(minutes=1) for a, b in itertools.pairwise(stamps)) or k > 0
    # whole-week shifts keep each meter's weekday and hour; all meters report in the same weeks
    starts = [dt.datetime.fromisoformat(rs[0]["ts"].rstrip("Z")) for rs in by_meter.values()]
    assert max(starts) - min(starts) < dt.timedelta(days=7)
    assert {r["region"] for r in readings} == {"north", "south", "east", "west"}


def test_simulated_fleet_has_profiles_labels_and_no_future():
    end = dt.datetime(2025, 6, 2, 12, 0, tzinfo=dt.timezone.utc)
    readings = list(sources.simulate(meters=10, readings=5000, anomaly_rate=0.02, end=end, seed=1))
    assert len(readings) == 5000
    assert max(r["ts"] for r in readings) <= end.isoformat()
    labels = {r.get("label") for r in readings}
    assert set(sources.ANOMALY_KINDS) <= labels
    assert {r["category"] for r in readings} == set(sources.CATEGORIES)
    # deterministic for a seed
    assert readings == list(sources.simulate(meters=10, readings=5000, anomaly_rate=0.02, end=end, seed=1))
    assert readings != list(sources.simulate(meters=10, readings=5000, anomaly_rate=0.02, end=end, seed=2))
    # domestic evening peak is above the small hours
    dom = [r for r in readings if r["category"] == "Domestic" and "label" not in r]
    hour = lambda h: [r["kwh"] for r in dom if dt.datetime.fromisoformat(r["ts"]).hour == h]
    assert sum(hour(19)) / len(hour(19)) > 1.5 * sum(hour(3)) / len(hour(3))


def test_simulation_arguments_are_checked():
    with pytest.raises(ConfigError):
        list(sources.simulate(meters=0))
