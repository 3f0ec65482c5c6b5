"""Online anomaly detection: per-meter features (``features``), River's detector (``detector``), turning
scores into alerts at most once per hour per kind (``alerting``), the offline evaluation against Isolation
Forest (``evaluate``) and the alerts topic as a feed (``feed``).

May import ``river``, ``streams.crypto``, ``streams.seal``, ``streams.validate`` and ``streams.ingest``.
"""
