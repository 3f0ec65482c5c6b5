"""The ESPI resources a third party reads with its token: Batch/Subscription feeds, UsagePoints, its
Authorization, the service status and BatchList notifications — as XML bytes, from plain arguments.

What a feed holds is decided here and only here: the grant's meters; intervals that end inside the grant's
dates, no earlier than ``now - HistoryLength`` and inside ``published-min``/``published-max`` when given; and
never finer than the scope's ``IntervalDuration`` — finer stored readings are summed up into whole intervals
of that length (in integer Wh, so the sums are exact); an interval whose readings are not all present is left
out rather than shown short. Every text goes through ElementTree, so a party or meter name cannot inject XML.

``readings_of(meter_id, first_day, last_day)`` is the caller's (the owner's reader): dicts with ``ts`` (end of
the interval, ISO-8601) and ``kwh``.
"""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET
from collections import defaultdict
from typing import Any, Callable, Iterable, Sequence
from urllib.parse import quote

from streams.exceptions import ShareError
from streams.share import espi
from streams.share.grants import Grant

from .scopes import Scope

ReadingsOf = Callable[[str, dt.date, dt.date], list[dict[str, Any]]]
ATOM, ESPI = espi.ATOM, espi.ESPI


def parse_time(text: str | None, name: str) -> float | None:
    """An ESPI query time (xs:dateTime, e.g. ``2024-03-01T00:00:00Z``) as epoch seconds; ``ValueError`` if bad."""
    if text is None or text == "":
        return None
    if len(text) > 40:
        raise ValueError(f"{name} is too long")
    try:
        stamp = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{name}={text[:40]!r} is not an xs:dateTime such as 2024-03-01T00:00:00Z") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.timezone.utc)
    return stamp.timestamp()


def window(grant: Grant, scope: Scope, *, now: float, published_min: float | None = None,
           published_max: float | None = None) -> tuple[float, float]:
    """(lo, hi) epoch seconds: an interval is served when ``lo <= start`` and ``end <= hi``."""
    start = dt.datetime.combine(dt.date.fromisoformat(grant.start), dt.time(), dt.timezone.utc).timestamp()
    end = dt.datetime.combine(dt.date.fromisoformat(grant.end) + dt.timedelta(days=1), dt.time(),
                              dt.timezone.utc).timestamp()
    lo = max(start, now - scope.history_s, published_min if published_min is not None else float("-inf"))
    hi = min(end, now, published_max if published_max is not None else float("inf"))
    return lo, hi


