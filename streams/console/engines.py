"""The sharing, privacy and Connect My Data engines with the console's keys: what the customer, admin, auditor
and analyst pages call. Nothing here copies their logic; it only passes the owner's keys along.

``Sharing`` wraps ``streams.share.grants`` and ``streams.share.parties`` (the one record of who may receive
what: every grant and revocation is a leaf of the consent log, signed with the owner's ledger key).
``Privacy`` wraps ``streams.privacy`` (differentially private aggregates under persisted zCDP budgets: the
owner's keys open the readings, its ledger key signs each spend; an analyst gets only noisy rows, noise
scales, intervals and what is left of its budget). ``connect_for`` builds ``streams.connect``'s ``Connect``
(OAuth 2.0 for third parties and the ESPI resource server) over the vault's store and keys.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from .. import privacy
from ..connect.notify import Outbox
from ..connect.service import Connect
from ..settings import Settings
from ..share import grants, parties
from .data import Vault


class Sharing:
    """Grants and parties of the vault's store, signed with the owner's ledger key."""

    def __init__(self, vault: Vault) -> None:
        self._vault = vault

    def all(self) -> list[dict[str, Any]]:
        return [g.to_dict() for g in grants.list_grants(self._vault.store, index_key=self._vault.index_key)]

    def of_customer(self, meters: tuple[str, ...]) -> list[dict[str, Any]]:
        """Grants whose every meter is the customer's (a grant that also names another meter is not theirs), made
        since the meters' last erasure (an erased customer's grants are not the new occupant's)."""
        mine = set(meters)
        return [g.to_dict() for g in grants.list_grants(self._vault.store, index_key=self._vault.index_key, meters=meters)
                if g.meters and set(g.meters) <= mine
                and grants.of_current_occupants(g.meters, g.created_at, self._vault.occupied_since)]

    def parties(self) -> list[str]:
        return [p.name for p in parties.list_parties(self._vault.store)]

    def create(self, *, party: str, meter: str, start: dt.date, end: dt.date, purpose: str) -> dict[str, Any]:
        grant = grants.create_grant(self._vault.store, signer=self._vault.signer, index_key=self._vault.index_key,
                                    party=parties.get_party(self._vault.store, party), start=start, end=end,
                                    kind="readings", meters=[meter], purpose=purpose)
        return grant.to_dict()

    def revoke(self, grant_id: str, *, reason: str) -> dict[str, Any]:
        return grants.revoke_grant(self._vault.store, grant_id, signer=self._vault.signer,
                                   index_key=self._vault.index_key, reason=reason).to_dict()


class Privacy:
    """The DP engine over the vault's readings; budgets and the privacy log stay in the data dir."""

    def __init__(self, vault: Vault, *, regions: tuple[str, ...], default_dataset_rho: float, clamp_kwh: float,
                 per_hour: int) -> None:
        self._vault, self.regions = vault, regions
        self.default_dataset_rho, self.clamp_kwh, self.per_hour = default_dataset_rho, clamp_kwh, per_hour

    @classmethod
    def from_settings(cls, vault: Vault, settings: Settings) -> "Privacy":
        return cls(vault, regions=settings.regions, default_dataset_rho=settings.dp_dataset_rho,
                   clamp_kwh=settings.dp_clamp_kwh, per_hour=settings.dp_per_hour)

    def status(self, analyst: str) -> dict[str, Any]:
        return privacy.budget_status(self._vault.store_dir, default_dataset_rho=self.default_dataset_rho,
                                     analyst=analyst)

    def ask(self, analyst: str, *, metric: str, by: str, start: dt.date, end: dt.date, rho: float) -> dict[str, Any]:
        """A released answer (``DPAnswer.to_dict()``); ``DPError`` (bad question) or ``BudgetExceeded`` otherwise."""
        query = privacy.DPQuery(metric, tuple(b.strip() for b in by.split(",")), start, end, self.regions,
                                privacy.Bounds(self.clamp_kwh, self.per_hour))
        answer = privacy.answer_query(self._vault.store_dir, owner=self._vault.reader.keys, signer=self._vault.signer,
                                      analyst=analyst, query=query, rho=rho,
                                      default_dataset_rho=self.default_dataset_rho, records=self._vault.store)
        return answer.to_dict()


def connect_for(vault: Vault, settings: Settings, *, retry_s: float | None = None,
                public_url: str | None = None) -> Connect:
    """Connect My Data over the vault's store and keys, with its notification outbox; the caller starts
    ``Notifier(connect.outbox)`` (``server.serve`` does). Its public URL: ``METERSEAL_CONNECT_PUBLIC_URL``, else
    the console's (``METERSEAL_PUBLIC_URL``, or ``public_url``), never a request's Host header."""
    outbox = Outbox.for_data_dir(vault.data_dir, vault.signer,
                                 base_s=retry_s if retry_s is not None else settings.connect_retry_s)

    def readings_of(meter: str, first: dt.date, last: dt.date) -> list[dict[str, Any]]:
        return vault.readings(meter, first, last)

    return Connect(vault.store, vault.data_dir, signer=vault.signer, index_key=vault.index_key,
                   readings_of=readings_of, outbox=outbox, access_ttl_s=settings.oauth_access_ttl,
                   authorization_days=settings.oauth_authorization_days,
                   public_url=settings.connect_public_url or settings.public_url or public_url,
                   meter_token=vault.meter_token, occupied_since=vault.occupied_since,
                   controller=f"{settings.app_id} data custodian")
