"""The notifier as the worker runs it: alerts in (``take``), and every second ``tick`` — reload the rules if their
file changed (a file with an error is logged with its line and the rules loaded before stay active), resolve and
group (``Dispatcher.flush``), deliver what is due (``Deliverer.run_due``). Plain methods; ``agents/notify.py``
wires them to Faust, in threads."""

from __future__ import annotations

import json

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

from streams.notify import history, optins, silences
from streams.notify.deliver import Deliverer, Smtp
from streams.notify.dispatch import Dispatcher
from streams.notify.rules import Rules, RulesError, load
from streams.notify.state import NotifyState

log = logging.getLogger("meterseal.notify")
REFRESH_S = 2.0  # silences, acknowledgements and opt-ins are re-read at most this often


class RulesFile:
    """The rules file, reloaded when it changes; ``error`` says why the last change was refused."""

    def __init__(self, path: str | None) -> None:
        self.path = Path(path) if path else None
        self.rules, self.error, self._stamp = Rules(), None, None
        self.reloads = 0
        self.check()

    def check(self) -> bool:
        """Reload if the file changed; True if new rules are active."""
        if self.path is None:
            return False
        try:
            stat = self.path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
        except OSError as exc:
            stamp = ("missing", str(exc))
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            self.rules = load(self.path)
        except RulesError as exc:
            self.error = str(exc)
            log.error("alert rules %s: %s: keeping the rules loaded before (%d route(s))", self.path, exc,
                      len(self.rules.routes))
            return False
        self.error = None
        self.reloads += 1
        log.warning("alert rules %s loaded: %d receiver(s), %d route(s)", self.path, len(self.rules.receivers),
                    len(self.rules.children))
        return True


class Notifier:
    def __init__(self, store: Any, index_key: bytes, state_path: Path | str, *, rules_path: str | None,
                 smtp: Smtp = Smtp(), external_url: str = "", clock: Callable[[], float] = time.time,
                 erased: Callable[[str], bool] = lambda meter_tok: False) -> None:
        self.store, self.index_key, self.clock, self.erased = store, index_key, clock, erased
        self.rules_file = RulesFile(rules_path)
        self.state = NotifyState(state_path)
        self._cache: dict[str, Any] = {"at": -1e18}
        self._lock = threading.Lock()
        self.dispatcher = Dispatcher(self.state, self.rules_file.rules, external_url=external_url,
                                     silenced=self._silenced, acked=lambda: set(self._fresh()["acks"]),
                                     opted_in=lambda tok: tok in self._fresh()["optins"])
        self.deliverer = Deliverer(self.state, lambda: self.rules_file.rules, smtp=smtp, clock=clock,
                                   customer_email=lambda tok: optins.email_for(store.blobs, index_key, tok))
        self.received = 0
        self.by_kind_region: dict[tuple[str, str], int] = {}

    @classmethod
    def from_settings(cls, settings: Any, store: Any, index_key: bytes, *,
                      erased: Callable[[str], bool] = lambda meter_tok: False) -> "Notifier":
        smtp = Smtp(settings.smtp_host, settings.smtp_port, settings.smtp_user,
                    settings.smtp_password or os.environ.get("METERSEAL_SMTP_PASSWORD"), settings.smtp_from,
                    settings.smtp_starttls, settings.smtp_ca_file)
        return cls(store, index_key, Path(settings.data_dir) / "notify" / "state.sqlite3",
                   rules_path=settings.alert_rules, smtp=smtp, external_url=settings.console_url, erased=erased)

    def _fresh(self) -> dict[str, Any]:
        now = time.monotonic()
        if now - self._cache["at"] >= REFRESH_S:
            blobs = self.store.blobs
            self._cache = {"at": now, "silences": silences.load_all(blobs), "acks": silences.acknowledged(blobs),
                           "optins": optins.opted_in_tokens(blobs)}
        return self._cache

    def _silenced(self, labels: dict[str, str], now: float) -> bool:
        return any(s.mutes(labels, now) for s in self._fresh()["silences"])

    def take(self, alerts: list[tuple[int, int, dict[str, Any]]]) -> int:
        """``(partition, offset, alert)`` from the alerts topic: kept in the history, then routed. Returns how
        many were new to the router."""
        alerts = [(p, o, a) for p, o, a in alerts if not self.erased(a["meter_tok"])]  # an erased meter's: gone
        with self._lock:
            by_partition: dict[int, list] = {}
            for partition, offset, alert in alerts:
                by_partition.setdefault(partition, []).append((offset, alert))
            for partition, rows in by_partition.items():
                history.record(self.store, partition, rows)
            new = self.dispatcher.receive([a for _, _, a in alerts], self.clock())
            self.received += new
            for _, _, a in alerts:
                key = (a["kind"], a.get("region") or "")
                self.by_kind_region[key] = self.by_kind_region.get(key, 0) + 1
            return new

    def forget_erased(self, erased: Callable[[str], bool]) -> int:
        """Drop what the notifier's state keeps of erased meters (``erased(meter token)``): their alerts, the groups
        named by their token, and notifications naming them, sent or not. Returns the rows deleted. (The alert
        history in the store is erased by the erasure job's holder; this is the worker's own file.)"""
        with self._lock, self.state.tx() as con:  # (secure_delete: the rows' bytes are overwritten, not freed)
            tokens = {json.loads(labels).get("meter", "") for (labels,) in con.execute("SELECT labels FROM alerts")}
            tokens |= {json.loads(labels).get("meter", "") for (labels,) in con.execute("SELECT labels FROM groups")}
            gone = [t for t in tokens if t and erased(t)]
            deleted = 0
            for token in gone:
                pattern = f'%"{token}"%'
                deleted += con.execute("DELETE FROM alerts WHERE labels LIKE ?", (pattern,)).rowcount
                deleted += con.execute("DELETE FROM outbox WHERE payload LIKE ? OR group_key IN (SELECT group_key FROM "
                                       "groups WHERE labels LIKE ?)", (pattern.encode(), pattern)).rowcount
                deleted += con.execute("DELETE FROM groups WHERE labels LIKE ?", (pattern,)).rowcount
        if gone:
            self.state.checkpoint()
        return deleted

    def tick(self) -> int:
        """Rules reload, resolution and grouping, delivery; returns notifications delivered."""
        with self._lock:
            if self.rules_file.check():
                self.dispatcher.rules = self.rules_file.rules
            self.dispatcher.flush(self.clock())
        return self.deliverer.run_due()
