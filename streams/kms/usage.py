"""Every unwrap a process asks of its key service, counted: Prometheus metrics and the console's admin table.

The service's own audit device is the record that counts (OpenBao logs each request with the token that made
it, whoever runs meterseal); these counts are meterseal's side of it, per process: ``Metered`` wraps a
``KeyService`` and counts each ``unwrap`` by key alias and clock hour; ``Usage.collector()`` serves them as
``meterseal_kms_unwraps_total{process, key}``; with a store attached, the counts are also added to
``kms/usage/<process>.json`` in the store (at most every ``every_s`` seconds, and on ``flush``), where the
console reads every process's for its "unwraps per hour per process" table (``hourly``). A long-running process
(worker, console) is ``role@host:pid``; short commands share one file per role and host (``reader@host``), so a
command run every minute adds to a count instead of a file — two of them flushing at the same instant may lose
one's count (the service's audit log is the exact record). Files of processes silent for a week are removed
when the table is read.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from typing import Any, Callable, Iterable

from streams.kms.service import KeyRef, KeyService

PREFIX = "kms/usage/"


LONG_RUNNING = ("worker", "console")
KEEP_S = 7 * 86_400  # a usage file silent this long is removed by ``hourly``


def process_name(role: str) -> str:
    """``role@host:pid`` for a worker or a console, ``role@host`` for a short command."""
    host = socket.gethostname()
    return f"{role}@{host}:{os.getpid()}" if role in LONG_RUNNING else f"{role}@{host}"


def _hour(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:00Z", time.gmtime(t))


class Usage:
    """This process's unwraps: ``count(alias)``; ``totals`` by alias; ``hours`` by clock hour (UTC)."""

    def __init__(self, role: str, *, process: str | None = None, clock: Callable[[], float] = time.time,
                 every_s: float = 10.0) -> None:
        self.role, self.process = role, process or process_name(role)
        self.totals: dict[str, int] = {}
        self.hours: dict[str, int] = {}
        self._new_totals: dict[str, int] = {}  # counted since the last flush (added to the file's)
        self._new_hours: dict[str, int] = {}
        self._clock, self._every_s = clock, every_s
        self._blobs: Any = None
        self._written_at = 0.0
        self._dirty = False
        self._lock = threading.Lock()

    def attach(self, store: Any) -> None:
        """Write the counts to ``store``'s blobs from now on (what the console's table reads)."""
        import atexit

        self._blobs = getattr(store, "blobs", None)
        atexit.register(self.flush)  # a short command's last counts too

    def count(self, alias: str) -> None:
        now = self._clock()
        with self._lock:
            hour = _hour(now)
            for counts, key in ((self.totals, alias), (self._new_totals, alias), (self.hours, hour),
                                (self._new_hours, hour)):
                counts[key] = counts.get(key, 0) + 1
            self._dirty = True
            due = self._blobs is not None and now - self._written_at >= self._every_s
        if due:
            self.flush()

    def flush(self) -> None:
        """Write the counts to the store now (if one is attached and anything changed). Never raises: a store
        that cannot take them costs the table a row, not an unwrap."""
        with self._lock:
            if self._blobs is None or not self._dirty:
                return
            hours, totals = self._new_hours, self._new_totals
            self._new_hours, self._new_totals = {}, {}
            self._written_at, self._dirty = self._clock(), False
        key = PREFIX + self.process.replace("/", "_") + ".json"
        try:
            doc = json.loads(self._blobs.get(key) or b"{}")
            for name, new in (("hours", hours), ("totals", totals)):
                merged = doc.get(name, {})
                for k, n in new.items():
                    merged[k] = merged.get(k, 0) + n
                doc[name] = dict(sorted(merged.items())[-48:]) if name == "hours" else merged
            doc.update(process=self.process, role=self.role, written_at=self._clock())
            self._blobs.put(key, json.dumps(doc, sort_keys=True).encode())
        except Exception:  # noqa: BLE001 - counting must never stop the process that counts: next flush adds them
            with self._lock:
                for mine, back in ((self._new_hours, hours), (self._new_totals, totals)):
                    for k, n in back.items():
                        mine[k] = mine.get(k, 0) + n
                self._dirty = True

    def collector(self) -> Any:
        """A prometheus-client collector of ``meterseal_kms_unwraps_total{process, key}``."""
        from prometheus_client.core import CounterMetricFamily

        usage = self

        class _Collector:
            def collect(self) -> Iterable[Any]:
                family = CounterMetricFamily("meterseal_kms_unwraps", "Unwraps this process asked of its key service "
                                             "(stored DEKs, the index key), by key alias", labels=["process", "key"])
                with usage._lock:
                    for alias, n in sorted(usage.totals.items()):
                        family.add_metric([usage.process, alias], n)
                yield family

            def describe(self) -> Iterable[Any]:
                return []

        return _Collector()


class Metered:
    """A ``KeyService`` that counts its unwraps in ``usage``; every other call passes straight through."""

    def __init__(self, service: KeyService, usage: Usage) -> None:
        self.inner, self.usage = service, usage
        self.location = service.location

    def unwrap(self, key: KeyRef, key_id: bytes, wrapped: bytes) -> bytes:
        secret = self.inner.unwrap(key, key_id, wrapped)
        self.usage.count(key.alias)
        return secret

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def hourly(store: Any, *, hours: int = 24, now: float | None = None) -> list[dict[str, Any]]:
    """Every process's unwraps per hour over the last ``hours`` (newest hour first, then process), from the
    counts processes wrote to ``store``: rows of ``process``, ``role``, ``hour``, ``unwraps``."""
    now = time.time() if now is None else now
    since = _hour(now - 3600 * (hours - 1))
    rows = []
    blobs = store.blobs
    for key in blobs.list(PREFIX):
        try:
            doc = json.loads(blobs.get(key) or b"")
        except ValueError:
            continue  # a half-written or foreign file: not a count
        if now - float(doc.get("written_at", now)) > KEEP_S:
            blobs.delete(key)  # a process silent for a week: its file goes
            continue
        for hour, n in doc.get("hours", {}).items():
            if hour >= since and n:
                rows.append({"process": doc.get("process", key), "role": doc.get("role", ""), "hour": hour, "unwraps": n})
    return sorted(sorted(rows, key=lambda r: r["process"]), key=lambda r: r["hour"], reverse=True)
