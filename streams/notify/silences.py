"""Silences and acknowledgements, kept as small objects in the store (``notify/silences/<id>.json``,
``notify/acks/<fingerprint>.json``) so that the console, ``meterseal alerts silence`` and every worker see the
same ones, on a local store or on S3.

A silence mutes every alert whose labels match all its matchers from ``starts_at`` to ``ends_at`` (and says why:
``reason``, ``created_by``); it is never deleted, only expired (``ends_at`` moved to now), so what was muted when
stays on record. An acknowledgement says someone is on an alert (a meter and kind): it is not notified again
while it fires; its resolution still is.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from typing import Any, Iterable

from streams.exceptions import MeterSealError
from streams.notify.rules import Matcher

PREFIX, ACKS = "notify/silences/", "notify/acks/"


@dataclass(frozen=True)
class Silence:
    id: str
    matchers: tuple[str, ...]
    starts_at: float
    ends_at: float
    reason: str
    created_by: str
    created_at: float

    def active(self, now: float) -> bool:
        return self.starts_at <= now < self.ends_at

    def parsed(self) -> tuple[Matcher, ...]:
        return tuple(Matcher.parse(m) for m in self.matchers)

    def mutes(self, labels: dict[str, str], now: float) -> bool:
        return self.active(now) and all(m.matches(labels) for m in self.parsed())


def create(blobs: Any, *, matchers: Iterable[str], duration_s: float, reason: str, created_by: str,
           now: float | None = None) -> Silence:
    """A new silence (``MeterSealError`` for a bad matcher, no matcher, a duration <= 0 or no reason)."""
    now = time.time() if now is None else now
    matchers = tuple(m.strip() for m in matchers if m and m.strip())
    if not matchers:
        raise MeterSealError("a silence needs at least one matcher, like region=north or kind=theft")
    for m in matchers:
        try:
            Matcher.parse(m)
        except ValueError as exc:
            raise MeterSealError(str(exc)) from None
    if not duration_s > 0 or duration_s > 366 * 86400:
        raise MeterSealError("a silence lasts more than 0 seconds and at most a year")
    if not reason.strip():
        raise MeterSealError("a silence needs a reason (who is on it, what is being done)")
    silence = Silence(os.urandom(8).hex(), matchers, now, now + duration_s, reason.strip()[:500], created_by, now)
    blobs.put(PREFIX + silence.id + ".json", json.dumps(asdict(silence)).encode())
    return silence


def load_all(blobs: Any) -> list[Silence]:
    out = []
    for key in blobs.list(PREFIX):
        data = blobs.get(key)
        if data:
            doc = json.loads(data)
            out.append(Silence(doc["id"], tuple(doc["matchers"]), doc["starts_at"], doc["ends_at"], doc["reason"],
                               doc["created_by"], doc["created_at"]))
    return sorted(out, key=lambda s: s.created_at, reverse=True)


def expire(blobs: Any, silence_id: str, *, now: float | None = None) -> Silence:
    now = time.time() if now is None else now
    found = next((s for s in load_all(blobs) if s.id == silence_id), None)
    if found is None:
        raise MeterSealError(f"no silence {silence_id}")
    ended = Silence(found.id, found.matchers, found.starts_at, min(found.ends_at, now), found.reason,
                    found.created_by, found.created_at)
    blobs.put(PREFIX + found.id + ".json", json.dumps(asdict(ended)).encode())
    return ended


def matching(silence_matchers: Iterable[str], label_sets: Iterable[dict[str, str]]) -> int:
    """How many of ``label_sets`` the matchers match (a silence that matches none gets a warning)."""
    parsed = [Matcher.parse(m) for m in silence_matchers]
    return sum(1 for labels in label_sets if all(m.matches(labels) for m in parsed))


def acknowledge(blobs: Any, fingerprint: str, *, by: str, comment: str = "", now: float | None = None) -> dict:
    if not fingerprint or not all(c in "0123456789abcdef" for c in fingerprint):
        raise MeterSealError("not an alert fingerprint")
    doc = {"fingerprint": fingerprint, "by": by, "at": time.time() if now is None else now, "comment": comment[:500]}
    blobs.put(ACKS + fingerprint + ".json", json.dumps(doc).encode())
    return doc


def acknowledged(blobs: Any) -> dict[str, dict]:
    out = {}
    for key in blobs.list(ACKS):
        data = blobs.get(key)
        if data:
            doc = json.loads(data)
            out[doc["fingerprint"]] = doc
    return out
