"""The rollup and notifier collectors: lag, rows written, alerts routed, notifications sent/failed/retrying."""

from __future__ import annotations

import json
from types import SimpleNamespace

from prometheus_client import CollectorRegistry, generate_latest

from agents.notify import NotifyCollector
from agents.rollups import RollupCollector
from streams.notify.service import Notifier
from streams.store.segments import SegmentStore


def test_rollup_collector_reports_lag_and_rows():
    keeper = SimpleNamespace(lag=lambda: {0: (12, 5400.0), 3: (0, 0.0)},
                             rows_written={"rollup_meter": 40, "rollup_region": 6}, late_cells=2)
    registry = CollectorRegistry()
    registry.register(RollupCollector(SimpleNamespace(rollups=keeper)))
    text = generate_latest(registry).decode()
    assert 'meterseal_rollup_pending_leaves{partition="0"} 12.0' in text
    assert 'meterseal_rollup_lag_seconds{partition="0"} 5400.0' in text
    assert 'meterseal_rollup_rows_written_total{table="rollup_meter"} 40.0' in text
    assert "meterseal_rollup_late_cells_total 2.0" in text


def test_notify_collector_counts_routing_and_delivery(tmp_path, monkeypatch):
    rules = tmp_path / "rules.toml"
    rules.write_text('[[receivers]]\nname = "down"\nwebhook_url = "http://127.0.0.1:9/"\n\n'
                     '[[routes]]\nreceiver = "down"\ngroup_by = ["kind"]\ngroup_wait = "0s"\n')
    clock = {"now": 1.8e9}
    n = Notifier(SegmentStore(tmp_path / "store"), bytes(32), tmp_path / "state.sqlite3", rules_path=str(rules),
                 clock=lambda: clock["now"])
    alert = {"format": 1, "alert_id": "a1", "meter_tok": "ab" * 16, "ts": "2025-03-01T00:00:00+00:00", "kind": "theft",
             "score": 0.9, "severity": "warning", "reason": "low", "region": "north", "kwh": None,
             "ingested_at_ms": None, "detected_at_ms": int(1.8e12)}
    assert n.take([(0, 0, alert)]) == 1
    n.tick()  # port 9 refuses: one failed attempt, kept for a retry
    registry = CollectorRegistry()
    registry.register(NotifyCollector(n))
    text = generate_latest(registry).decode()
    assert 'meterseal_alerts_routed_total{kind="theft",region="north"} 1.0' in text
    assert 'meterseal_notifications_failed_total{type="webhook"} 1.0' in text
    assert "meterseal_notifications_retrying 1.0" in text and "meterseal_notifications_pending 1.0" in text
    assert "meterseal_alert_rules_error 0.0" in text
    assert json.loads(n.state.query("SELECT payload FROM outbox")[0][0])["groupLabels"] == {"kind": "theft"}
