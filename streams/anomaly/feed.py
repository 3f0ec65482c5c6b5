"""The alerts topic as a feed: alerts decoded from the broker, and the ``--since`` time parser.

Used by ``meterseal alerts`` and anything else that shows alerts; imports the broker client and schemas.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from typing import Any, Iterator

import schemas
from streams.ingest.broker import consume


def parse_since(text: str | None, now: float | None = None) -> float | None:
    """``15m``, ``2h``, ``1d`` ago, or an ISO-8601 time, as epoch seconds.

    >>> parse_since("2h", now=10_000.0)
    2800.0
    >>> parse_since("2024-03-01T00:00:00Z")
    1709251200.0
    """
    if not text:
        return None
    now = time.time() if now is None else now
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhd])", text.strip())
    if match:
        return now - float(match[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]
    try:
        stamp = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r}: use e.g. 15m, 2h, 1d or an ISO-8601 time") from None
    return (stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.timezone.utc)).timestamp()


def follow_alerts(bootstrap: str, *, idle: float | None = 2.0) -> Iterator[dict[str, Any]]:
    """Alerts from the beginning of the topic; stops after ``idle`` quiet seconds (None: never)."""
    for msg in consume(bootstrap, "alerts", idle=idle):
        try:
            yield schemas.decode("alert", msg.value())
        except schemas.SchemaError:
            continue  # not an alert: nothing to show
