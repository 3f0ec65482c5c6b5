"""Grants: what one party may receive, for how long — and the consent log that records each one.

A grant names a registered party, a scope (meters, accounts or a region; a date range, inclusive; readings
or bills; optionally the fields), a purpose and an optional expiry. Its state is ``active``, ``expired``
(past ``expires_at``) or ``revoked``. Grants are event-sourced: every grant and every revocation is an
event file under ``<store>/consent/events/`` *and* a leaf of the ledger's consent log
(``<store>/ledger/consent/p000``), under signed checkpoints like every other log, so
``meterseal ledger verify`` covers them and a recipient can be shown when its grant began and ended.

An event's body (the grant with its meter and account ids) is sealed (AES-256-GCM, envelope v1) under a key
derived from the index key, so whoever holds the store learns grant ids, parties' key fingerprints and
times, not whose data is shared; the leaf covers the sealed bytes.

API (plain functions, explicit keys; the CLI and the console call these)::

    create_grant(store_dir, signer=..., index_key=..., party=..., meters=[...], start=..., end=...) -> Grant
    list_grants(store_dir, index_key=..., meters=None) -> list[Grant]
    get_grant(store_dir, grant_id, index_key=...) -> Grant
    revoke_grant(store_dir, grant_id, signer=..., index_key=...) -> Grant
    record_denial(store_dir, signer=..., index_key=..., party=..., meters=[...]) -> dict (the leaf's row)
    consent_events(store_dir, index_key=...) -> list[dict] (every grant, revocation and denial, opened)
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from ledger import leaf as leaf_codec
from ledger.hashing import leaf_hash
from ledger.log import Log
from ledger.note import Signer

from streams.crypto import _primitives
from streams.crypto.envelope import DataKey, open_with, seal
from streams.exceptions import InvalidEnvelope, ShareError
from streams.store.base import Store, open_store
from streams.store.segments import log_origin
from streams.share.parties import Party

KINDS = ("readings", "bills")
MAX_PURPOSE = 500  # characters of a grant's purpose and of a revocation's reason: every listing re-reads them
STATES = ("active", "expired", "revoked")
LOG_TABLE, LOG_PARTITION = "consent", 0
_KEY_ID = b"meterseal-grants"  # 16 bytes: the envelope's key id slot

# the source field names a grant may list in ``fields`` (readings: the raw reading; bills: the seed columns)
READING_FIELDS = ("meter_id", "ts", "kwh", "register_kwh", "region", "category", "account_id")


@dataclass(frozen=True)
class Grant:
    """One grant as of ``now`` (``state`` is computed from its events and the clock)."""

    grant_id: str
    party: str
    party_fingerprint: str
    party_public_key: str
    kind: str
    start: str  # YYYY-MM-DD, inclusive
    end: str  # YYYY-MM-DD, inclusive
    meters: tuple[str, ...] = ()
    accounts: tuple[str, ...] = ()
    region: str | None = None
    fields: tuple[str, ...] | None = None  # None: every field
    purpose: str = ""
    expires_at: str | None = None  # ISO-8601, UTC
    created_at: str = ""
    created_leaf: int | None = None
    revoked_at: str | None = None
    revoked_leaf: int | None = None
    revoke_reason: str | None = None
    state: str = "active"
    client_id: str | None = None  # an OAuth client's authorization (Connect My Data, ``streams.connect``)
    scope: str | None = None  # its ESPI scope string

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for name in ("meters", "accounts"):
            out[name] = list(out[name])
        out["fields"] = None if self.fields is None else list(self.fields)
        return out

    def scope_text(self) -> str:
        who = (f"meters {', '.join(self.meters)}" if self.meters else f"accounts {', '.join(self.accounts)}"
               if self.accounts else f"region {self.region}")
        return f"{self.kind} of {who}, {self.start}..{self.end}"

    def holds(self, *, kind: str, day: str, meter_id: str | None, account_id: str | None, region: str | None) -> bool:
        """Whether a record — its kind (``readings``/``bills``), UTC day (YYYY-MM-DD), meter, account and region —
        lies inside this grant's scope (not whether the grant is active: ``state_at``)."""
        return (kind == self.kind and self.start <= day <= self.end
                and (not self.meters or meter_id in self.meters)
                and (not self.accounts or account_id in self.accounts)
                and (not self.region or region == self.region))

    def check_active(self, *, now: float | None = None) -> None:
        """``ShareError`` unless the grant is active at ``now``."""
        state = state_at(self, time.time() if now is None else now)
        if state != "active":
            when = self.revoked_at if state == "revoked" else self.expires_at
            raise ShareError(f"grant {self.grant_id} is {state} (since {when}): nothing is released under it")


