"""Federated learning over regional partitions with Flower: the model and pure train/evaluate (``task``), the
regions' data from the sealed store (``data``, ``bills``), in-process rounds with baselines (``rounds``),
one owner-run federation (``federate``), model provenance in the ledger (``provenance``), scheduling and
plots; ``client_app`` and ``server_app`` are Flower's wiring.

May import ``streams`` (below ``streams.cli``) and ``ledger``; never ``streams.cli``.
"""
