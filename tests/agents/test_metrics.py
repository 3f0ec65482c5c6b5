"""The worker's metrics collector: counts, rules, kinds, batch histogram and lag, in Prometheus text."""

from __future__ import annotations

from collections import Counter, deque, namedtuple
from types import SimpleNamespace

from prometheus_client import CollectorRegistry, generate_latest

from agents.metrics import WorkerCollector


def test_collector_reports_what_the_worker_counted():
    counts = Counter({"sealed": 40, "dead letters:kwh": 3, "dead letters:region": 1, "alerts:spike": 2,
                      "deks": 5, "checkpoints signed": 7})
    seconds = deque([0.004, 0.03, 0.03, 7.0])
    tp = namedtuple("TP", "topic partition")("readings.raw", 2)  # what Faust keys its offsets by
    monitor = SimpleNamespace(tp_committed_offsets={tp: 90}, tp_end_offsets={tp: 100})
    registry = CollectorRegistry()
    registry.register(WorkerCollector(counts, seconds, monitor))
    text = generate_latest(registry).decode()
    assert "meterseal_readings_sealed_total 40.0" in text
    assert 'meterseal_dead_letters_total{rule="kwh"} 3.0' in text and 'rule="region"' in text
    assert 'meterseal_alerts_total{kind="spike"} 2.0' in text
    assert "meterseal_dek_rotations_total 5.0" in text and "meterseal_checkpoints_signed_total 7.0" in text
    assert 'meterseal_seal_batch_seconds_bucket{le="0.005"} 1.0' in text
    assert 'meterseal_seal_batch_seconds_bucket{le="0.05"} 3.0' in text
    assert 'meterseal_seal_batch_seconds_bucket{le="+Inf"} 4.0' in text and "meterseal_seal_batch_seconds_count 4.0" in text
    assert 'meterseal_consumer_lag{partition="2",topic="readings.raw"} 10.0' in text
    counts["sealed"] += 1
    seconds.append(0.2)
    again = generate_latest(registry).decode()
    assert "meterseal_readings_sealed_total 41.0" in again and "meterseal_seal_batch_seconds_count 5.0" in again