def state_at(grant: Grant, now: float) -> str:
    if grant.revoked_at is not None:
        return "revoked"
    if grant.expires_at is not None and _epoch(grant.expires_at) <= now:
        return "expired"
    return "active"


def of_current_occupants(meters: Iterable[str], made_at: str, occupied_since: Callable[[str], float]) -> bool:
    """Whether a grant (or a refusal) made at ``made_at`` (ISO 8601) belongs to its meters' current occupants:
    made after each meter's last erasure (``occupied_since(meter)``, -inf if never erased). A meter re-let after an
    erasure keeps its id; its new customer never sees what the erased one granted or refused."""
    made = _epoch(made_at)
    return all(made >= occupied_since(m) for m in meters)


def _epoch(iso: str) -> float:
    value = dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.timestamp()


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_expiry(text: str | None) -> str | None:
    """An ISO-8601 date or time as UTC ISO text (a time without an offset is UTC)."""
    if text is None:
        return None
    try:
        return _iso(_epoch(text))
    except ValueError:
        raise ShareError(f"bad --expires {text!r}: give ISO-8601, e.g. 2026-12-31 or 2026-12-31T18:00:00Z") from None


# --- the consent log -----------------------------------------------------------------------------------


def _body_key(index_key: bytes) -> DataKey:
    return DataKey(_KEY_ID, _primitives.hkdf_sha256(index_key, info=b"meterseal/consent/v1"))


def _aad(event: str, grant_id: str) -> bytes:
    return f"meterseal/consent/v1|{event}|{grant_id}".encode()


EVENTS = "consent/events/"  # one write-once object per event, named by its leaf index, under the store


def consent_origin(signer_key_hash_hex: str) -> str:
    return log_origin(signer_key_hash_hex, LOG_TABLE, LOG_PARTITION)


def _signers(signer: Signer | Sequence[Signer]) -> list[Signer]:
    return list(signer) if isinstance(signer, (list, tuple)) else [signer]


def _append(store_dir: Path | str | Store, signer: Signer | Sequence[Signer], index_key: bytes, event: str,
            grant_id: str, party_fingerprint: str, body: dict[str, Any], at: float) -> dict[str, Any]:
    """Seal ``body``, write the event object and append its leaf to the consent log, then sign a checkpoint."""
    signers = _signers(signer)
    store = open_store(store_dir, create=False)
    sealed = seal(_body_key(index_key), json.dumps(body, sort_keys=True).encode(), aad=_aad(event, grant_id))
    row = {"event": event, "grant_id": grant_id, "party_fingerprint": party_fingerprint,
           "at_ms": int(at * 1000), "body": sealed}
    with store.locked(LOG_TABLE, LOG_PARTITION):
        log = Log(consent_origin(signers[0].verifier.key_hash.hex()), store.hash_store(LOG_TABLE, LOG_PARTITION),
                  store.checkpoint_store(LOG_TABLE, LOG_PARTITION))
        row["leaf_index"] = log.size
        key = f"{EVENTS}{row['leaf_index']:010d}.json"
        # under the log's lock an object at this index has no leaf (a crash between the two writes): replace it
        store.blobs.put(key, json.dumps({**row, "body": row["body"].hex()}, indent=2).encode())
        log.append([leaf_hash(leaf_codec.encode_consent_event(row))])
        log.checkpoint(*signers)
    return row


def consent_rows(store_dir: Path | str | Store) -> list[dict[str, Any]]:
    """Every consent event as stored (sealed body as bytes), by leaf index: the rows ``ledger verify`` audits."""
    blobs = open_store(store_dir, create=False).blobs
    rows = []
    for key in blobs.list(EVENTS):
        if not key.endswith(".json"):
            continue
        try:
            doc = json.loads(blobs.get(key) or b"")
            doc["body"] = bytes.fromhex(doc["body"])
        except (ValueError, KeyError) as exc:
            raise ShareError(f"consent event {key} is unreadable ({exc}): run `meterseal ledger verify`") from exc
        rows.append(doc)
    return sorted(rows, key=lambda r: r.get("leaf_index", -1))


