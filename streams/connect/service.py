"""``Connect``: the data custodian's side of Connect My Data in one object — consent, tokens, resource access,
revocation from every side — over plain arguments (the console's routes and the CLI call it; no web types).

Every resource request re-checks, in this order: the bearer token (known, not revoked, not expired), the grant
behind it in the consent log (active now: not revoked, not expired — so a revocation made anywhere, even by
another process, answers 401 on the very next call), and the party's status (``production``). A token reads
only its own subscription (403 otherwise).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from authlib.oauth2 import OAuth2Error

from ledger.note import Signer
from streams.exceptions import ShareError
from streams.share.grants import (Grant, consent_events, create_grant, get_grant, list_grants, of_current_occupants,
                                  record_denial, revoke_grant)
from streams.store.base import Store

from . import resources
from .clients import (Client, ConnectError, find_client, get_client, list_clients, party_of, register_client,
                      rotate_secret, set_status)
from .notify import Outbox, new_data_due
from .oauth import Consent, HttpRequest, Server
from .scopes import InvalidScope, Scope
from .tokens import TokenStore, path_for


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: status, body (bytes, str or a JSON-able dict) and headers."""

    status: int
    body: Any = b""
    headers: list[tuple[str, str]] = field(default_factory=list)

    @property
    def location(self) -> str | None:
        return next((v for k, v in self.headers if k.lower() == "location"), None)


class Refused(Exception):
    """A resource request that is answered with ``status`` and an OAuth/ESPI ``error`` (401, 403, 404)."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status, self.error, self.description = status, error, description


@dataclass(frozen=True)
class ConsentView:
    """What the consent page shows (a validated authorization request)."""

    client: Client
    scope: Scope
    redirect_uri: str


@dataclass(frozen=True)
class Access:
    """A resource request's checked authority: its token row, grant, client and scope."""

    token: dict[str, Any]
    grant: Grant
    client: Client
    scope: Scope


