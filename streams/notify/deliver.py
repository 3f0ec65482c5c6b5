"""Delivery of the outbox: webhooks (Alertmanager v4 JSON, signed) and email (SMTP with STARTTLS), with retries.

A notification stays in the outbox until its receiver took it: a webhook answering 2xx, an SMTP server accepting
the message. Anything else — a 500, a timeout, a refused connection, a rejected recipient — is an attempt that
failed: the notification is tried again after a backoff (5 s doubling up to 10 minutes, with jitter), for as
long as it takes, and the other receivers' notifications go on meanwhile (each delivery has its own timeout).
A webhook whose receiver names ``hmac_secret_env`` is signed — ``X-Meterseal-Signature: sha256=<hex HMAC-SHA256
of the raw body>`` — and is not sent at all while that variable is unset (fails closed: it is retried, and the
error names the variable). Every notification carries its id (``X-Meterseal-Notification-Id``, the email's
``Message-ID``), the same on every attempt, so a receiver can drop a copy sent again after a crash mid-send.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import random
import smtplib
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any, Callable

from streams.notify.dispatch import CUSTOMER
from streams.notify.rules import Receiver, Rules
from streams.notify.state import NotifyState

BACKOFF_S, BACKOFF_MAX_S = 5.0, 600.0


class DeliveryError(Exception):
    """One attempt failed; the message says which receiver, where, and why."""


@dataclass(frozen=True)
class Smtp:
    """``METERSEAL_SMTP_*``: the mail relay (STARTTLS unless ``starttls`` is off; ``ca_file`` to trust a private CA)."""

    host: str | None = None
    port: int = 587
    user: str | None = None
    password: str | None = None
    sender: str = "meterseal@localhost"
    starttls: bool = True
    ca_file: str | None = None
    timeout_s: float = 10.0


def signature(key: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def send_webhook(receiver: Receiver, note_id: str, body: bytes, *, timeout_s: float,
                 environ: dict[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    headers = {"Content-Type": "application/json", "User-Agent": "meterseal-notify/1",
               "X-Meterseal-Notification-Id": note_id}
    if receiver.hmac_secret_env:
        secret = environ.get(receiver.hmac_secret_env)
        if not secret:
            raise DeliveryError(f"{receiver.name}: ${receiver.hmac_secret_env} (its HMAC key) is not set: not sent")
        headers["X-Meterseal-Signature"] = signature(secret.encode(), body)
    request = urllib.request.Request(receiver.webhook_url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310 - http(s) checked by rules
            return response.status
    except urllib.error.HTTPError as exc:
        raise DeliveryError(f"{receiver.name}: {receiver.webhook_url} answered {exc.code}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DeliveryError(f"{receiver.name}: {receiver.webhook_url} unreachable ({reason})") from None


def render_email(note: dict[str, Any], *, to: tuple[str, ...], sender: str, note_id: str) -> EmailMessage:
    msg = EmailMessage()
    firing = [a for a in note["alerts"] if a["status"] == "firing"]
    status = f"FIRING:{len(firing)}" if firing else "RESOLVED"
    labels = ", ".join(f"{k}={v}" for k, v in sorted(note["groupLabels"].items()))
    msg["Subject"] = f"[{status}] meterseal {labels}"
    msg["From"], msg["To"] = sender, ", ".join(to)
    msg["Message-ID"] = f"<{note_id}@meterseal>"
    lines = [f"{len(note['alerts'])} alert(s), group {labels}", ""]
    for a in note["alerts"]:
        lab = a["labels"]
        lines.append(f"- {a['status']}: {lab.get('kind')} ({lab.get('severity')}) region {lab.get('region')} "
                     f"meter {lab.get('meter', '')[:12]}… since {a['startsAt']}"
                     + (f" until {a['endsAt']}" if a["status"] == "resolved" else "")
                     + f"\n  {a['annotations'].get('reason', '')}")
    if note.get("truncatedAlerts"):
        lines.append(f"... and {note['truncatedAlerts']} more")
    msg.set_content("\n".join(lines) + "\n")
    return msg


def send_email(smtp: Smtp, to: tuple[str, ...], message: EmailMessage, *, name: str) -> None:
    if not smtp.host:
        raise DeliveryError(f"{name}: no SMTP relay: set METERSEAL_SMTP_HOST (and _PORT, _FROM, _USER, _PASSWORD)")
    try:
        with smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout_s) as client:
            if smtp.starttls:
                context = ssl.create_default_context(cafile=smtp.ca_file)
                client.starttls(context=context)
            if smtp.user:
                client.login(smtp.user, smtp.password or "")
            refused = client.send_message(message, to_addrs=list(to))
            if refused:
                raise DeliveryError(f"{name}: {smtp.host}:{smtp.port} refused {', '.join(refused)}")
    except smtplib.SMTPException as exc:
        raise DeliveryError(f"{name}: {smtp.host}:{smtp.port} refused the mail ({exc})") from None
    except (OSError, ssl.SSLError) as exc:
        raise DeliveryError(f"{name}: cannot reach {smtp.host}:{smtp.port} ({exc})") from None


class Deliverer:
    """Sends what the outbox holds that is due; counts what it did (``sent``, ``failed`` attempts)."""

    def __init__(self, state: NotifyState, rules: Callable[[], Rules], *, smtp: Smtp = Smtp(),
                 customer_email: Callable[[str], str | None] = lambda tok: None, timeout_s: float = 5.0,
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None) -> None:
        self.state, self.rules, self.smtp, self.customer_email = state, rules, smtp, customer_email
        self.timeout_s, self.clock, self.rng = timeout_s, clock, rng or random.Random()
        self.sent = {"webhook": 0, "email": 0}
        self.failed = {"webhook": 0, "email": 0}
        self.last_errors: list[str] = []

    def retrying(self) -> int:
        return self.state.query("SELECT count(*) FROM outbox WHERE sent_at IS NULL AND attempts > 0")[0][0]

    def pending(self) -> int:
        return self.state.query("SELECT count(*) FROM outbox WHERE sent_at IS NULL")[0][0]

    def run_due(self, *, limit: int = 100) -> int:
        """Attempt every due notification once (in creation order); returns how many were delivered."""
        now = self.clock()
        due = self.state.query("SELECT id, receiver, payload, attempts FROM outbox WHERE sent_at IS NULL AND next_at <= ? "
                               "ORDER BY created, id LIMIT ?", (now, limit))
        delivered = 0
        for note_id, receiver_name, payload, attempts in due:
            kind = "email" if receiver_name.startswith(CUSTOMER) else "webhook"
            try:
                kind = self._send(receiver_name, note_id, payload)
            except DeliveryError as exc:
                self.failed[kind] += 1
                self.last_errors = (self.last_errors + [str(exc)])[-20:]
                wait = min(BACKOFF_MAX_S, BACKOFF_S * 2 ** attempts) * (0.5 + self.rng.random())
                with self.state.tx() as con:
                    con.execute("UPDATE outbox SET attempts = attempts + 1, next_at = ?, last_error = ? WHERE id = ?",
                                (self.clock() + wait, str(exc)[:500], note_id))
                continue
            self.sent[kind] += 1
            delivered += 1
            with self.state.tx() as con:
                con.execute("UPDATE outbox SET attempts = attempts + 1, sent_at = ?, last_error = NULL WHERE id = ?",
                            (self.clock(), note_id))
        return delivered

    def _send(self, receiver_name: str, note_id: str, payload: bytes) -> str:
        if receiver_name.startswith(CUSTOMER):
            address = self.customer_email(receiver_name[len(CUSTOMER):])
            if not address:  # the customer opted out meanwhile: nothing to send, and nothing to retry
                return "email"
            note = json.loads(payload)
            send_email(self.smtp, (address,), render_email(note, to=(address,), sender=self.smtp.sender,
                                                             note_id=note_id), name="customer opt-in")
            return "email"
        receiver = self.rules().receivers.get(receiver_name)
        if receiver is None:
            raise DeliveryError(f"receiver {receiver_name!r} is no longer in the rules: kept until it is back")
        if receiver.webhook_url:
            send_webhook(receiver, note_id, payload, timeout_s=self.timeout_s)
            return "webhook"
        note = json.loads(payload)
        send_email(self.smtp, receiver.email_to, render_email(note, to=receiver.email_to, sender=self.smtp.sender,
                                                              note_id=note_id), name=receiver.name)
        return "email"
