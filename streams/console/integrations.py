"""Other issues' engines the console shows, found at run time: data-sharing grants (#16) and DP queries (#18).

``privacy_for(vault, settings)`` returns a ``Privacy`` over ``streams.privacy`` (``answer_query``,
``budget_status``, ``DPQuery``, ``Bounds``) when installed, else None. ``sharing_for(vault)`` returns a ``Sharing`` over ``streams.share`` (``create_grant``, ``list_grants``,
``get_grant``, ``revoke_grant``, ``list_parties``, ``get_party``) when it is installed, else None, and the
pages say "not configured". Nothing here copies their logic: it only passes the console's keys along.
"""

from __future__ import annotations

import datetime as dt
import importlib
from types import ModuleType
from typing import Any

GRANT_FUNCTIONS = ("create_grant", "list_grants", "get_grant", "revoke_grant")
PARTY_FUNCTIONS = ("list_parties", "get_party")


def _module(name: str, functions: tuple[str, ...]) -> ModuleType | None:
    try:
        module = importlib.import_module(name)
    except ImportError:
        return None
    return module if all(callable(getattr(module, f, None)) for f in functions) else None


def grants_engine() -> ModuleType | None:
    """``streams.share.grants`` (issue #16), if installed with the functions the console calls."""
    return _module("streams.share.grants", GRANT_FUNCTIONS)


def privacy_engine() -> ModuleType | None:
    """``streams.privacy`` (issue #18): differentially private aggregate queries with a budget."""
    try:
        return importlib.import_module("streams.privacy")
    except ImportError:
        return None


class Sharing:
    """The grants engine with the console's keys: the owner's ledger signer and the index key."""

    def __init__(self, grants: ModuleType, parties: ModuleType, store_dir: Any, *, signer: Any, index_key: bytes) -> None:
        self._g, self._p, self.store_dir = grants, parties, store_dir
        self._signer, self._index_key = signer, index_key

    def all(self) -> list[dict[str, Any]]:
        return [g.to_dict() for g in self._g.list_grants(self.store_dir, index_key=self._index_key)]

    def of_customer(self, meters: tuple[str, ...]) -> list[dict[str, Any]]:
        """Grants whose every meter is the customer's (a grant that also names another meter is not theirs)."""
        mine = set(meters)
        return [g.to_dict() for g in self._g.list_grants(self.store_dir, index_key=self._index_key, meters=meters)
                if g.meters and set(g.meters) <= mine]

    def parties(self) -> list[str]:
        return [p.name for p in self._p.list_parties(self.store_dir)]

    def create(self, *, party: str, meter: str, start: dt.date, end: dt.date, purpose: str) -> dict[str, Any]:
        grant = self._g.create_grant(self.store_dir, signer=self._signer, index_key=self._index_key,
                                     party=self._p.get_party(self.store_dir, party), start=start, end=end,
                                     kind="readings", meters=[meter], purpose=purpose)
        return grant.to_dict()

    def revoke(self, grant_id: str) -> dict[str, Any]:
        return self._g.revoke_grant(self.store_dir, grant_id, signer=self._signer, index_key=self._index_key,
                                    reason="revoked by the customer in the console").to_dict()


def sharing_for(vault: Any) -> Sharing | None:
    """A ``Sharing`` for the vault's store, or None when issue #16's engine is not installed."""
    grants = grants_engine()
    parties = _module("streams.share.parties", PARTY_FUNCTIONS)
    if grants is None or parties is None or vault is None:
        return None
    return Sharing(grants, parties, vault.store, signer=vault.signer, index_key=vault.index_key)


class Privacy:
    """Issue #18's DP engine with the console's keys: the owner's keys open readings, its ledger key signs
    each spend; an analyst gets only noisy rows, noise scales, intervals and what is left of the budget."""

    def __init__(self, engine: ModuleType, vault: Any, *, regions: tuple[str, ...], default_dataset_rho: float,
                 clamp_kwh: float, per_hour: int) -> None:
        self._e, self._vault, self.regions = engine, vault, regions
        self.default_dataset_rho, self.clamp_kwh, self.per_hour = default_dataset_rho, clamp_kwh, per_hour

    def status(self, analyst: str) -> dict[str, Any]:
        return self._e.budget_status(self._vault.store_dir, default_dataset_rho=self.default_dataset_rho, analyst=analyst)

    def ask(self, analyst: str, *, metric: str, by: str, start: dt.date, end: dt.date, rho: float) -> dict[str, Any]:
        """A released answer (``DPAnswer.to_dict()``); the engine's ``DPError``/``BudgetExceeded`` otherwise."""
        query = self._e.DPQuery(metric, tuple(b.strip() for b in by.split(",")), start, end, self.regions,
                                self._e.Bounds(self.clamp_kwh, self.per_hour))
        answer = self._e.answer_query(self._vault.store_dir, owner=self._vault.reader.keys, signer=self._vault.signer,
                                      analyst=analyst, query=query, rho=rho,
                                      default_dataset_rho=self.default_dataset_rho, records=self._vault.store)
        return answer.to_dict()


def privacy_for(vault: Any, settings: Any) -> Privacy | None:
    """A ``Privacy`` when issue #18's engine (and its settings) are installed, else None ("not configured")."""
    engine = privacy_engine()
    needed = ("answer_query", "budget_status", "DPQuery", "Bounds")
    if vault is None or engine is None or not all(hasattr(engine, n) for n in needed) \
            or not hasattr(settings, "dp_dataset_rho"):
        return None
    return Privacy(engine, vault, regions=settings.regions, default_dataset_rho=settings.dp_dataset_rho,
                   clamp_kwh=settings.dp_clamp_kwh, per_hour=settings.dp_per_hour)


def connect_for(vault: Any, settings: Any, *, retry_s: float | None = None) -> Any:
    """Connect My Data (``streams.connect``) over the vault's store and keys, with its notification outbox; None
    without a vault. The caller starts ``Notifier(connect.outbox)`` (``server.serve`` does)."""
    if vault is None:
        return None
    from ..connect.notify import Outbox
    from ..connect.service import Connect

    outbox = Outbox.for_data_dir(vault.data_dir, vault.signer,
                                 base_s=retry_s if retry_s is not None else getattr(settings, "connect_retry_s", 30.0))

    def readings_of(meter: str, first: dt.date, last: dt.date) -> list[dict[str, Any]]:
        return vault.readings(meter, first, last)

    return Connect(vault.store, vault.data_dir, signer=vault.signer, index_key=vault.index_key,
                   readings_of=readings_of, outbox=outbox, access_ttl_s=getattr(settings, "oauth_access_ttl", 3600),
                   authorization_days=getattr(settings, "oauth_authorization_days", 365),
                   public_url=getattr(settings, "connect_public_url", None), meter_token=vault.meter_token,
                   controller=f"{getattr(settings, 'app_id', 'meterseal')} data custodian")
