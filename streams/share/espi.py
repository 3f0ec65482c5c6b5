"""Green Button (NAESB REQ.21 ESPI) in and out: Atom feeds of UsagePoint, LocalTimeParameters, MeterReading,
ReadingType and IntervalBlocks of IntervalReadings.

Out (``feed``): one UsagePoint per meter; ReadingType ``uom`` 72 (Wh), ``powerOfTenMultiplier`` 0, so an
IntervalReading's ``value`` is the interval's energy in whole Wh (kWh × 1000, rounded); ``accumulationBehaviour``
4 (delta data), ``kind`` 12 (energy), ``commodity`` 1 (electricity); ``timePeriod`` is the interval's start in
seconds since 1970 UTC and its length (a meterseal reading's ``ts`` is the *end* of its interval); one
IntervalBlock per UTC day; LocalTimeParameters say UTC with no DST. Elements are written in the schema's
order and every Atom link carries its ``type``, so feeds validate against ``espi.xsd``/``atom.xsd``.

In (``parse_feed``): any ESPI feed, parsed with ``defusedxml`` (no entity expansion, no external entities):
value × 10^powerOfTenMultiplier in the ReadingType's unit (Wh, or kWh for uom 72 with multiplier 3), the
interval's end as local time per LocalTimeParameters (tzOffset, plus dstOffset between the DST rules),
so the same instant lands in the store. Tolerates ReadingType nested inside MeterReading (seen in the wild;
``espi.xsd`` rejects it, and ``feed`` never writes it) and feeds with no interval data at all.

Pure: bytes in, bytes or dicts out.
"""

from __future__ import annotations

import datetime as dt
import uuid
import xml.etree.ElementTree as ET
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable, Sequence
from urllib.parse import quote, unquote

from streams.exceptions import ShareError

ATOM = "http://www.w3.org/2005/Atom"
ESPI = "http://naesb.org/espi"
UOM_WH = 72
_NS = uuid.UUID("6f1d3c2a-9b7e-4c1f-8a55-6d2f0e9b7a10")  # meterseal's namespace for feed/entry uuids


def _uuid(*parts: str) -> str:
    return f"urn:uuid:{uuid.uuid5(_NS, '|'.join(parts))}"


def _epoch(ts: str) -> int:
    stamp = dt.datetime.fromisoformat(ts.replace("Z", "+00:00"))
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.timezone.utc)
    return int(stamp.timestamp())


def _rfc3339(epoch: float) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def interval_length(epochs: Sequence[int], default: int = 3600) -> int:
    """The smallest positive step between successive readings (their interval), in seconds."""
    steps = [b - a for a, b in zip(epochs, epochs[1:]) if b > a]
    return min(steps) if steps else default


