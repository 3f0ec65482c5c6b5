"""Continuous shares (Green Button "Connect My Data"): in-scope readings reach the party as they are sealed.

The seal agent holds each DEK for the instant it seals a reading; ``ShareTap`` (owned by the pipeline) checks
the sealed reading against the active grants, derives that record's key (never handing out the DEK), and at
the end of the seal batch publishes, per grant, one message on ``shares.<grant_id>``: the sealed rows as the
store will hold them, and their record keys (or, for a grant with ``fields``, the projected values)
HPKE-sealed to the party's public key with ``info`` bound to the grant id. The worker never holds the
owner's private key: grants come from the consent log in the store, opened with the index key it already
has, re-read every ``refresh_s`` seconds — so a revoked (or expired) grant stops delivering within that
time plus one batch. Readings only (bills reach parties through bundles).

The recipient (``open_message``) needs only its party key: it checks every record key against its
envelope's commitment, opens the record and checks it is in the grant's scope. Ledger proofs come later,
in a bundle (the records are not leaves yet when they are sealed).
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any, Callable

import schemas
from streams.crypto import envelope as env
from streams.exceptions import InvalidEnvelope, ShareError
from streams.seal import Sealed, record_aad
from streams.share.bundle import check_scope, source_fields
from streams.share.grants import Grant, list_grants, state_at
from streams.share.parties import PartyKey, PartyPublicKey

FORMAT = "meterseal-share-stream/1"
ROW_FIELDS = ("record_id", "kind", "schema_version", "key_id", "region", "category", "meter_tok", "account_tok",
              "day_tok", "month_tok", "year_tok", "sealed_at_ms", "envelope")


def topic_of(grant_id: str) -> str:
    return f"shares.{grant_id}"


def _info(grant_id: str) -> bytes:
    return b"meterseal/share-stream/v1|" + grant_id.encode()


class ShareTap:
    """Collects in-scope sealed readings per active grant during a seal batch; ``take()`` makes the messages."""

    def __init__(self, store_dir: Path | str | Any, index_key: bytes, *, clock: Callable[[], float] = time.time,
                 refresh_s: float = 2.0) -> None:
        # a directory, s3://... or a ``Store`` (the worker's own: the consent log is read through it)
        self.store_dir = Path(store_dir) if isinstance(store_dir, Path) else store_dir
        self._index_key, self.clock, self.refresh_s = index_key, clock, refresh_s
        self._grants: list[tuple[Grant, PartyPublicKey]] = []
        self._loaded_at = float("-inf")
        self._pending: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = {}
        self.errors = 0

    def grants(self) -> list[tuple[Grant, PartyPublicKey]]:
        now = self.clock()
        if now - self._loaded_at >= self.refresh_s:
            self._loaded_at = now
            try:
                fresh = [g for g in list_grants(self.store_dir, index_key=self._index_key, now=now)
                         if g.kind == "readings" and g.state == "active" and g.party_public_key]  # keyless: ESPI only
                self._grants = [(g, PartyPublicKey.parse(g.party_public_key)) for g in fresh]
            except ShareError:
                self.errors += 1  # an unreadable consent log stops every share (fails closed), never the worker
                self._grants = []
        return [(g, p) for g, p in self._grants if state_at(g, now) == "active"]

    def observe(self, outcome: Any, record_key: Callable[[dict[str, Any]], bytes]) -> int:
        """Queue a sealed reading for every active grant whose scope holds it; returns how many grants.
        ``record_key(record)`` is that record's key (the sealer's DEK ring derives it)."""
        if not isinstance(outcome, Sealed) or outcome.reading is None:
            return 0
        grants = self.grants()
        if not grants:
            return 0
        reading = outcome.reading
        plain = reading.as_record()
        day = reading.day.isoformat()
        hits = 0
        for grant, _ in grants:
            if not grant.holds(kind="readings", day=day, meter_id=reading.meter_id, account_id=reading.account_id,
                               region=reading.region):
                continue
            if grant.fields is None:
                secret = {"key": record_key(outcome.record).hex()}
            else:
                values = source_fields("reading", plain)
                secret = {"values": {f: values[f] for f in grant.fields if f in values}}
            self._pending.setdefault(grant.grant_id, []).append((outcome.record, secret))
            hits += 1
        return hits

    def take(self) -> list[tuple[str, bytes, bytes]]:
        """(topic, key, value) per grant with queued readings; clears the queue."""
        out = []
        parties = {g.grant_id: (g, p) for g, p in self._grants}
        for grant_id, items in self._pending.items():
            if grant_id not in parties:
                continue
            grant, public = parties[grant_id]
            payload = json.dumps({"grant_id": grant_id, "records": [s for _, s in items]}).encode()
            doc = {"format": FORMAT, "grant_id": grant_id,
                   "grant": {k: v for k, v in grant.to_dict().items()
                             if k in ("kind", "start", "end", "meters", "accounts", "region", "fields")},
                   "records": [{k: (base64.b64encode(r[k]).decode() if k == "envelope" else r.get(k)) for k in ROW_FIELDS}
                               for r, _ in items],
                   "sealed": base64.b64encode(public.seal(payload, info=_info(grant_id))).decode()}
            out.append((topic_of(grant_id), grant_id.encode(), json.dumps(doc, separators=(",", ":")).encode()))
        self._pending.clear()
        return out


def open_message(value: bytes, *, party: PartyKey, grant_id: str) -> list[dict[str, Any]]:
    """The readings in one ``shares.<grant_id>`` message, opened and checked with the party key."""
    try:
        doc = json.loads(value)
        if doc.get("format") != FORMAT or doc.get("grant_id") != grant_id:
            raise ValueError(f"not a {FORMAT} message of grant {grant_id}")
        grant = {**doc["grant"], "grant_id": grant_id}
        rows = doc["records"]
        sealed = base64.b64decode(doc["sealed"], validate=True)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ShareError(f"share message is malformed: {exc}") from None
    payload = json.loads(party.open(sealed, info=_info(grant_id)))
    secrets = payload.get("records")
    if payload.get("grant_id") != grant_id or not isinstance(secrets, list) or len(secrets) != len(rows):
        raise ShareError("the sealed record keys do not match the message's records")
    out = []
    for n, (row, secret) in enumerate(zip(rows, secrets)):
        what = f"record {n} ({row.get('record_id')})"
        try:
            row = {**row, "envelope": base64.b64decode(row["envelope"], validate=True)}
            if "key" in secret:
                body = env.open_with_record_key(bytes.fromhex(secret["key"]), row["envelope"], aad=record_aad(row))
                values = source_fields("reading", schemas.decode_body(body, schemas.get("reading", row["schema_version"]),
                                                                      schemas.get("reading")))
            else:
                values = dict(secret["values"])
        except (InvalidEnvelope, ValueError, KeyError, TypeError) as exc:
            raise ShareError(f"{what}: does not open with its record key (altered, or a key for another record)") from exc
        check_scope(what, grant, row, values)
        out.append({**values, "record_id": row["record_id"], "opened": "key" in secret, "ledger": "pending"})
    return out
