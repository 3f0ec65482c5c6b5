"""The installed capabilities, like Django's ``INSTALLED_APPS``: one place that imports each capability's
``register`` and builds the ``Registry`` (``streams.registry``) that the lower floors iterate — the store's
ledger audit, erasure and retention.

A capability that keeps a Merkle log, holds a data subject's data or has data under retention adds its
``register`` here; ``tests/test_capabilities.py`` fails when one that holds subject data is missing. The CLI,
the console, the worker and the benchmarks take the registry from ``registry()``; nothing below them imports
this module.
"""

from __future__ import annotations

from fl import registration as fl_registration
from streams.connect import registration as connect_registration
from streams.console import registration as console_registration
from streams.devices import registration as device_registration
from streams.erasure import registration as erasure_registration
from streams.keys import registration as keys_registration
from streams.privacy import registration as privacy_registration
from streams.notify import registration as notify_registration
from streams.registry import Registry
from streams.rollups import registration as rollups_registration
from streams.share import registration as share_registration
from streams.store.audit import store_logs

REGISTER = (store_logs, keys_registration.register, erasure_registration.register, share_registration.register,
            privacy_registration.register, fl_registration.register, connect_registration.register,
            rollups_registration.register, notify_registration.register, console_registration.register,
            device_registration.register)


def registry() -> Registry:
    """A fresh registry with every installed capability registered."""
    found = Registry()
    for register in REGISTER:
        register(found)
    return found
