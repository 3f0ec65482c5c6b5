"""Retention and the right to erasure: crypto-shredding a customer's data, deleting rows past their retention,
and the erasure log that keeps the ledger checkable afterwards.

``job`` runs one erasure (``meterseal subject erase``) as durable, idempotent stages — fence the subject, destroy
its subject keys, delete its rows, dead letters and everything each registered holder keeps, log the erasure —
so a job killed half way finishes when run again. ``retention`` keeps each kind of data for its period.
``log`` is the erasure log (its events name no person) and the tombstones the audit reads. ``subjects`` finds
everything linked to the subject named (every meter and account its records connect).

May import ``streams`` (spine, ``crypto``, ``keys``, ``store``), ``ledger`` and ``streams.registry``; it never imports
a capability that holds subject data: those register a ``SubjectHolder`` (``streams.capabilities``), which the
job calls.
"""
