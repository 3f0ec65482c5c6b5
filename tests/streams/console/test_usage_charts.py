"""The console's consumption charts read the rollups: a chart request that opened a reading would fail here."""

from __future__ import annotations

import pytest

from streams.store.query import Reader

from .conftest import login


@pytest.fixture
def readings_forbidden(monkeypatch):
    """Opening or searching readings raises: the charts must not need to."""
    def refuse(*_args, **_kwargs):
        raise AssertionError("a chart opened readings")

    monkeypatch.setattr(Reader, "search", refuse)
    monkeypatch.setattr(Reader, "open_many", refuse)
    monkeypatch.setattr(Reader, "open_hits", refuse)


def test_region_chart_reads_rollups(served, readings_forbidden):
    olga = login(served.url, "olga")
    for range_ in ("24h", "7d", "12m"):
        r = olga.get("/api/regions/usage", params={"range": range_})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["source"] == "rollups" and body["readings"] > 0
    week = olga.get("/api/regions/usage", params={"from": "2024-03-01", "to": "2024-03-14"}).json()
    assert week["step_s"] == 86400 and len(week["x"]) == 14
    # every hourly reading of the 14 days is in the chart: 3 meters x 24 x 14
    assert week["readings"] == 3 * 24 * 14
    assert sum(week["series"]["north"]) == pytest.approx(sum(round(0.2 + h / 100, 3) for h in range(24)) * 14, rel=1e-3)


def test_customer_chart_reads_rollups_in_hours_days_and_months(served, readings_forbidden):
    alice = login(served.url, "alice")
    day = alice.get("/api/meters/M-ALICE/usage", params={"period": "day"}).json()
    assert day["source"] == "rollups" and len(day["current"]) == 24 and day["end"] == "2024-03-14"
    assert day["total"] == pytest.approx(sum(round(0.2 + h / 100, 3) for h in range(24)), rel=1e-3)
    hours = alice.get("/api/meters/M-ALICE/usage", params={"step": "hour", "from": "2024-03-01", "to": "2024-03-02"}).json()
    assert len(hours["kwh"]) == 48 and all(n == 1 for n in hours["readings"])
    months = alice.get("/api/meters/M-ALICE/usage", params={"step": "month", "from": "2023-03-15",
                                                            "to": "2025-03-14"}).json()
    assert len(months["x"]) == 25 and sum(months["readings"]) == 24 * 14
    too_long = alice.get("/api/meters/M-ALICE/usage", params={"step": "day", "from": "2020-01-01", "to": "2024-03-14"})
    assert too_long.status_code == 409 and "2 years" in too_long.json()["error"]
    assert alice.get("/api/meters/M-BOB/usage", params={"step": "day"}).status_code == 404
