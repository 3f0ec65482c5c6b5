"""The console's own Prometheus metrics (``GET /metrics``): requests, latency, logins, SSE viewers, alerts, and the
key-service unwraps it asked for (``meterseal_kms_unwraps_total``).

Counters only, no data: a scraper learns how busy the console is, not what it shows. Each console has
its own registry, so two consoles in one process (tests) do not share counts.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class ConsoleMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("meterseal_console_requests", "HTTP requests by route template and status",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("meterseal_console_request_seconds", "HTTP request latency by route template",
                                 ["route"], registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
        self.logins = Counter("meterseal_console_logins", "Login attempts by outcome (ok, failed, throttled)",
                              ["outcome"], registry=self.registry)
        self.alerts = Counter("meterseal_console_alerts_received", "Alerts read from the alerts topic",
                              registry=self.registry)
        self.viewers = Gauge("meterseal_console_sse_viewers", "Open live-alert streams", registry=self.registry)
        self._kms: Any = None  # the keys whose unwraps are served as meterseal_kms_unwraps_total

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def exposition(self, state: Any) -> tuple[bytes, str]:
        if state.hub is not None:
            self.viewers.set(state.hub.viewers)
        keys = getattr(state.vault, "keys", None)
        if keys is not None and self._kms is not keys:  # the vault's unwrap counter (streams.kms.usage), once
            self.registry.register(keys.usage.collector())
            self._kms = keys
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
