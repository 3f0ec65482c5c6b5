"""The worker's metrics collector: counts, rules, kinds, batch histogram and lag, in Prometheus text."""

from __future__ import annotations

from collections import Counter, deque, namedtuple
from types import SimpleNamespace

import pytest
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


@pytest.mark.broker
def test_a_worker_serves_its_metrics(tmp_path):
    """A real worker on the embedded broker with METERSEAL_METRICS_PORT: the counts move as it seals."""
    import os

    import httpx

    from streams.ingest.broker import EmbeddedBroker, Producer, ensure_topics
    from streams.keys.keystore import Keystore
    from tests.rig import PASSPHRASE, Rig
    from tests.streams.console.conftest import free_port

    Keystore.init(tmp_path, PASSPHRASE)
    port = free_port()
    with EmbeddedBroker(port=free_port(), log_path=tmp_path / "broker.log") as broker:
        ensure_topics(broker.bootstrap, 4)
        environ = {**os.environ, "METERSEAL_DATA_DIR": str(tmp_path), "METERSEAL_BROKER": broker.url,
                   "METERSEAL_PASSPHRASE": PASSPHRASE, "METERSEAL_METRICS_PORT": str(port)}
        rig = Rig(tmp_path, broker, environ)
        try:
            producer = Producer(broker.bootstrap)
            for i in range(30):
                producer.send("readings.raw", key=b"M-1", value=(
                    '{"meter_id": "M-1", "ts": "2024-01-01T00:%02d:00Z", "kwh": 0.5, "register_kwh": %d, '
                    '"region": "north", "category": "Domestic"}' % (i, 100 + i)).encode())
            producer.send("readings.raw", key=b"M-2", value=b'{"meter_id": "M-2", "ts": "2024-01-01T00:00:00Z", '
                          b'"kwh": -1, "register_kwh": 5, "region": "north", "category": "Domestic"}')
            producer.close()

            def scraped():
                try:
                    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
                except httpx.HTTPError:
                    return None
                last["text"] = text
                # (the batch histogram counts a seal batch when it ends, after its readings were counted)
                done = "meterseal_readings_sealed_total 30.0" in text and "seal_batch_seconds_count 0.0" not in text
                return text if done else None

            last = {"text": ""}
            try:
                text = rig.wait_for(scraped, "30 sealed readings in the worker's metrics")
            except AssertionError as exc:
                raise AssertionError(f"last scrape:\n{last['text'][:3000]}") from exc
            assert 'meterseal_dead_letters_total{rule="kwh"} 1.0' in text
            assert "meterseal_dek_rotations_total" in text and "meterseal_seal_batch_seconds_count" in text
            assert float(text.split("meterseal_seal_batch_seconds_count ")[1].split()[0]) >= 1
        finally:
            rig.stop_worker()
