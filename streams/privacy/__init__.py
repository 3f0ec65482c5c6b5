"""Privacy-preserving analytics: differentially private aggregates under persisted zCDP budgets (``dp``,
``budget``, ``engine``), homomorphic slab billing under BFV (``tariff``, ``billing``) and forecasts evaluated
on CKKS ciphertexts (``he_forecast``).

Each module states its guarantee beside its code: what is public, which party holds which key, and what
each party learns. The mechanisms are pure functions over arrays or plain records; ``engine`` and
``billing``'s store functions are the only I/O (they read the sealed store with the owner's keys and
write budget events to the store). May import ``streams`` (spine, ``store``, ``keys``), ``ledger`` and
``fl.task``; never ``streams.cli``.
"""
