"""Grouping, timing, silences and resolution, Alertmanager's way, over the durable ``NotifyState``.

An alert (a record of the ``alerts`` topic) becomes labels ``alertname``, ``kind``, ``severity``, ``region``,
``meter`` (the meter token) and goes to every route ``Rules.route`` gives (and to its customer's email when the
customer opted in: ``optins``). In each route it joins the group of its ``group_by`` labels. A new group is
notified ``group_wait`` after its first alert; a changed group (a new alert, a resolved one) at most every
``group_interval``; an unchanged group with firing alerts again every ``repeat_interval``. An alert is one meter and
kind: a new occurrence refreshes it; ``resolve_timeout`` without one resolves it, and its group says so once
(Alertmanager's ``send_resolved``). Silenced and acknowledged alerts are left out of notifications.

Everything a flush decides — the notification in the outbox and the groups' new state — is one transaction, so a
restart neither loses nor repeats one. Pure but for ``NotifyState``; time is a parameter.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any, Callable, Iterable

from streams.notify.rules import Route, Rules
from streams.notify.state import NotifyState

MAX_ALERTS = 200  # alerts listed per notification; the rest are counted in truncatedAlerts (Alertmanager's max_alerts)
CUSTOMER = "customer:"  # receiver name prefix of a customer's opt-in email


def labels_of(alert: dict[str, Any]) -> dict[str, str]:
    return {"alertname": "MeterAnomaly", "kind": alert["kind"], "severity": alert["severity"],
            "region": alert.get("region") or "", "meter": alert["meter_tok"]}


def fingerprint(labels: dict[str, str]) -> str:
    """One alert = one meter and kind (its severity and region follow from them)."""
    return hashlib.sha256(f"{labels['meter']}|{labels['kind']}".encode()).hexdigest()[:16]


def annotations_of(alert: dict[str, Any]) -> dict[str, str]:
    out = {"summary": f"{alert['kind']} on meter {alert['meter_tok'][:12]}…", "reason": alert["reason"],
           "score": f"{alert['score']:.3f}", "reading_ts": alert["ts"], "alert_id": alert["alert_id"]}
    if alert.get("kwh") is not None:
        out["kwh"] = f"{alert['kwh']:.3f}"
    return out


def rfc3339(epoch: float | None) -> str:
    if epoch is None:
        return "0001-01-01T00:00:00Z"
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def group_key(route: Route, labels: dict[str, str]) -> tuple[str, dict[str, str]]:
    chosen = {k: labels.get(k, "") for k in route.group_by if k != "..."} if "..." not in route.group_by else dict(labels)
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(chosen.items()))
    return f"{{}}/{route.name}:{{{inner}}}", chosen


def customer_route(meter_tok: str) -> Route:
    """A customer's opt-in: every alert of its own meter, to its own address, grouped per meter and kind."""
    return Route(f"{CUSTOMER}{meter_tok[:16]}", f"{CUSTOMER}{meter_tok}", (), ("meter", "kind"), 30.0, 300.0, 86_400.0)


