"""The live alert feed: one Kafka consumer of the ``alerts`` topic, fanned out to every SSE viewer.

A thread reads the topic (``follow`` yields decoded alerts, forever) and keeps the last ``keep`` alerts;
each viewer has its own bounded asyncio queue and a filter (a customer's meter tokens, region, kind,
severity). One consumer for all viewers keeps the broker's load independent of how many people watch.
A viewer too slow to keep up loses its oldest queued alerts, never blocks the others.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator


@dataclass(frozen=True)
class AlertFilter:
    """Which alerts a viewer sees. ``meter_tokens`` None: every meter (staff); a set: only those (a customer)."""

    meter_tokens: frozenset[str] | None = None
    regions: frozenset[str] = frozenset()
    kinds: frozenset[str] = frozenset()
    severities: frozenset[str] = frozenset()
    since_ms: int | None = None

    def __call__(self, alert: dict[str, Any]) -> bool:
        return ((self.meter_tokens is None or alert.get("meter_tok") in self.meter_tokens)
                and (not self.regions or alert.get("region") in self.regions)
                and (not self.kinds or alert.get("kind") in self.kinds)
                and (not self.severities or alert.get("severity") in self.severities)
                and (self.since_ms is None or alert.get("detected_at_ms", 0) >= self.since_ms))


@dataclass(eq=False)
class _Viewer:
    queue: asyncio.Queue
    loop: asyncio.AbstractEventLoop
    keep: Callable[[dict[str, Any]], bool]


@dataclass
class AlertHub:
    """``follow()`` -> alerts, forever; ``start()`` runs it in a thread, reconnecting after ``retry_s``."""

    follow: Callable[[Callable[[], bool]], Iterator[dict[str, Any]]]
    keep: int = 2000
    retry_s: float = 3.0
    recent: deque = field(init=False)
    state: str = "starting"
    received: int = 0
    _viewers: set = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _seen: set = field(default_factory=set)
    on_alert: Callable[[dict[str, Any]], None] | None = None
    hide: Callable[[dict[str, Any]], bool] | None = None  # an erased meter's alerts are never shown again

    def __post_init__(self) -> None:
        self.recent = deque(maxlen=self.keep)

    def start(self) -> "AlertHub":
        threading.Thread(target=self._run, name="alert-feed", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.state = "connected"
                for alert in self.follow(self._stop.is_set):
                    self.publish(alert)
            except Exception as exc:  # noqa: BLE001 - the broker went away: say so, retry; the console stays up
                self.state = f"broker unreachable ({type(exc).__name__}): retrying"
            if not self._stop.wait(self.retry_s):
                continue

    def publish(self, alert: dict[str, Any]) -> None:
        """Keep ``alert`` and hand it to every viewer whose filter takes it (drops a redelivered alert id)."""
        if self.hide is not None and self.hide(alert):
            return
        with self._lock:
            if alert.get("alert_id") in self._seen:
                return
            self._seen.add(alert.get("alert_id"))
            if len(self._seen) > 4 * self.keep:
                self._seen = {a.get("alert_id") for a in self.recent}
            self.recent.append(alert)
            self.received += 1
            viewers = list(self._viewers)
        if self.on_alert:
            self.on_alert(alert)
        for v in viewers:
            if v.keep(alert):
                v.loop.call_soon_threadsafe(_offer, v.queue, alert)

    def history(self, keep: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        with self._lock:
            recent = [a for a in self.recent if keep(a)]
        return recent if self.hide is None else [a for a in recent if not self.hide(a)]

    def subscribe(self, keep: Callable[[dict[str, Any]], bool], *, size: int = 500) -> _Viewer:
        viewer = _Viewer(asyncio.Queue(size), asyncio.get_running_loop(), keep)
        with self._lock:
            self._viewers.add(viewer)
        return viewer

    def unsubscribe(self, viewer: _Viewer) -> None:
        with self._lock:
            self._viewers.discard(viewer)

    @property
    def viewers(self) -> int:
        return len(self._viewers)


def _offer(queue: asyncio.Queue, alert: dict[str, Any]) -> None:
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(alert)


def split(values: Iterable[str] | str | None) -> frozenset[str]:
    """``"a,b"`` or ``["a", "b,c"]`` -> ``{"a", "b", "c"}`` (empty strings dropped)."""
    if not values:
        return frozenset()
    items = [values] if isinstance(values, str) else list(values)
    return frozenset(x.strip() for v in items for x in v.split(",") if x.strip())


def now_ms() -> int:
    return int(time.time() * 1000)
