"""The meterseal console: a web UI with roles (operator, customer, auditor, analyst, admin) over the store.

Holds the accounts (``users``), sessions, CSRF and login throttling (``sessions``), the role x route table
and its FastAPI dependency (``roles``), plain data functions over an unlocked keystore (``data``), the live
alert fan-out (``feed``), fleet status (``status``), the app factory (``app``) with its pages and JSON API,
templates and vendored static files (htmx, uPlot). It may import ``streams`` packages below the CLI
(``keys``, ``store``, ``anomaly``, ``ingest``) and ``ledger``; nothing outside ``streams/cli`` imports it.
"""
