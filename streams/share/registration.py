"""What sharing keeps, registered with the capability registry (``streams.registry``): the consent log of
data-sharing grants."""

from __future__ import annotations

from ledger import leaf as leaf_codec

from streams.registry import LedgerLog, Registry
from streams.share.grants import LOG_TABLE, consent_rows


def register(registry: Registry) -> None:
    registry.add_log(LedgerLog(LOG_TABLE, rows=lambda store, partition: consent_rows(store),
                               encode=leaf_codec.encode_consent_event))
