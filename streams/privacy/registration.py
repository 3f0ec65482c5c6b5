"""What privacy analytics keeps, registered with the capability registry (``streams.registry``): the log of DP
budget events (spends and budgets set), kept in this machine's data dir even when the store is on S3."""

from __future__ import annotations

from ledger import leaf as leaf_codec

from streams.privacy.budget import read_events
from streams.registry import LedgerLog, Registry


def register(registry: Registry) -> None:
    registry.add_log(LedgerLog("privacy", rows=lambda store, partition: read_events(store.root),
                               encode=leaf_codec.encode_privacy_event, local=True))
