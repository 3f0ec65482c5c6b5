"""meterseal's stream core. The spine lives here — ``seal`` (records in, sealed records out), ``validate``
(the rules every raw reading and bill passes), ``pipeline`` (what a worker does with a batch, broker-free),
``settings`` (the one settings object) and ``exceptions`` — and one folder per capability beneath it:
``crypto``, ``keys``, ``store``, ``anomaly``, ``ingest``, ``bench`` and, on top of them all, ``cli``.

Nothing here imports Faust (the Faust wiring lives in ``agents``) and nothing below ``cli`` imports ``cli``.
"""
