"""Notifications to a third party's notify-uri: a POSTed ESPI BatchList, signed, retried with backoff for 24 h.

Signing: the body's SHA-256 and the send time are signed with the ledger's key (Ed25519, the key that signs
checkpoints; its vkey is published at ``/.well-known/meterseal-vkeys``) and sent as one header::

    Signature: keyid="<vkey name>+<key hash>", alg="ed25519", created=1717000000, digest="sha-256=<hex>", sig="<base64>"

The signed text is ``meterseal-notify/1\\ncreated=<created>\\ndigest=sha-256:<hex>\\n``. A receiver checks it
with ``verify_signature`` (a wrong key, an altered body or a stale ``created`` fail); the reference code's
receivers accept anything, this one proves who sent what.

Delivery never blocks the caller: ``Outbox.enqueue`` writes one JSON file under ``<data-dir>/connect/outbox/``
and returns; ``Outbox.run_due`` (the console's notifier thread, or a CLI after a revocation) POSTs what is due,
deletes what was accepted (2xx), and reschedules the rest with exponential backoff (``base_s`` doubling, at
most an hour) until 24 h after the first try, when the job moves to ``outbox/failed/``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Sequence

from ledger.note import Signer, Verifier

GIVE_UP_S = 24 * 3600.0
MAX_BACKOFF_S = 3600.0
_PARAM = re.compile(r'(\w+)=(?:"([^"]*)"|([^,\s]*))')


def _signed_text(created: int, body: bytes) -> str:
    return f"meterseal-notify/1\ncreated={created}\ndigest=sha-256:{hashlib.sha256(body).hexdigest()}\n"


def signature_header(body: bytes, signer: Signer, *, now: float | None = None) -> str:
    created = int(time.time() if now is None else now)
    line = signer.sign_line(_signed_text(created, body))  # "— <name> <base64(key hash || signature)>"
    raw = base64.b64decode(line.rsplit(" ", 1)[1])
    verifier = signer.verifier
    return (f'keyid="{verifier.name}+{verifier.key_hash.hex()}", alg="{verifier.scheme}", created={created}, '
            f'digest="sha-256={hashlib.sha256(body).hexdigest()}", sig="{base64.b64encode(raw[4:]).decode()}"')


def verify_signature(body: bytes, header: str | None, verifiers: Sequence[Verifier], *, now: float | None = None,
                     max_age_s: float = GIVE_UP_S + 3600) -> bool:
    """Whether ``header`` signs ``body`` with one of ``verifiers`` and is no older than ``max_age_s``."""
    if not header or len(header) > 2048:
        return False
    params = {m.group(1): m.group(2) if m.group(2) is not None else m.group(3) for m in _PARAM.finditer(header)}
    try:
        created = int(params["created"])
        signature = base64.b64decode(params["sig"], validate=True)
        name, key_hash = params["keyid"].rsplit("+", 1)
    except (KeyError, ValueError):
        return False
    now = time.time() if now is None else now
    if not -300 <= now - created <= max_age_s:
        return False
    text = _signed_text(created, body).encode()
    return any(v.name == name and v.key_hash.hex() == key_hash and v.verify(text, signature) for v in verifiers)


class Outbox:
    """Signed notifications waiting for delivery, one file each (survives restarts)."""

    def __init__(self, directory: Path | str, signer: Signer, *, base_s: float = 30.0, timeout_s: float = 5.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "failed").mkdir(exist_ok=True)
        self.signer, self.base_s, self.timeout_s, self.clock = signer, base_s, timeout_s, clock
        self._lock = threading.Lock()
        self.delivered = 0

    @classmethod
    def for_data_dir(cls, data_dir: Path | str, signer: Signer, **kw: Any) -> "Outbox":
        return cls(Path(data_dir) / "connect" / "outbox", signer, **kw)

    def enqueue(self, url: str, body: bytes, *, what: str) -> str:
        """Queue ``body`` for ``url``; returns the job id. Never touches the network."""
        job_id = f"{int(self.clock() * 1000):013d}-{os.urandom(6).hex()}"
        doc = {"id": job_id, "url": url, "what": what, "body": body.decode(), "first_at": self.clock(),
               "next_at": self.clock(), "attempts": 0, "last_error": None}
        tmp = self.dir / f".{job_id}.tmp"
        tmp.write_text(json.dumps(doc))
        tmp.replace(self.dir / f"{job_id}.json")
        return job_id

    def pending(self) -> list[dict[str, Any]]:
        out = []
        for path in sorted(self.dir.glob("*.json")):
            try:
                out.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue  # being written, or removed meanwhile
        return out

    def failed(self) -> list[dict[str, Any]]:
        return [json.loads(p.read_text()) for p in sorted((self.dir / "failed").glob("*.json"))]

    def run_due(self) -> int:
        """Try every job that is due once; returns how many were delivered."""
        delivered = 0
        with self._lock:
            for job in self.pending():
                now = self.clock()
                if job["next_at"] > now:
                    continue
                path = self.dir / f"{job['id']}.json"
                body = job["body"].encode()
                error = self._post(job["url"], body)
                if error is None:
                    path.unlink(missing_ok=True)
                    delivered += 1
                    continue
                job["attempts"] += 1
                job["last_error"] = error
                job["next_at"] = now + min(self.base_s * 2 ** (job["attempts"] - 1), MAX_BACKOFF_S)
                if now - job["first_at"] >= GIVE_UP_S:
                    (self.dir / "failed" / path.name).write_text(json.dumps(job))
                    path.unlink(missing_ok=True)
                else:
                    path.write_text(json.dumps(job))
        self.delivered += delivered
        return delivered

    def _post(self, url: str, body: bytes) -> str | None:
        request = urllib.request.Request(url, data=body, method="POST", headers={
            "Content-Type": "application/atom+xml", "Signature": signature_header(body, self.signer, now=self.clock())})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310 (https/loopback)
                return None if 200 <= response.status < 300 else f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            return f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            return f"{type(exc).__name__}: {str(exc)[:200]}"


class Notifier:
    """A daemon thread that runs ``outbox.run_due()`` every ``every_s`` seconds, and ``tick()`` (new-data checks)."""

    def __init__(self, outbox: Outbox, *, every_s: float = 1.0, tick: Callable[[], Any] | None = None) -> None:
        self.outbox, self.every_s, self.tick = outbox, every_s, tick
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="connect-notifier", daemon=True)

    def start(self) -> "Notifier":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                if self.tick is not None:
                    self.tick()
                self.outbox.run_due()
            except Exception:  # noqa: BLE001 - a notifier never takes the console down; the job stays queued
                time.sleep(self.every_s)


def new_data_due(grants: Sequence[Any], *, block_s: Callable[[Any], int], latest: Callable[[Any], float | None],
                 last_sent: dict[str, float], now: float) -> list[Any]:
    """The active grants to notify of new data: data newer than the last notice, and at least one BlockDuration
    since it (at most one notice per BlockDuration). Pure; the caller records ``last_sent[grant_id] = now``."""
    out = []
    for grant in grants:
        sent = last_sent.get(grant.grant_id)
        newest = latest(grant)
        if newest is not None and (sent is None or (newest > sent and now - sent >= block_s(grant))):
            out.append(grant)
    return out
