"""Other issues' engines the console shows, found at run time: data-sharing grants (#16) and DP queries (#18).

Each ``*_engine()`` returns the module when it is installed and has the functions the console calls,
else None, and the page says "not configured". Nothing here copies their logic.
"""

from __future__ import annotations

import importlib
from types import ModuleType

GRANT_FUNCTIONS = ("create", "list", "get", "revoke")


def _module(name: str, functions: tuple[str, ...]) -> ModuleType | None:
    try:
        module = importlib.import_module(name)
    except ImportError:
        return None
    return module if all(callable(getattr(module, f, None)) for f in functions) else None


def grants_engine() -> ModuleType | None:
    """``streams.share.grants`` (issue #16): ``create/list/get/revoke`` and a ``Grant`` dataclass."""
    return _module("streams.share.grants", GRANT_FUNCTIONS)


def privacy_engine() -> ModuleType | None:
    """``streams.privacy`` (issue #18): differentially private aggregate queries with a budget."""
    try:
        return importlib.import_module("streams.privacy")
    except ImportError:
        return None
