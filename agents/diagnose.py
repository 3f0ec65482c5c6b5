"""What a worker is waiting on, written to its log on ``kill -USR2 <pid>``: the Faust consumer's flow and
partition sets, aiokafka's positions and paused partitions, each agent's queued events, the seal agent's
held events (``InOrder``) and its store queue (``StoreBehind``). For a worker that looks idle while its
partitions have lag; Faust's own ``kill -USR1`` prints every task's stack, which stops at async generators
(where the agents wait)."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("meterseal.worker")


def _name(tp) -> str:
    return f"{tp.topic}/{tp.partition}"


def _tps(tps) -> str:
    if tps is None:
        return "None"
    return ", ".join(sorted(_name(tp) for tp in tps)) or "-"


def consumer_state(app, in_order=None, store_behind=None) -> list[str]:
    lines = []
    consumer = app.consumer
    lines.append(f"flow active: {getattr(consumer, 'flow_active', '?')}, in recovery: {app.in_recovery}, "
                 f"rebalancing: {app.rebalancing}")
    for name in ("_active_partitions", "_paused_partitions", "_buffered_partitions"):
        lines.append(f"{name.strip('_')}: {_tps(getattr(consumer, name, None))}")
    for name in ("_read_offset", "_committed_offset"):
        offsets: dict[Any, Any] = getattr(consumer, name, {}) or {}
        lines.append(f"{name.strip('_')}: " + ", ".join(
            f"{_name(tp)}={off}" for tp, off in sorted(offsets.items()) if not tp.topic.startswith("meterseal-")))
    acked: dict[Any, Any] = getattr(consumer, "_acked", {}) or {}
    lines.append("acked, not yet committed: " + ", ".join(f"{_name(tp)}={len(v)}" for tp, v in sorted(acked.items()) if v))
    aio = getattr(getattr(consumer, "_thread", None), "_consumer", None)
    sub = getattr(getattr(aio, "_subscription", None), "subscription", None)
    assignment = getattr(sub, "assignment", None)
    if assignment is not None:
        states = []
        for tp in sorted(assignment.tps):
            if tp.topic.startswith("meterseal-"):
                continue
            state = assignment.state_value(tp)
            position = state.position if state.has_valid_position else "none"
            states.append(f"{_name(tp)}@{position}{' paused' if state.paused else ''}")
        lines.append("aiokafka positions: " + ", ".join(states))
    for agent in app.agents.values():
        queue = getattr(getattr(agent, "channel", None), "queue", None)
        lines.append(f"agent {agent.name}: {queue.qsize() if queue is not None else '?'} event(s) queued")
    if in_order is not None:
        lines.append(f"in order: next {_offsets(in_order._next)}; mending {_offsets(in_order._mending)}")
    if store_behind is not None:
        lines.append(f"store behind: {len(store_behind._queue)} batch(es), {store_behind._queued_rows} row(s) "
                     f"queued, writing: {store_behind._writing}, writer task: {store_behind._task}")
    return lines


def _offsets(mapping) -> str:
    return ", ".join(f"{_name(tp)}={v}" for tp, v in sorted(mapping.items())) or "-"


def log_state(app, in_order=None, store_behind=None) -> None:
    try:
        lines = consumer_state(app, in_order, store_behind)
    except Exception as exc:  # noqa: BLE001 - a diagnostic must never take the worker down
        lines = [f"(could not read the consumer state: {type(exc).__name__}: {exc})"]
    log.warning("worker state (SIGUSR2):\n  %s", "\n  ".join(lines))
