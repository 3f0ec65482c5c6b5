"""The sealed store: Parquet segments with their Merkle logs (``segments``), DuckDB search and SQL over them
(``query``: ``Reader``, ``unseal()``), the ledger audit of a whole store (``audit``) and rebuilding a store
from the sealed topics (``rebuild``).

May import ``schemas``, ``ledger``, ``streams.crypto``, ``streams.seal`` and ``streams.ingest.broker`` (rebuild).
"""
