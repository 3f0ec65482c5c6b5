"""Privacy-preserving analytics: differentially private aggregates under persisted zCDP budgets (``dp``,
``budget``, ``engine``), homomorphic slab billing under BFV (``tariff``, ``billing``) and forecasts evaluated
on CKKS ciphertexts (``he_forecast``).

Each module states its guarantee beside its code: what is public, which party holds which key, and what
each party learns. The mechanisms are pure functions over arrays or plain records; ``engine``, ``budget``,
``billrun`` and ``he_forecast.forecast_from_store`` do the I/O (they read the sealed store with the owner's
keys and write budget events to the store). The DP engine's API (for the CLI and the console's analyst
page) is re-exported here: ``answer_query``, ``budget_status``, ``set_budget``, ``DPQuery``, ``Bounds``.
May import ``streams`` (spine, ``store``, ``keys``), ``ledger`` and
``fl`` (task, data, rounds); never ``streams.cli``.
"""

from .dp import Bounds, BudgetExceeded, DPError, DPQuery
from .engine import DATASET, DPAnswer, answer_query, budget_status, set_budget

__all__ = ["DATASET", "Bounds", "BudgetExceeded", "DPAnswer", "DPError", "DPQuery", "answer_query", "budget_status",
           "set_budget"]