class Dispatcher:
    """Routes alerts into groups and turns due groups into outbox notifications."""

    def __init__(self, state: NotifyState, rules: Rules, *, external_url: str = "",
                 silenced: Callable[[dict[str, str], float], bool] = lambda labels, now: False,
                 acked: Callable[[], set[str]] = lambda: set(), opted_in: Callable[[str], bool] = lambda tok: False,
                 max_alerts: int = MAX_ALERTS) -> None:
        self.state, self.rules, self.external_url = state, rules, external_url
        self.silenced, self.acked, self.opted_in, self.max_alerts = silenced, acked, opted_in, max_alerts

    def routes_for(self, labels: dict[str, str]) -> list[Route]:
        routes = self.rules.route(labels)
        if self.opted_in(labels["meter"]):
            routes.append(customer_route(labels["meter"]))
        return routes

    def receive(self, alerts: Iterable[dict[str, Any]], now: float) -> int:
        """Take alerts (redelivered ones change nothing); returns how many were new."""
        new = 0
        with self.state.tx() as con:
            for alert in alerts:
                if con.execute("INSERT OR IGNORE INTO seen VALUES (?, ?)", (alert["alert_id"], now)).rowcount == 0:
                    continue
                new += 1
                labels = labels_of(alert)
                fp = fingerprint(labels)
                at = alert["detected_at_ms"] / 1000
                for route in self.routes_for(labels):
                    key, chosen = group_key(route, labels)
                    row = con.execute("SELECT last_notified, next_flush FROM groups WHERE group_key = ?", (key,)).fetchone()
                    if row is None:
                        con.execute("INSERT INTO groups (group_key, route, receiver, labels, created, next_flush, seq, "
                                    "group_wait, group_interval, repeat_interval) VALUES (?, ?, ?, ?, ?, ?, 0, ?, ?, ?)",
                                    (key, route.name, route.receiver, json.dumps(chosen), now, now + route.group_wait,
                                     route.group_wait, route.group_interval, route.repeat_interval))
                    old = con.execute("SELECT resolved_at FROM alerts WHERE group_key = ? AND fingerprint = ?",
                                      (key, fp)).fetchone()
                    if old is None:
                        con.execute("INSERT INTO alerts VALUES (?, ?, ?, ?, ?, ?, NULL, 0)",
                                    (key, fp, json.dumps(labels), json.dumps(annotations_of(alert)), at, max(at, now)))
                    else:
                        con.execute("UPDATE alerts SET last_seen = max(last_seen, ?), resolved_at = NULL, annotations = ? "
                                    "WHERE group_key = ? AND fingerprint = ?",
                                    (max(at, now), json.dumps(annotations_of(alert)), key, fp))
                    if row is not None and (old is None or old[0] is not None):  # the group changed
                        self._changed(con, key, row[0], route.group_interval, now)
        return new

    @staticmethod
    def _changed(con, key: str, last_notified: float | None, interval: float, now: float) -> None:
        """A group's alerts changed: notify at its next ``group_interval`` tick (a group never notified yet
        waits for its first flush, ``group_wait`` after it began)."""
        if last_notified is None:
            con.execute("UPDATE groups SET next_flush = coalesce(next_flush, ?) WHERE group_key = ?", (now, key))
            return
        due = max(now, last_notified + interval)
        con.execute("UPDATE groups SET next_flush = CASE WHEN next_flush IS NULL OR next_flush > ? THEN ? ELSE next_flush "
                    "END WHERE group_key = ?", (due, due, key))

    def flush(self, now: float) -> list[str]:
        """Resolve what timed out, then write a notification for every due group; returns their outbox ids."""
        made = []
        acked = self.acked()
        with self.state.tx() as con:
            timeout = self.rules.resolve_timeout
            for key, last_notified, interval in con.execute(
                    "SELECT DISTINCT g.group_key, g.last_notified, g.group_interval FROM groups g JOIN alerts a "
                    "ON a.group_key = g.group_key WHERE a.resolved_at IS NULL AND a.last_seen + ? <= ?",
                    (timeout, now)).fetchall():
                con.execute("UPDATE alerts SET resolved_at = last_seen + ? WHERE group_key = ? AND resolved_at IS NULL "
                            "AND last_seen + ? <= ?", (timeout, key, timeout, now))
                self._changed(con, key, last_notified, interval, now)
            for (key, route, receiver, glabels, next_flush, last_notified, digest, seq,
                 repeat) in con.execute("SELECT group_key, route, receiver, labels, next_flush, last_notified, "
                                        "last_digest, seq, repeat_interval FROM groups").fetchall():
                flush_due = next_flush is not None and next_flush <= now
                repeat_due = last_notified is not None and last_notified + repeat <= now
                if not (flush_due or repeat_due):
                    continue
                rows = con.execute("SELECT fingerprint, labels, annotations, starts_at, resolved_at, notified FROM alerts "
                                   "WHERE group_key = ? ORDER BY starts_at, fingerprint", (key,)).fetchall()
                firing, resolved = [], []
                for fp, labels, annotations, starts, ended, notified in rows:
                    labels = json.loads(labels)
                    if ended is None:
                        if fp not in acked and not self.silenced(labels, now):
                            firing.append((fp, labels, json.loads(annotations), starts, None))
                    elif notified:
                        resolved.append((fp, labels, json.loads(annotations), starts, ended))
                con.execute("DELETE FROM alerts WHERE group_key = ? AND resolved_at IS NOT NULL AND notified = 0", (key,))
                new_digest = hashlib.sha256(json.dumps([[a[0], a[4] is None] for a in firing + resolved]).encode()).hexdigest()
                if not firing and not resolved or (new_digest == digest and not (repeat_due and firing)):
                    con.execute("UPDATE groups SET next_flush = NULL WHERE group_key = ?", (key,))
                    self._drop_if_empty(con, key)
                    continue
                seq += 1
                note_id = hashlib.sha256(f"{key}#{seq}".encode()).hexdigest()[:32]
                body = self.payload(key, receiver, json.loads(glabels), firing, resolved)
                con.execute("INSERT INTO outbox (id, receiver, group_key, status, payload, alerts, created, next_at) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            (note_id, receiver, key, body["status"], json.dumps(body, separators=(",", ":")).encode(),
                             len(firing) + len(resolved), now, now))
                con.executemany("UPDATE alerts SET notified = 1 WHERE group_key = ? AND fingerprint = ?",
                                [(key, a[0]) for a in firing])
                con.executemany("DELETE FROM alerts WHERE group_key = ? AND fingerprint = ?", [(key, a[0]) for a in resolved])
                con.execute("UPDATE groups SET next_flush = NULL, last_notified = ?, last_digest = ?, seq = ? "
                            "WHERE group_key = ?", (now, new_digest if firing else None, seq, key))
                self._drop_if_empty(con, key)
                made.append(note_id)
        return made

    @staticmethod
    def _drop_if_empty(con, key: str) -> None:
        if con.execute("SELECT count(*) FROM alerts WHERE group_key = ?", (key,)).fetchone()[0] == 0:
            con.execute("DELETE FROM groups WHERE group_key = ?", (key,))

    def payload(self, key: str, receiver: str, group_labels: dict[str, str], firing: list, resolved: list) -> dict:
        """The Alertmanager webhook body, version 4 (what Grafana's and Alertmanager-compatible receivers take)."""
        alerts = []
        for fp, labels, annotations, starts, ended in (firing + resolved)[:self.max_alerts]:
            alerts.append({"status": "firing" if ended is None else "resolved", "labels": labels,
                           "annotations": annotations, "startsAt": rfc3339(starts), "endsAt": rfc3339(ended),
                           "generatorURL": self.external_url, "fingerprint": fp})
        common = dict(alerts[0]["labels"]) if alerts else {}
        for a in alerts[1:]:
            common = {k: v for k, v in common.items() if a["labels"].get(k) == v}
        common_ann = dict(alerts[0]["annotations"]) if alerts else {}
        for a in alerts[1:]:
            common_ann = {k: v for k, v in common_ann.items() if a["annotations"].get(k) == v}
        return {"version": "4", "groupKey": key, "truncatedAlerts": max(0, len(firing) + len(resolved) - self.max_alerts),
                "status": "firing" if firing else "resolved", "receiver": receiver, "groupLabels": group_labels,
                "commonLabels": common, "commonAnnotations": common_ann, "externalURL": self.external_url,
                "alerts": alerts}

    def active_labels(self) -> list[dict[str, str]]:
        """The labels of every alert firing now (a new silence that matches none of them gets a warning)."""
        return [json.loads(labels) for (labels,) in
                self.state.query("SELECT DISTINCT labels FROM alerts WHERE resolved_at IS NULL")]