def aggregate(points: Sequence[tuple[int, int]], *, stored_s: int, target_s: int) -> tuple[list[tuple[int, int]], int]:
    """(interval end, Wh) summed into whole ``target_s`` intervals aligned to UTC; only complete ones. Returns the
    points and their interval length (``stored_s`` when that is already as coarse as asked).

    >>> aggregate([(900, 1), (1800, 2), (2700, 3), (3600, 4), (4500, 5)], stored_s=900, target_s=3600)
    ([(3600, 10)], 3600)
    """
    if target_s <= stored_s:
        return list(points), stored_s
    need = target_s // stored_s if target_s % stored_s == 0 else 0
    sums: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for end, wh in points:
        bucket = -(-end // target_s) * target_s  # the end of the target interval holding this reading
        sums[bucket][0] += wh
        sums[bucket][1] += 1
    return [(end, s) for end, (s, n) in sorted(sums.items()) if need and n == need], target_s


def interval_points(readings: Iterable[dict[str, Any]]) -> list[tuple[int, int]]:
    """(end epoch, Wh) of readings, oldest first, one per end time."""
    points = {espi._epoch(str(r["ts"])): round(float(r["kwh"]) * 1000) for r in readings}
    return sorted(points.items())


def served_points(grant: Grant, scope: Scope, readings_of: ReadingsOf, *, now: float,
                  published_min: float | None = None, published_max: float | None = None,
                  meters: Sequence[str] | None = None) -> dict[str, tuple[list[tuple[int, int]], int]]:
    """Per meter: the (end, Wh) points the grant and scope allow, and their interval length."""
    lo, hi = window(grant, scope, now=now, published_min=published_min, published_max=published_max)
    out: dict[str, tuple[list[tuple[int, int]], int]] = {}
    if hi <= lo:
        return {m: ([], scope.interval_s) for m in (meters or grant.meters)}
    first = dt.datetime.fromtimestamp(lo, dt.timezone.utc).date()
    last = dt.datetime.fromtimestamp(hi, dt.timezone.utc).date()
    for meter in meters or grant.meters:
        points = interval_points(readings_of(meter, first, last))
        stored = espi.interval_length([e for e, _ in points], default=scope.interval_s)
        inside = [(e, wh) for e, wh in points if e - stored >= lo and e <= hi]
        out[meter] = aggregate(inside, stored_s=stored, target_s=scope.interval_s)
    return out


def subscription_feed(grant: Grant, scope: Scope, readings_of: ReadingsOf, *, now: float, base: str,
                      published_min: float | None = None, published_max: float | None = None,
                      meters: Sequence[str] | None = None) -> tuple[bytes, int]:
    """The Batch/Subscription Atom feed and how many IntervalReadings it holds."""
    served = served_points(grant, scope, readings_of, now=now, published_min=published_min,
                           published_max=published_max, meters=meters)
    count = sum(len(p) for p, _ in served.values())
    if not count:
        return usage_points_feed(grant, base=base, now=now, meters=list(served)), 0
    lengths = {length for points, length in served.values() if points}
    parts = []
    for length in sorted(lengths):  # espi.feed writes one interval length per call; meters rarely differ
        rows = [{"meter_id": m, "ts": espi._rfc3339(e), "kwh": wh / 1000}
                for m, (points, ln) in served.items() if ln == length for e, wh in points]
        parts.append(espi.feed(rows, title="meterseal Green Button Connect My Data", updated=now, base=base,
                               subscription=grant.grant_id, interval_s=length))
    return (parts[0] if len(parts) == 1 else _merge(parts)), count


def _merge(feeds: list[bytes]) -> bytes:
    first = ET.fromstring(feeds[0])
    for other in feeds[1:]:
        for entry in ET.fromstring(other).findall(f"{{{ATOM}}}entry"):
            if entry.find(f".//{{{ESPI}}}LocalTimeParameters") is None:
                first.append(entry)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(first, encoding="utf-8") + b"\n"


# --- the small documents ----------------------------------------------------------------------------------


def _doc(root: ET.Element) -> bytes:
    ET.register_namespace("", ATOM)
    ET.register_namespace("espi", ESPI)
    ET.indent(root, space=" ")
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8") + b"\n"


def _text(parent: ET.Element, tag: str, text: str, ns: str = ATOM) -> ET.Element:
    el = ET.SubElement(parent, f"{{{ns}}}{tag}")
    el.text = text
    return el


def _entry(parent: ET.Element | None, entry_id: str, title: str, stamp: str, links: list[tuple[str, str, str]],
           kind: str, children: list) -> ET.Element:
    entry = ET.Element(f"{{{ATOM}}}entry") if parent is None else ET.SubElement(parent, f"{{{ATOM}}}entry")
    _text(entry, "id", entry_id)
    for href, rel, typ in links:
        ET.SubElement(entry, f"{{{ATOM}}}link", {"href": href, "rel": rel, "type": typ})
    _text(entry, "title", title)
    content = ET.SubElement(entry, f"{{{ATOM}}}content")
    _children(ET.SubElement(content, f"{{{ESPI}}}{kind}"), children)
    _text(entry, "published", stamp)
    _text(entry, "updated", stamp)
    return entry


def _children(parent: ET.Element, children: list) -> None:
    for tag, value in children:
        if isinstance(value, list):
            _children(ET.SubElement(parent, f"{{{ESPI}}}{tag}"), value)
        else:
            _text(parent, tag, value, ESPI)


def _usage_point(parent: ET.Element | None, grant: Grant, meter: str, base: str, stamp: str) -> ET.Element:
    sub = quote(grant.grant_id, safe="")
    up = f"{base}/Subscription/{sub}/UsagePoint/{quote(meter, safe='')}"
    return _entry(parent, espi._uuid("usage-point", meter), f"Meter {meter}", stamp,
                  [(up, "self", "espi-entry/UsagePoint"), (f"{base}/Subscription/{sub}/UsagePoint", "up",
                                                           "espi-feed/UsagePoint"),
                   (f"{up}/MeterReading", "related", "espi-feed/MeterReading")],
                  "UsagePoint", [("ServiceCategory", [("kind", "0")]), ("status", "1")])


def usage_points_feed(grant: Grant, *, base: str, now: float, meters: Sequence[str] | None = None) -> bytes:
    stamp = espi._rfc3339(now)
    root = ET.Element(f"{{{ATOM}}}feed")
    _text(root, "id", espi._uuid("usage-points", grant.grant_id))
    _text(root, "title", "UsagePoints")
    _text(root, "updated", stamp)
    ET.SubElement(root, f"{{{ATOM}}}link", {"href": f"{base}/Subscription/{quote(grant.grant_id, safe='')}/UsagePoint",
                                           "rel": "self", "type": "espi-feed/UsagePoint"})
    for meter in meters or grant.meters:
        _usage_point(root, grant, meter, base, stamp)
    return _doc(root)


def usage_point_entry(grant: Grant, meter: str, *, base: str, now: float) -> bytes:
    return _doc(_usage_point(None, grant, meter, base, espi._rfc3339(now)))


def authorization_entry(grant: Grant, scope: Scope, *, base: str, now: float, status: int) -> bytes:
    """The ESPI Authorization of a grant: status 1 active / 0 revoked (or expired), authorizedPeriod,
    publishedPeriod (HistoryLength back from now), scope, and the URIs the party uses."""
    created = espi._epoch(grant.created_at)
    ends = espi._epoch(grant.expires_at) if grant.expires_at else 0
    sub = quote(grant.grant_id, safe="")
    href = f"{base}/Authorization/{sub}"
    children = [("authorizedPeriod", [("duration", str(max(0, ends - created))), ("start", str(created))]),
                ("publishedPeriod", [("duration", str(scope.history_s)), ("start", str(int(now) - scope.history_s))]),
                ("status", str(status)), ("expires_at", str(ends)), ("grant_type", "authorization_code"),
                ("scope", str(scope)), ("token_type", "Bearer"),
                ("resourceURI", f"{base}/Batch/Subscription/{sub}"), ("authorizationURI", href)]
    return _doc(_entry(None, espi._uuid("authorization", grant.grant_id), f"Authorization of {grant.party}",
                       espi._rfc3339(now), [(href, "self", "espi-entry/Authorization"),
                                            (f"{base}/Authorization", "up", "espi-feed/Authorization")],
                       "Authorization", children))


def service_status(status: int = 1) -> bytes:
    root = ET.Element(f"{{{ESPI}}}ServiceStatus")
    _text(root, "currentStatus", str(status), ESPI)
    return _doc(root)


def batch_list(uris: Iterable[str]) -> bytes:
    root = ET.Element(f"{{{ESPI}}}BatchList")
    for uri in uris:
        _text(root, "resources", uri, ESPI)
    return _doc(root)


def check_meter(grant: Grant, meter: str) -> str:
    if meter not in grant.meters:
        raise ShareError("no such UsagePoint in this subscription")
    return meter
