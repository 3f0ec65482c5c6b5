"""The alert history: every record of the ``alerts`` topic kept in the store table ``alerts`` (once per alert id),
searchable by meter (its token), region, kind and time. It names meters by token only, like the topic."""

from __future__ import annotations

from typing import Any, Iterable

from streams.crypto.tokens import BlindIndex


def record(store: Any, partition: int, alerts: Iterable[tuple[int, dict[str, Any]]]) -> int:
    """Keep ``(offset, alert)`` pairs of one ``alerts`` partition; returns how many were new."""
    return store.append("alerts", partition, list(alerts))


def search(con: Any, *, index: BlindIndex | None = None, meter: str | None = None, meter_toks: Iterable[str] = (),
           region: str | None = None, kind: str | None = None, severity: str | None = None,
           since_ms: int | None = None, until_ms: int | None = None, limit: int = 500) -> list[dict[str, Any]]:
    """The newest alerts matching every given field (``meter`` is turned into its token with ``index``;
    ``meter_toks`` limits them to a customer's own meters)."""
    clauses, params = [], []
    toks = list(meter_toks)
    if meter is not None:
        if index is None:
            raise ValueError("searching by meter id needs the index key")
        toks = [t for t in toks if t == index.meter(meter)] if toks else [index.meter(meter)]
        if not toks:
            return []
    if toks:
        clauses.append(f"meter_tok IN ({', '.join('?' * len(toks))})")
        params += toks
    for column, value in (("region", region), ("kind", kind), ("severity", severity)):
        if value:
            clauses.append(f"{column} = ?")
            params.append(value)
    if since_ms is not None:
        clauses.append("detected_at_ms >= ?")
        params.append(int(since_ms))
    if until_ms is not None:
        clauses.append("detected_at_ms < ?")
        params.append(int(until_ms))
    sql = ("SELECT alert_id, meter_tok, ts, kind, score, severity, reason, region, detected_at_ms FROM alerts"
           + (" WHERE " + " AND ".join(clauses) if clauses else "") + " ORDER BY detected_at_ms DESC LIMIT ?")
    cur = con.execute(sql, params + [int(limit)])
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def delete_older(store: Any, con: Any, cutoff_s: float) -> int:
    """Retention: delete the alerts detected before ``cutoff_s`` (epoch seconds)."""
    ids = [r[0] for r in con.execute("SELECT alert_id FROM alerts WHERE detected_at_ms < ?",
                                     [int(cutoff_s * 1000)]).fetchall()]
    return store.delete_rows("alerts", "alert_id", ids) if ids else 0


def erase(store: Any, meter_toks: Iterable[str]) -> int:
    toks = list(meter_toks)
    return store.delete_rows("alerts", "meter_tok", toks) if toks else 0
