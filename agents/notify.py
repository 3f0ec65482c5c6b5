"""Alert routing wiring: an agent takes the ``alerts`` topic into the notifier (history, grouping), a timer
reloads the rules, flushes due groups and delivers; Prometheus reads what it did. The logic is
``streams.notify``; everything runs in threads, so a slow receiver or a flood never holds up the seal agent."""

from __future__ import annotations

import asyncio
import logging

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

import schemas
from streams.notify.service import Notifier
from streams.pipeline import Pipeline
from streams.settings import Settings

log = logging.getLogger("meterseal.worker")


def install(app, pipeline: Pipeline, settings: Settings) -> Notifier:
    notifier = Notifier.from_settings(settings, pipeline.store, pipeline.index_key, erased=pipeline.erased_token)
    alerts_in = app.topic("alerts", key_type=bytes, key_serializer="raw", value_serializer="raw",
                          partitions=settings.partitions)

    @app.agent(alerts_in, name="notify_alerts")
    async def notify_alerts(stream):
        async for events in stream.take_events(2000, within=0.5):
            taken = []
            for e in events:
                try:
                    taken.append((e.message.partition, e.message.offset, schemas.decode("alert", e.value)))
                except schemas.SchemaError:
                    log.error("alerts/%d@%d: not an Alert record: skipped", e.message.partition, e.message.offset)
            if taken:
                await asyncio.to_thread(notifier.take, taken)

    busy = asyncio.Lock()

    @app.timer(interval=1.0)
    async def notify_tick() -> None:
        if busy.locked():
            return
        async with busy:
            try:
                await asyncio.to_thread(notifier.tick)
            except Exception as exc:  # noqa: BLE001 - the next tick tries again; nothing is lost (the outbox)
                log.error("notifier: %s: %s", type(exc).__name__, exc)

    app.meterseal_collectors.append(NotifyCollector(notifier))
    return notifier


class NotifyCollector:
    """``meterseal_alerts_routed_total{kind,region}``, ``meterseal_notifications_sent_total{type}``,
    ``meterseal_notifications_failed_total{type}`` (failed attempts), ``meterseal_notifications_retrying``,
    ``meterseal_notifications_pending``, ``meterseal_alert_rules_error`` (1 while the rules file has an error)."""

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier

    def collect(self):
        n = self.notifier
        routed = CounterMetricFamily("meterseal_alerts_routed", "Alerts taken by the notifier, by kind and region",
                                     labels=["kind", "region"])
        for (kind, region), count in sorted(n.by_kind_region.items()):
            routed.add_metric([kind, region], count)
        yield routed
        sent = CounterMetricFamily("meterseal_notifications_sent", "Notifications delivered", labels=["type"])
        failed = CounterMetricFamily("meterseal_notifications_failed", "Delivery attempts that failed", labels=["type"])
        for kind in ("webhook", "email"):
            sent.add_metric([kind], n.deliverer.sent[kind])
            failed.add_metric([kind], n.deliverer.failed[kind])
        yield sent
        yield failed
        retrying = GaugeMetricFamily("meterseal_notifications_retrying", "Notifications waiting for another attempt")
        retrying.add_metric([], n.deliverer.retrying())
        yield retrying
        pending = GaugeMetricFamily("meterseal_notifications_pending", "Notifications not delivered yet")
        pending.add_metric([], n.deliverer.pending())
        yield pending
        bad = GaugeMetricFamily("meterseal_alert_rules_error", "1 while the rules file has an error (old rules active)")
        bad.add_metric([], 1 if n.rules_file.error else 0)
        yield bad
