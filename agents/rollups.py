"""Rollup wiring: the seal agent hands each sealed reading to ``note``; a timer closes idle cells; partitions
handed to another worker are forgotten; Prometheus reads the rollup lag. The logic is ``streams.rollups``."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, Callable, Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from streams.pipeline import Pipeline

log = logging.getLogger("meterseal.worker")


def note(pipeline: Pipeline) -> Callable[[Any], None]:
    """What the seal agent calls with each outcome (a no-op with rollups off)."""
    keeper = pipeline.rollups
    return keeper.note if keeper is not None else (lambda outcome: None)


def install(app, pipeline: Pipeline, *, interval_s: float) -> None:
    """A timer that closes idle rollup cells (in a thread: it takes each partition's store lock)."""
    if pipeline.rollups is None:
        return
    failpoint = os.environ.get("METERSEAL_TEST_KILL_BEFORE_ROLLUP")  # the rollup crash test only
    if failpoint:
        pipeline.rollups.stop_before_counting = int(failpoint)

    @app.timer(interval=interval_s)
    async def close_idle_rollups() -> None:
        try:
            await asyncio.to_thread(pipeline.rollup_tick)
        except Exception as exc:  # noqa: BLE001 - the next tick tries again; readings are never affected
            log.error("rollups: closing idle cells failed (%s: %s)", type(exc).__name__, exc)

    app.meterseal_collectors.append(RollupCollector(pipeline))


def release(pipeline: Pipeline, partitions: Iterable[int]) -> None:
    if pipeline.rollups is not None:
        pipeline.rollups.release(list(partitions))


class RollupCollector:
    """``meterseal_rollup_pending_leaves{partition}`` (readings stored, not counted yet),
    ``meterseal_rollup_lag_seconds{partition}`` (newest reading minus the oldest open hour's start),
    ``meterseal_rollup_rows_written_total{table}``, ``meterseal_rollup_late_cells_total``."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    def collect(self):
        keeper = self.pipeline.rollups
        pending = GaugeMetricFamily("meterseal_rollup_pending_leaves", "Readings stored but not yet in the rollups",
                                    labels=["partition"])
        lag = GaugeMetricFamily("meterseal_rollup_lag_seconds", "Newest reading time minus the start of the oldest "
                                "hour not yet closed", labels=["partition"])
        for partition, (leaves, seconds) in sorted(keeper.lag().items()):
            pending.add_metric([str(partition)], leaves)
            lag.add_metric([str(partition)], seconds)
        yield pending
        yield lag
        rows = CounterMetricFamily("meterseal_rollup_rows_written", "Rollup rows written", labels=["table"])
        for table, n in sorted(keeper.rows_written.items()):
            rows.add_metric([table], n)
        yield rows
        late = CounterMetricFamily("meterseal_rollup_late_cells", "Rollup cells written as deltas of closed buckets")
        late.add_metric([], keeper.late_cells)
        yield late
