"""The worker's Prometheus metrics, served on 127.0.0.1:``METERSEAL_METRICS_PORT`` (off by default).

Read at scrape time from what the worker already keeps — its ``counts`` (sealed, dead letters by rule,
alerts by kind, DEKs made, checkpoints signed), the seal batches' durations, and Faust's own monitor
(committed and end offset per partition: the consumer lag) — so the hot path gains no metric calls.
Counters only go up within one worker process; Prometheus' ``rate()`` handles restarts.
"""

from __future__ import annotations

from collections import Counter, deque
from typing import Any, Iterable

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class WorkerCollector:
    """A prometheus-client custom collector over one worker's ``counts``, batch durations and Faust monitor."""

    def __init__(self, counts: Counter, batch_seconds: deque, monitor: Any = None) -> None:
        self.counts, self.batch_seconds, self.monitor = counts, batch_seconds, monitor
        self._buckets = [0] * (len(BUCKETS) + 1)
        self._sum = 0.0

    def _drain(self) -> None:
        while self.batch_seconds:
            seconds = self.batch_seconds.popleft()
            self._sum += seconds
            self._buckets[next((i for i, b in enumerate(BUCKETS) if seconds <= b), len(BUCKETS))] += 1

    def collect(self) -> Iterable[Any]:
        c = self.counts
        sealed = CounterMetricFamily("meterseal_readings_sealed", "Readings sealed by this worker")
        sealed.add_metric([], c.get("sealed", 0))
        yield sealed
        dead = CounterMetricFamily("meterseal_dead_letters", "Messages sent to the dead-letter topic, by rule", labels=["rule"])
        alerts = CounterMetricFamily("meterseal_alerts", "Anomaly alerts published, by kind", labels=["kind"])
        for key, n in sorted(c.items()):
            if key.startswith("dead letters:"):
                dead.add_metric([key.split(":", 1)[1]], n)
            elif key.startswith("alerts:"):
                alerts.add_metric([key.split(":", 1)[1]], n)
        yield dead
        yield alerts
        deks = CounterMetricFamily("meterseal_dek_rotations", "Data keys made (each region's DEKs rotate on their own)")
        deks.add_metric([], c.get("deks", 0))
        yield deks
        checkpoints = CounterMetricFamily("meterseal_checkpoints_signed", "Ledger checkpoints signed and published")
        checkpoints.add_metric([], c.get("checkpoints signed", 0))
        yield checkpoints
        self._drain()
        cumulative, buckets = 0, []
        for bound, n in zip([*map(str, BUCKETS), "+Inf"], self._buckets):
            cumulative += n
            buckets.append((bound, cumulative))
        hist = HistogramMetricFamily("meterseal_seal_batch_seconds", "Seal batch duration, first event to broker ack")
        hist.add_metric([], buckets, self._sum)
        yield hist
        lag = GaugeMetricFamily("meterseal_consumer_lag", "End offset minus committed offset, per partition",
                                labels=["topic", "partition"])
        if self.monitor is not None:
            committed = dict(getattr(self.monitor, "tp_committed_offsets", None) or {})
            for tp, end in dict(getattr(self.monitor, "tp_end_offsets", None) or {}).items():
                lag.add_metric([tp.topic, str(tp.partition)], max(0, end - committed.get(tp, 0)))
        yield lag


def serve(port: int, counts: Counter, batch_seconds: deque, monitor: Any = None, extra: Iterable[Any] = ()) -> CollectorRegistry:
    """Start the metrics HTTP server on loopback (a daemon thread) and return its registry. ``extra``: the
    capabilities' own collectors (``app.meterseal_collectors``: rollups, notifications; the key service's unwrap
    counter, ``streams.kms.usage``)."""
    registry = CollectorRegistry()
    registry.register(WorkerCollector(counts, batch_seconds, monitor))
    for collector in extra:
        registry.register(collector)
    start_http_server(port, addr="127.0.0.1", registry=registry)
    return registry