class Connect:
    """The custodian's Connect My Data service over one store.

    ``signer``/``index_key``: the owner's ledger signer and index key (grants and consent leaves);
    ``readings_of``: the owner's reader of a meter's readings; ``outbox``: where revocation and new-data notices
    go (None: no notices); ``public_url``: the base of resource URIs in notices made outside a request."""

    def __init__(self, store: Store | Path | str, data_dir: Path | str, *, signer: Signer | Sequence[Signer],
                 index_key: bytes, readings_of: resources.ReadingsOf | None = None, outbox: Outbox | None = None,
                 access_ttl_s: float = 3600.0, authorization_days: int = 365, public_url: str | None = None,
                 meter_token: Callable[[str], str] | None = None,
                 occupied_since: Callable[[str], float] | None = None, controller: str = "meterseal data custodian",
                 jurisdiction: str = "", clock: Callable[[], float] = time.time) -> None:
        self.store, self.data_dir = store, Path(data_dir)
        self.signer, self.index_key, self.readings_of = signer, index_key, readings_of
        self.outbox, self.authorization_days, self.public_url, self.clock = outbox, authorization_days, public_url, clock
        self.meter_token, self.controller, self.jurisdiction = meter_token, controller, jurisdiction
        self.occupied_since = occupied_since or (lambda meter: float("-inf"))
        self._checked = float("-inf")
        self.tokens = TokenStore(path_for(data_dir), clock=clock)
        self.server = Server(self.tokens, find_client=self.find_client, grant_end=self.grant_end,
                             access_ttl_s=access_ttl_s, clock=clock)

    # -- lookups -------------------------------------------------------------------------------------------
    def find_client(self, client_id: str) -> Client | None:
        return find_client(self.store, client_id)

    def grant(self, grant_id: str) -> Grant:
        return get_grant(self.store, grant_id, index_key=self.index_key, now=self.clock())

    def grant_end(self, grant_id: str) -> float | None:
        try:
            grant = self.grant(grant_id)
        except ShareError:
            return None
        if grant.state != "active" or grant.client_id is None:
            return None
        return resources.espi._epoch(grant.expires_at) if grant.expires_at else None

    def authorizations(self, *, meters: Sequence[str] | None = None) -> list[Grant]:
        """Every third-party authorization (grants with a client id), optionally only those within ``meters`` (a
        customer's: made since its meters' last erasure, ``occupied_since``)."""
        grants = [g for g in list_grants(self.store, index_key=self.index_key, now=self.clock()) if g.client_id]
        if meters is not None:
            mine = set(meters)
            grants = [g for g in grants if g.meters and set(g.meters) <= mine
                      and of_current_occupants(g.meters, g.created_at, self.occupied_since)]
        return grants

    # -- the authorization endpoint ------------------------------------------------------------------------
    def consent_request(self, http: HttpRequest) -> ConsentView | Reply:
        """The validated request to show on the consent page, or the reply that refuses it (a redirect with
        ``error=`` when the client and redirect URI are known good, else a 400 that redirects nowhere)."""
        try:
            grant = self.server.get_consent_grant(http)
        except OAuth2Error as error:
            return self._error(http, error)
        client = grant.request.client.client
        return ConsentView(client, Scope.parse(grant.request.payload.scope), grant.redirect_uri)

    def decide(self, http: HttpRequest, *, approve: bool, customer_meters: Sequence[str],
               chosen: Sequence[str], via: str = "console consent page") -> Reply:
        """The customer's answer. ``chosen`` must be among ``customer_meters`` (the caller already answered 404
        for any other). Approve: a grant (consent leaf) and a code; deny: a denial leaf and ``access_denied``."""
        try:
            grant = self.server.get_consent_grant(http)
        except OAuth2Error as error:
            return self._error(http, error)
        client = grant.request.client.client
        if any(m not in customer_meters for m in chosen):
            raise ConnectError("a meter that is not yours")  # the route already answered 404; belt and braces
        party = party_of(self.store, client)
        scope = Scope.parse(grant.request.payload.scope)
        now = self.clock()
        if not approve:
            record_denial(self.store, signer=self.signer, index_key=self.index_key, party=party,
                          meters=chosen or customer_meters, client_id=client.client_id, scope=str(scope),
                          purpose=f"Connect My Data ({via})", now=now)
            return self._reply(self.server.create_authorization_response(http, grant_user=None, grant=grant))
        if not chosen:
            raise ConnectError("choose at least one meter to share, or deny")
        ends = now + self.authorization_days * 86400
        made = create_grant(self.store, signer=self.signer, index_key=self.index_key, party=party,
                            start=dt.datetime.fromtimestamp(now - scope.history_s, dt.timezone.utc).date(),
                            end=dt.datetime.fromtimestamp(ends, dt.timezone.utc).date(), kind="readings",
                            meters=sorted(set(chosen)), purpose=f"Connect My Data: {client.name} ({via})",
                            expires_at=resources.espi._rfc3339(ends), now=now, client_id=client.client_id,
                            scope=str(scope))
        consent = Consent(made.grant_id, ends)
        return self._reply(self.server.create_authorization_response(http, grant_user=consent, grant=grant))

    def _error(self, http: HttpRequest, error: OAuth2Error) -> Reply:
        request = self.server.create_oauth2_request(http)
        error.state = request.payload.state
        return self._reply(self.server.handle_error_response(request, error))

    @staticmethod
    def _reply(answer: tuple[int, Any, list]) -> Reply:
        status, body, headers = answer
        return Reply(status, body, list(headers))

    # -- the token and revocation endpoints -----------------------------------------------------------------
    def token(self, http: HttpRequest) -> Reply:
        return self._reply(self.server.create_token_response(http))

    def revoke_token(self, http: HttpRequest) -> Reply:
        return self._reply(self.server.create_endpoint_response("revocation", http))

    # -- the resource server ------------------------------------------------------------------------------
    def access(self, authorization: str | None, *, subscription: str | None = None) -> Access:
        """The checked authority of a bearer token for one request (``Refused`` otherwise)."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Refused(401, "invalid_request", "send Authorization: Bearer <access token>")
        row = self.tokens.live(token.strip(), "access")
        if row is None:
            raise Refused(401, "invalid_token", "the access token is unknown, revoked or expired")
        try:
            grant = self.grant(row["grant_id"])
        except ShareError:
            raise Refused(401, "invalid_token", "the authorization behind this token is gone") from None
        if grant.state != "active":
            self.tokens.revoke_grant(grant.grant_id, reason=f"grant {grant.state}")
            raise Refused(401, "invalid_token", f"the authorization was {grant.state}")
        client = self.find_client(row["client_id"])
        if client is None or client.status != "production":
            raise Refused(403, "insufficient_scope", f"party status is {client.status if client else 'unknown'}: "
                          "no data is served")
        if subscription is not None and subscription != grant.grant_id:
            raise Refused(403, "insufficient_scope", "this token is for another subscription")
        return Access(row, grant, client, Scope.parse(row["scope"]))

    def authorization_of(self, authorization: str | None, authorization_id: str) -> Grant:
        """The Authorization a bearer token names. Unlike data, it stays readable with a token that a revocation
        of its grant ended, so a party told of the revocation can see status 0; any other dead token is 401."""
        scheme, _, token = (authorization or "").partition(" ")
        row = self.tokens.find(token.strip(), "access") if scheme.lower() == "bearer" else None
        if row is None or (row["revoked_at"] is None and row["expires_at"] <= self.clock()):
            raise Refused(401, "invalid_token", "the access token is unknown or expired")
        grant = self.grant(row["grant_id"])
        if row["revoked_at"] is not None and grant.state == "active":
            raise Refused(401, "invalid_token", "the access token was revoked")
        if grant.grant_id != authorization_id:
            raise Refused(403, "insufficient_scope", "this token is for another authorization")
        return grant

    def feed(self, access: Access, *, base: str, published_min: str | None = None,
             published_max: str | None = None, meters: Sequence[str] | None = None) -> tuple[bytes, int]:
        if self.readings_of is None:
            raise ConnectError("no reader of readings configured")
        try:
            lo = resources.parse_time(published_min, "published-min")
            hi = resources.parse_time(published_max, "published-max")
        except ValueError as exc:
            raise Refused(400, "invalid_request", str(exc)) from None
        return resources.subscription_feed(access.grant, access.scope, self.readings_of, now=self.clock(),
                                           base=base, published_min=lo, published_max=hi, meters=meters)

    def authorization_entry(self, grant: Grant, *, base: str) -> bytes:
        return resources.authorization_entry(grant, Scope.parse(grant.scope), base=base, now=self.clock(),
                                             status=1 if grant.state == "active" else 0)

    # -- revocation from every side ---------------------------------------------------------------------
    def revoke(self, grant_id: str, *, by: str, base: str | None = None) -> Grant:
        """Revoke an authorization (``by``: customer, third party, operator, erasure ...): status 0 in the
        consent log (a revoke leaf; nothing is deleted), every token revoked, the continuous share stopped
        (the worker re-reads the log), and the party's notify-uri told with a signed BatchList. Idempotent."""
        grant = self.grant(grant_id)
        if grant.revoked_at is None:
            grant = revoke_grant(self.store, grant_id, signer=self.signer, index_key=self.index_key,
                                 reason=f"revoked by the {by}", now=self.clock())
        self.tokens.revoke_grant(grant_id, reason=f"revoked by the {by}")
        if grant.client_id:
            self.notify(grant, base=base)
        return grant

    def notify(self, grant: Grant, *, base: str | None = None, what: str = "authorization") -> str | None:
        """Queue a signed BatchList naming the grant's Authorization (or Subscription) for its party."""
        client = self.find_client(grant.client_id or "")
        if self.outbox is None or client is None or not client.notify_uri:
            return None
        root = f"{(base or self.public_url or 'http://127.0.0.1:8800').rstrip('/')}/espi/1_1/resource"
        uri = f"{root}/Authorization/{grant.grant_id}" if what == "authorization" else \
            f"{root}/Batch/Subscription/{grant.grant_id}"
        return self.outbox.enqueue(client.notify_uri, resources.batch_list([uri]), what=f"{what} {grant.grant_id}")

    def notify_new_data(self) -> int:
        """Queue a new-data BatchList for each active authorization whose meters have readings newer than its
        last notice, at most once per its BlockDuration (the notifier thread calls this). Returns how many."""
        if self.outbox is None or self.readings_of is None:
            return 0
        now = self.clock()
        if now - self._checked < 60:
            return 0
        self._checked = now
        sent_path = self.data_dir / "connect" / "notified.json"
        last = json.loads(sent_path.read_text()) if sent_path.exists() else {}
        day = dt.datetime.fromtimestamp(now, dt.timezone.utc).date()

        def latest(grant: Grant) -> float | None:
            ends = [e for m in grant.meters
                    for e, _ in resources.interval_points(self.readings_of(m, day - dt.timedelta(days=1), day))]
            return max(ends, default=None)

        active = [g for g in self.authorizations() if g.state == "active"]
        due = new_data_due(active, block_s=lambda g: Scope.parse(g.scope).block_s, latest=latest, last_sent=last,
                           now=now)
        for grant in due:
            if self.notify(grant, what="subscription"):
                last[grant.grant_id] = now
        if due:
            sent_path.write_text(json.dumps(last))
        return len(due)

    def set_party_status(self, name: str, status: str, *, base: str | None = None) -> tuple[Client, list[Grant]]:
        """Change a party's status; ``revoked`` also revokes every authorization it holds."""
        client = set_status(self.store, name, status, now=self.clock())
        ended = []
        if status == "revoked":
            for grant in self.authorizations():
                if grant.client_id == client.client_id and grant.state == "active":
                    ended.append(self.revoke(grant.grant_id, by="operator (party revoked)", base=base))
        return client, ended

    def register(self, name: str, *, redirect_uri: str, scope: str, notify_uri: str | None = None,
                 purpose: str = "", status: str = "production", public_key: Any = None) -> tuple[Client, str]:
        """Register a third party; returns it and its client secret (shown once, stored as a hash)."""
        return register_client(self.store, name, redirect_uri=redirect_uri, scope=scope, public_key=public_key,
                               notify_uri=notify_uri, status=status, purpose=purpose, now=self.clock())

    def rotate(self, name: str) -> tuple[Client, str]:
        return rotate_secret(self.store, name, now=self.clock())

    def receipts(self, grant: Grant, *, principal: str | None = None) -> list[dict[str, Any]]:
        """The grant's consent receipts (``streams.connect.receipts``); ``principal``: the customer's token
        (default: the blind-index token of the grant's first meter, from ``meter_token``)."""
        from .receipts import receipts

        who = principal or (self.meter_token(grant.meters[0]) if self.meter_token and grant.meters else "")
        return receipts(self.store, grant, principal=who, controller=self.controller, jurisdiction=self.jurisdiction)

    def denials(self, *, meters: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Every refusal a customer gave a party (the opened ``deny`` leaves, oldest first, each with its
        ``leaf_index``), optionally only those about ``meters`` alone."""
        out = []
        for e in consent_events(self.store, index_key=self.index_key):
            if e["event"] != "deny":
                continue
            body = {**e["body"], "leaf_index": e["leaf_index"]}
            if meters is None or (body.get("meters") and set(body["meters"]) <= set(meters)
                                  and of_current_occupants(body["meters"], body["denied_at"], self.occupied_since)):
                out.append(body)
        return out

    def denial_receipt(self, denial: dict[str, Any], *, principal: str | None = None) -> dict[str, Any]:
        """The receipt of one of ``denials()`` (``streams.connect.receipts.denial_receipt``)."""
        from .receipts import denial_receipt

        meters = denial.get("meters") or []
        who = principal or (self.meter_token(meters[0]) if self.meter_token and meters else "")
        return denial_receipt(self.store, denial, principal=who, controller=self.controller,
                              jurisdiction=self.jurisdiction)

    def events(self) -> list[dict[str, Any]]:
        """Every consent-log event (grants, revocations, denials), opened, newest first, without meter ids."""
        out = []
        for e in reversed(consent_events(self.store, index_key=self.index_key)):
            body = e["body"]
            out.append({"leaf_index": e["leaf_index"], "event": e["event"], "id": e["grant_id"], "at": e["at"],
                        "party": body.get("party", ""), "client_id": body.get("client_id"),
                        "meters": len(body.get("meters") or []), "reason": body.get("reason", "")})
        return out

    def bundle(self, access: Access, *, owner: Any) -> bytes:
        """The same scope as a verifiable share bundle, for a party registered with a public key; refused when
        the scope's IntervalDuration is coarser than the stored readings (a bundle carries records as sealed)."""
        from streams.share.bundle import export_bundle

        if not access.grant.party_public_key:
            raise Refused(406, "not_acceptable", "this party registered no public key: ESPI feeds only")
        if self.readings_of is not None and access.grant.meters:
            now = self.clock()
            day = dt.datetime.fromtimestamp(now, dt.timezone.utc).date()
            points = resources.interval_points(self.readings_of(access.grant.meters[0], day - dt.timedelta(days=2), day))
            stored = resources.espi.interval_length([e for e, _ in points], default=access.scope.interval_s)
            if stored < access.scope.interval_s:
                raise Refused(406, "not_acceptable", f"stored readings are every {stored} s, finer than the granted "
                              f"IntervalDuration={access.scope.interval_s}: a bundle carries records as sealed; "
                              "use the ESPI feed")
        try:
            data, _ = export_bundle(self.store, access.grant.grant_id, owner=owner, signer=self.signer, now=self.clock())
        except ShareError as exc:
            raise Refused(409, "conflict", str(exc)) from None
        return data

    def clients(self) -> list[Client]:
        return list_clients(self.store)

    def client(self, name: str) -> Client:
        return get_client(self.store, name)


__all__ = ["Connect", "Reply", "Refused", "ConsentView", "Access", "InvalidScope", "ConnectError"]
