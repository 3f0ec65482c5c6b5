"""What the device capability keeps, registered with the capability registry (``streams.registry``): the device
log. (Not a subject holder: see ``streams.devices.registry`` for why.)"""

from __future__ import annotations

from ledger import leaf as leaf_codec

from streams.devices.registry import LOG_TABLE, device_rows
from streams.registry import LedgerLog, Registry


def register(registry: Registry) -> None:
    registry.add_log(LedgerLog(LOG_TABLE, rows=lambda store, partition: device_rows(store),
                               encode=leaf_codec.encode_device_event))