def _grants(store_dir: Path | str | Store, index_key: bytes, now: float) -> dict[str, Grant]:
    key = {_KEY_ID: _body_key(index_key)}
    grants: dict[str, Grant] = {}
    for row in consent_rows(store_dir):
        try:
            body = json.loads(open_with(key, row["body"], aad=_aad(row["event"], row["grant_id"])))
        except (InvalidEnvelope, ValueError) as exc:
            raise ShareError(f"consent event at leaf {row.get('leaf_index')} does not open with this index key "
                             "(another keystore, or altered: run `meterseal ledger verify`)") from exc
        if row["event"] == "grant":
            grants[row["grant_id"]] = Grant(**{**body, "meters": tuple(body["meters"]),
                                               "accounts": tuple(body["accounts"]),
                                               "fields": None if body["fields"] is None else tuple(body["fields"]),
                                               "created_leaf": row["leaf_index"]})
        elif row["event"] == "revoke" and row["grant_id"] in grants:
            grants[row["grant_id"]] = replace(grants[row["grant_id"]], revoked_at=body["revoked_at"],
                                              revoked_leaf=row["leaf_index"], revoke_reason=body.get("reason"))
    return {gid: replace(g, state=state_at(g, now)) for gid, g in grants.items()}


# --- the API ---------------------------------------------------------------------------------------------


def create_grant(store_dir: Path | str | Store, *, signer: Signer | Sequence[Signer], index_key: bytes, party: Party,
                 start: dt.date | str, end: dt.date | str, kind: str = "readings", meters: Iterable[str] = (),
                 accounts: Iterable[str] = (), region: str | None = None, fields: Iterable[str] | None = None,
                 purpose: str = "", expires_at: str | None = None, now: float | None = None,
                 client_id: str | None = None, scope: str | None = None) -> Grant:
    """Record a new grant for ``party`` (a leaf of the consent log, signed); returns it. ``client_id``/``scope``:
    the OAuth client and ESPI scope of a third party's authorization (``streams.connect``)."""
    now = time.time() if now is None else now
    start_d, end_d = (d if isinstance(d, dt.date) else _date(d) for d in (start, end))
    meters, accounts = tuple(str(m).strip() for m in meters), tuple(str(a).strip() for a in accounts)
    if kind not in KINDS:
        raise ShareError(f"unknown kind {kind!r}: readings or bills")
    if sum(bool(x) for x in (meters, accounts, region)) != 1:
        raise ShareError("a grant needs exactly one scope: --meter ID ..., --account ID ... or --region R")
    if end_d < start_d:
        raise ShareError(f"empty date range: {start_d} is after {end_d}")
    if len(purpose) > MAX_PURPOSE:
        raise ShareError(f"a purpose has at most {MAX_PURPOSE} characters (this one has {len(purpose)})")
    field_list = None if fields is None else tuple(dict.fromkeys(f.strip() for f in fields if f.strip()))
    if field_list is not None:
        allowed = _allowed_fields(kind)
        unknown = [f for f in field_list if f not in allowed]
        if unknown or not field_list:
            raise ShareError(f"unknown field(s) {', '.join(unknown) or '(none given)'} for {kind}: choose from "
                             f"{', '.join(allowed)}")
    expires = parse_expiry(expires_at)
    if expires is not None and _epoch(expires) <= now:
        raise ShareError(f"--expires {expires} is already past")
    grant = Grant(grant_id=os.urandom(16).hex(), party=party.name, party_fingerprint=party.fingerprint,
                  party_public_key=party.public_key.text().strip() if party.public_key else "", kind=kind, start=start_d.isoformat(),
                  end=end_d.isoformat(), meters=meters, accounts=accounts, region=region, fields=field_list,
                  purpose=purpose, expires_at=expires, created_at=_iso(now), client_id=client_id, scope=scope)
    body = grant.to_dict()
    for derived in ("created_leaf", "revoked_at", "revoked_leaf", "revoke_reason", "state"):
        body.pop(derived)
    row = _append(store_dir, signer, index_key, "grant", grant.grant_id, party.fingerprint, body, now)
    return replace(grant, created_leaf=row["leaf_index"], state=state_at(grant, now))


