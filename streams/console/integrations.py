"""Other issues' engines the console shows, found at run time: data-sharing grants (#16) and DP queries (#18).

``sharing_for(vault)`` returns a ``Sharing`` over ``streams.share`` (``create_grant``, ``list_grants``,
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
    return Sharing(grants, parties, vault.store_dir, signer=vault.signer, index_key=vault.index_key)