def feed(readings: Iterable[dict[str, Any]], *, title: str = "meterseal Green Button Download My Data",
         updated: float | None = None, base: str = "https://meterseal.invalid/espi/1_1/resource",
         subscription: str | None = None, interval_s: int | None = None) -> bytes:
    """An ESPI Atom feed (UTF-8 bytes) of readings (dicts with ``meter_id``, ``ts`` — end of the interval — and
    ``kwh``), one UsagePoint per meter. ``subscription``: the Subscription id in the resource links (the
    Connect My Data API's; default 1 and a self link of ``Batch/Subscription``); ``interval_s``: every reading's
    interval length (default: the smallest step between a meter's readings)."""
    by_meter: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for r in readings:
        by_meter[str(r["meter_id"])].append((_epoch(str(r["ts"])), float(r["kwh"])))
    if not by_meter:
        raise ShareError("nothing to write: no readings in the range asked for")
    ET.register_namespace("", ATOM)
    ET.register_namespace("espi", ESPI)
    now = updated if updated is not None else max(e for rows in by_meter.values() for e, _ in rows)
    stamp = _rfc3339(now)
    root = ET.Element(f"{{{ATOM}}}feed")
    _text(root, "id", _uuid("feed", *sorted(by_meter)))
    _text(root, "title", title)
    _text(root, "updated", stamp)
    sub = "1" if subscription is None else quote(subscription, safe="")
    _link(root, f"{base}/Batch/Subscription" + ("" if subscription is None else f"/{sub}"), "self",
          "espi-feed/Subscription")
    ltp = f"{base}/LocalTimeParameters/1"
    _entry(root, _uuid("ltp"), "UTC", stamp, [(ltp, "self", "espi-entry/LocalTimeParameters"),
                                              (f"{base}/LocalTimeParameters", "up", "espi-feed/LocalTimeParameters")],
           "LocalTimeParameters", [("dstEndRule", "B40E2000"), ("dstOffset", "0"), ("dstStartRule", "360E2000"),
                                   ("tzOffset", "0")])
    for n, (meter, rows) in enumerate(sorted(by_meter.items()), start=1):  # noqa: B007 (n names ReadingTypes)
        rows.sort()
        length = interval_s or interval_length([e for e, _ in rows])
        up = f"{base}/Subscription/{sub}/UsagePoint/{quote(meter, safe='')}"  # the meter id, read back by parse_feed
        mr, rt = f"{up}/MeterReading/1", f"{base}/ReadingType/{n}"
        _entry(root, _uuid("usage-point", meter), f"Meter {meter}", stamp,
               [(up, "self", "espi-entry/UsagePoint"), (f"{base}/Subscription/{sub}/UsagePoint", "up", "espi-feed/UsagePoint"),
                (f"{mr[:-2]}", "related", "espi-feed/MeterReading"), (ltp, "related", "espi-entry/LocalTimeParameters")],
               "UsagePoint", [("ServiceCategory", [("kind", "0")]), ("status", "1")])
        _entry(root, _uuid("meter-reading", meter), "Energy delivered (Wh)", stamp,
               [(mr, "self", "espi-entry/MeterReading"), (mr[:-2], "up", "espi-feed/MeterReading"),
                (rt, "related", "espi-entry/ReadingType"), (f"{mr}/IntervalBlock", "related", "espi-feed/IntervalBlock")],
               "MeterReading", [])
        _entry(root, _uuid("reading-type", meter, str(length)), "Type of Meter Reading Data", stamp,
               [(rt, "self", "espi-entry/ReadingType"), (f"{base}/ReadingType", "up", "espi-feed/ReadingType")],
               "ReadingType", [("accumulationBehaviour", "4"), ("commodity", "1"), ("flowDirection", "1"),
                               ("intervalLength", str(length)), ("kind", "12"), ("phase", "769"),
                               ("powerOfTenMultiplier", "0"), ("timeAttribute", "0"), ("uom", str(UOM_WH))])
        days: dict[int, list[tuple[int, float]]] = defaultdict(list)
        for end, kwh in rows:
            days[(end - length) // 86400].append((end, kwh))
        for b, (day, block) in enumerate(sorted(days.items()), start=1):
            readings_xml = [("IntervalReading", [("timePeriod", [("duration", str(length)), ("start", str(end - length))]),
                                                 ("value", str(round(kwh * 1000)))]) for end, kwh in block]
            _entry(root, _uuid("interval-block", meter, str(day)), f"Interval block {day * 86400}", stamp,
                   [(f"{mr}/IntervalBlock/{b}", "self", "espi-entry/IntervalBlock"),
                    (f"{mr}/IntervalBlock", "up", "espi-feed/IntervalBlock")],
                   "IntervalBlock", [("interval", [("duration", "86400"), ("start", str(day * 86400))]), *readings_xml])
    ET.indent(root, space=" ")
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8") + b"\n"


def _text(parent: ET.Element, tag: str, text: str, ns: str = ATOM) -> ET.Element:
    el = ET.SubElement(parent, f"{{{ns}}}{tag}")
    el.text = text
    return el


def _link(parent: ET.Element, href: str, rel: str, kind: str) -> None:
    ET.SubElement(parent, f"{{{ATOM}}}link", {"href": href, "rel": rel, "type": kind})


def _espi(parent: ET.Element, children: list) -> None:
    for tag, value in children:
        if isinstance(value, list):
            _espi(ET.SubElement(parent, f"{{{ESPI}}}{tag}"), value)
        else:
            _text(parent, tag, value, ESPI)


def _entry(root: ET.Element, entry_id: str, title: str, stamp: str, links: list[tuple[str, str, str]], kind: str,
           children: list) -> None:
    entry = ET.SubElement(root, f"{{{ATOM}}}entry")
    _text(entry, "id", entry_id)
    for href, rel, typ in links:
        _link(entry, href, rel, typ)
    _text(entry, "title", title)
    content = ET.SubElement(entry, f"{{{ATOM}}}content")
    _espi(ET.SubElement(content, f"{{{ESPI}}}{kind}"), children)
    _text(entry, "published", stamp)
    _text(entry, "updated", stamp)


# --- in ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DstRule:
    """ESPI DstRuleType (as IEEE 2030.5): bits 0-11 seconds, 12-16 hours, 17-19 day of week (1 = Monday ..
    7 = Sunday), 20-24 day of month, 25-27 operator (0 on the day of month, 1 the weekday on or after it,
    2-6 its first..fifth occurrence, 7 its last), 28-31 month; in local standard time."""

    month: int
    operator: int
    day_of_month: int
    day_of_week: int
    hours: int
    seconds: int

    @classmethod
    def parse(cls, hex_text: str) -> "DstRule":
        v = int(hex_text.strip(), 16)
        return cls(v >> 28, (v >> 25) & 7, (v >> 20) & 31, (v >> 17) & 7, (v >> 12) & 31, v & 0xFFF)

    def start_in(self, year: int) -> dt.datetime:
        """When the rule applies in ``year``, as a naive local standard time."""
        if not 1 <= self.month <= 12:
            raise ValueError("month")
        if self.operator == 0:
            day = dt.date(year, self.month, self.day_of_month)
        else:
            weekday = self.day_of_week - 1  # Python: Monday = 0
            if self.operator == 1:
                first = dt.date(year, self.month, max(1, self.day_of_month))
                day = first + dt.timedelta((weekday - first.weekday()) % 7)
            elif self.operator == 7:
                nxt = dt.date(year + (self.month == 12), self.month % 12 + 1, 1)
                last = nxt - dt.timedelta(1)
                day = last - dt.timedelta((last.weekday() - weekday) % 7)
            else:
                first = dt.date(year, self.month, 1)
                day = first + dt.timedelta((weekday - first.weekday()) % 7 + 7 * (self.operator - 2))
        return dt.datetime(day.year, day.month, day.day) + dt.timedelta(hours=self.hours, seconds=self.seconds)


@dataclass(frozen=True)
class LocalTime:
    tz_offset: int = 0
    dst_offset: int = 0
    dst_start: DstRule | None = None
    dst_end: DstRule | None = None

    def offset_at(self, epoch: int) -> int:
        """Seconds east of UTC at ``epoch``: tzOffset, plus dstOffset while DST is on."""
        if not self.dst_offset or self.dst_start is None or self.dst_end is None:
            return self.tz_offset
        standard = dt.datetime(1970, 1, 1) + dt.timedelta(seconds=epoch + self.tz_offset)
        try:
            start, end = self.dst_start.start_in(standard.year), self.dst_end.start_in(standard.year)
        except ValueError:
            return self.tz_offset
        on = start <= standard < end if start < end else not end <= standard < start
        return self.tz_offset + (self.dst_offset if on else 0)

    def iso(self, epoch: int) -> str:
        offset = dt.timezone(dt.timedelta(seconds=self.offset_at(epoch)))
        return dt.datetime.fromtimestamp(epoch, offset).isoformat()


def _local(el: ET.Element | None) -> LocalTime:
    if el is None:
        return LocalTime()
    get = {c.tag.split("}")[-1]: (c.text or "").strip() for c in el}
    try:
        return LocalTime(int(get.get("tzOffset", "0") or 0), int(get.get("dstOffset", "0") or 0),
                         DstRule.parse(get["dstStartRule"]) if get.get("dstStartRule") else None,
                         DstRule.parse(get["dstEndRule"]) if get.get("dstEndRule") else None)
    except ValueError as exc:
        raise ShareError(f"LocalTimeParameters are malformed: {exc}") from None


def _find(el: ET.Element, name: str) -> ET.Element | None:
    return el.find(f"{{{ESPI}}}{name}")


def _int(el: ET.Element | None, name: str, default: int | None = None) -> int:
    child = None if el is None else _find(el, name)
    if child is None or not (child.text or "").strip():
        if default is None:
            raise ShareError(f"ESPI {name} is missing")
        return default
    try:
        return int(child.text.strip())
    except ValueError:
        raise ShareError(f"ESPI {name} is not an integer: {child.text.strip()[:20]!r}") from None


def _self_href(entry: ET.Element) -> str:
    for link in entry.findall(f"{{{ATOM}}}link"):
        if link.get("rel") == "self":
            return link.get("href", "")
    return ""


def parse_feed(data: bytes, *, meter_id: str | None = None) -> list[dict[str, Any]]:
    """Interval readings of an ESPI feed as dicts ``{meter_id, ts, kwh, wh}`` (``ts``: the interval's end, local
    time per LocalTimeParameters). ``meter_id`` names the meter (default: the UsagePoint's id in the feed).
    Raises ``ShareError`` on XML that is malformed, unsafe (entities, DTDs) or not an Atom feed."""
    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import ParseError, fromstring

    try:
        root = fromstring(data, forbid_dtd=True)
    except (ParseError, DefusedXmlException, ValueError) as exc:
        raise ShareError(f"not a readable ESPI feed: {exc}") from None
    entries = root.findall(f"{{{ATOM}}}entry") if root.tag == f"{{{ATOM}}}feed" else (
        [root] if root.tag == f"{{{ATOM}}}entry" else None)
    if entries is None:
        raise ShareError("not an ESPI feed: the root element is not an Atom feed or entry")
    local, blocks, usage_points = LocalTime(), [], []
    reading_types: dict[str, ET.Element] = {}  # self href -> ReadingType
    meter_readings: dict[str, str] = {}  # MeterReading self href -> its ReadingType's href
    for entry in entries:
        content = entry.find(f"{{{ATOM}}}content")
        if content is None:
            continue
        href = _self_href(entry)
        for el in content:
            name = el.tag.split("}")[-1]
            if name == "LocalTimeParameters":
                local = _local(el)
            elif name == "ReadingType":
                reading_types[href] = el
            elif name == "MeterReading":
                nested = el.find(f"{{{ESPI}}}ReadingType")  # the real-world deviation: tolerated, never written
                if nested is not None:
                    reading_types[href + "#ReadingType"] = nested
                    meter_readings[href] = href + "#ReadingType"
                else:
                    meter_readings[href] = next((link.get("href", "") for link in entry.findall(f"{{{ATOM}}}link")
                                                 if link.get("rel") == "related" and "ReadingType" in link.get("href", "")), "")
            elif name == "IntervalBlock":
                blocks.append((href, el))
            elif name == "UsagePoint":
                usage_points.append(href)
    if blocks and not reading_types:
        raise ShareError("the feed has interval data but no ReadingType: its unit is unknown")
    out = []
    for href, block in blocks:
        owner = max((mr for mr in meter_readings if mr and href.startswith(mr + "/")), key=len, default=None)
        rt = reading_types.get(meter_readings.get(owner, "") if owner else "") or next(iter(reading_types.values()))
        uom, power = _int(rt, "uom", UOM_WH), _int(rt, "powerOfTenMultiplier", 0)
        if uom != UOM_WH:
            raise ShareError(f"ReadingType uom {uom} is not energy in Wh (72): meterseal reads energy feeds only")
        meter = meter_id or _usage_point_id(href) or (_usage_point_id(usage_points[0] + "/") if usage_points else "espi")
        for reading in block.findall(f"{{{ESPI}}}IntervalReading"):
            period = _find(reading, "timePeriod")
            start, duration = _int(period, "start"), _int(period, "duration")
            wh = _int(reading, "value") * 10 ** power
            out.append({"meter_id": meter, "ts": local.iso(start + duration), "kwh": wh / 1000, "wh": wh,
                        "interval_s": duration})
    out.sort(key=lambda r: (r["meter_id"], _epoch(r["ts"])))
    return out


def _usage_point_id(href: str) -> str | None:
    """The UsagePoint id in a resource href (``.../UsagePoint/<id>/...``), unquoted."""
    _, sep, rest = href.partition("/UsagePoint/")
    return unquote(rest.split("/", 1)[0]) if sep and rest.split("/", 1)[0] else None


def raw_readings(parsed: Sequence[dict[str, Any]], *, region: str, category: str = "Domestic",
                 register_start_kwh: float = 0.0) -> list[dict[str, Any]]:
    """``parse_feed``'s rows as raw readings for ``readings.raw``: the register is the running sum of the
    intervals from ``register_start_kwh`` (ESPI delta data carries no register)."""
    out, register_wh = [], round(register_start_kwh * 1000)
    for row in parsed:
        register_wh += row["wh"]
        out.append({"meter_id": row["meter_id"], "ts": row["ts"], "kwh": row["wh"] / 1000,
                    "register_kwh": register_wh / 1000, "region": region, "category": category})
    return out