def list_grants(store_dir: Path | str | Store, *, index_key: bytes, meters: Iterable[str] | None = None,
                party: str | None = None, now: float | None = None) -> list[Grant]:
    """Every grant, oldest first; ``meters``: only grants naming one of these meters; ``party``: only its."""
    grants = list(_grants(store_dir, index_key, time.time() if now is None else now).values())
    if meters is not None:
        wanted = {str(m).strip() for m in meters}
        grants = [g for g in grants if wanted & set(g.meters)]
    if party is not None:
        grants = [g for g in grants if g.party == party]
    return grants


def get_grant(store_dir: Path | str | Store, grant_id: str, *, index_key: bytes, now: float | None = None) -> Grant:
    grant = _grants(store_dir, index_key, time.time() if now is None else now).get(grant_id.strip())
    if grant is None:
        where = getattr(store_dir, "location", getattr(store_dir, "root", store_dir))
        raise ShareError(f"no grant {grant_id} in {where}: `meterseal grant list` shows them")
    return grant


def revoke_grant(store_dir: Path | str | Store, grant_id: str, *, signer: Signer | Sequence[Signer], index_key: bytes,
                 reason: str = "", now: float | None = None) -> Grant:
    """Revoke a grant (a leaf of the consent log, signed): from now on nothing is released under it.
    Revocation is forward-only: what the party already received stays with it."""
    now = time.time() if now is None else now
    if len(reason) > MAX_PURPOSE:
        raise ShareError(f"a reason has at most {MAX_PURPOSE} characters (this one has {len(reason)})")
    grant = get_grant(store_dir, grant_id, index_key=index_key, now=now)
    if grant.revoked_at is not None:
        raise ShareError(f"grant {grant.grant_id} was already revoked at {grant.revoked_at}")
    body = {"grant_id": grant.grant_id, "revoked_at": _iso(now), "reason": reason}
    row = _append(store_dir, signer, index_key, "revoke", grant.grant_id, grant.party_fingerprint, body, now)
    return replace(grant, revoked_at=body["revoked_at"], revoked_leaf=row["leaf_index"], revoke_reason=reason,
                   state="revoked")


def record_denial(store_dir: Path | str | Store, *, signer: Signer | Sequence[Signer], index_key: bytes, party: Party,
                  meters: Iterable[str], client_id: str | None = None, scope: str | None = None, purpose: str = "",
                  now: float | None = None) -> dict[str, Any]:
    """Record that a customer refused a party's request (a ``deny`` leaf of the consent log, signed; it makes
    no grant). Returns the leaf's row, with ``denial_id`` naming it."""
    now = time.time() if now is None else now
    denial_id = os.urandom(16).hex()
    body = {"denial_id": denial_id, "party": party.name, "party_fingerprint": party.fingerprint,
            "meters": [str(m) for m in meters], "client_id": client_id, "scope": scope, "purpose": purpose,
            "denied_at": _iso(now)}
    row = _append(store_dir, signer, index_key, "deny", denial_id, party.fingerprint, body, now)
    return {**row, "denial_id": denial_id}


def consent_events(store_dir: Path | str | Store, *, index_key: bytes) -> list[dict[str, Any]]:
    """Every consent-log event opened, oldest first: ``leaf_index``, ``event`` (grant, revoke, deny), ``grant_id``,
    ``at`` and the opened ``body``."""
    key = {_KEY_ID: _body_key(index_key)}
    out = []
    for row in consent_rows(store_dir):
        try:
            body = json.loads(open_with(key, row["body"], aad=_aad(row["event"], row["grant_id"])))
        except (InvalidEnvelope, ValueError) as exc:
            raise ShareError(f"consent event at leaf {row.get('leaf_index')} does not open with this index key") from exc
        out.append({"leaf_index": row["leaf_index"], "event": row["event"], "grant_id": row["grant_id"],
                    "at": _iso(row["at_ms"] / 1000), "body": body})
    return out


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ShareError(f"bad date {text!r}: want YYYY-MM-DD") from None


def _allowed_fields(kind: str) -> tuple[str, ...]:
    if kind == "readings":
        return READING_FIELDS
    from streams.validate import BILL_COLUMNS

    return tuple(BILL_COLUMNS.values())
