"""What erasure and retention keep, registered with the capability registry (``streams.registry``): the erasure log
(one leaf per erasure and retention run), the tombstones of the records they deleted (the audit reads them), and
the kinds of store data under retention."""

from __future__ import annotations

from ledger import leaf as leaf_codec

from streams.erasure.log import LOG_TABLE, event_rows, redactions
from streams.erasure.retention import store_kinds
from streams.registry import LedgerLog, Registry, Tombstones


def register(registry: Registry) -> None:
    registry.add_log(LedgerLog(LOG_TABLE, rows=lambda store, partition: event_rows(store),
                               encode=leaf_codec.encode_erasure_event))
    registry.add_tombstones(Tombstones("erasure and retention", read=redactions))
    for kind in store_kinds():
        registry.add_retained(kind)
