"""Fleet status for the operator page and ``GET /api/status``: store rates, dead letters, broker and lag.

Consumer lag is the worker group's committed offset against each partition's end offset, read with a
short timeout; the result is cached for a few seconds so many open operator pages cost the broker one
query. (The bundled Tansu build reports end offsets per record batch, so its lag reads a little high.)
"""

from __future__ import annotations

import threading
import time
from typing import Any

# (not readings.sealed: the seal agent stores its own readings, and no worker consumes that topic)
LAG_TOPICS = ("readings.raw", "bills.raw", "bills.sealed")
_CACHE_S = 3.0
_cache: dict[str, Any] = {}
_lock = threading.Lock()


def consumer_lag(bootstrap: str, group: str, *, topics: tuple[str, ...] = LAG_TOPICS, timeout: float = 2.0) -> dict[str, Any]:
    """``{"reachable": bool, "partitions": [{"topic", "partition", "committed", "end", "lag"}], "error"?}``."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                         "log_level": 0, "socket.timeout.ms": int(timeout * 1000)})
    try:
        meta = consumer.list_topics(timeout=timeout).topics
        parts = [TopicPartition(t, p) for t in topics if t in meta for p in sorted(meta[t].partitions)]
        committed = consumer.committed(parts, timeout=timeout) if parts else []
        rows = []
        for tp in committed:
            end = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=timeout)[1]
            done = tp.offset if tp.offset >= 0 else 0
            rows.append({"topic": tp.topic, "partition": tp.partition, "committed": tp.offset if tp.offset >= 0 else None,
                         "end": end, "lag": max(0, end - done)})
        return {"reachable": True, "partitions": rows}
    except Exception as exc:  # noqa: BLE001 - any client error: the broker is not reachable now
        return {"reachable": False, "partitions": [], "error": f"{type(exc).__name__}: {exc}"}
    finally:
        consumer.close()


def fleet_status(state: Any, *, now: float | None = None) -> dict[str, Any]:
    now = time.time() if now is None else now
    with _lock:
        hit = _cache.get(id(state))
        if hit and now - hit[0] < _CACHE_S:
            return hit[1]
    out: dict[str, Any] = {"generated_at_ms": int(now * 1000)}
    out["store"] = state.vault.fleet(now_ms=int(now * 1000)) if state.vault else None
    out["broker"] = (consumer_lag(state.broker, state.app_id) if state.broker
                     else {"reachable": False, "partitions": [], "error": "no broker configured"})
    hub = state.hub
    out["alert_feed"] = {"state": hub.state if hub else "not configured", "received": hub.received if hub else 0,
                         "viewers": hub.viewers if hub else 0}
    with _lock:
        _cache[id(state)] = (now, out)
    return out
