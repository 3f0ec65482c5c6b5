"""What key management keeps, registered with the capability registry (``streams.registry``): the subject log
(each customer's subject key created: a commitment, never the key; erasure leaves the leaf as a tombstone)."""

from __future__ import annotations

from ledger import leaf as leaf_codec

from streams.keys.subjects import LOG_TABLE, subject_rows
from streams.registry import LedgerLog, Registry


def register(registry: Registry) -> None:
    registry.add_log(LedgerLog(LOG_TABLE, rows=lambda store, partition: subject_rows(store),
                               encode=leaf_codec.encode_subject_event))
