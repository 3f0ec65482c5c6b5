"""The meterseal console: a web UI with roles (operator, customer, auditor, analyst, admin) over the store.

Holds the accounts with their ids and auth hashes (``users``), sessions bound to accounts and the login CSRF
token (``sessions``), the login throttle and Argon2 gate (``throttle``), login and logout (``login``), the
role x route table and its FastAPI dependency (``roles``), one exception handler and the security headers
(``errors``), client addresses through trusted proxies (``proxies``), plain data functions over an unlocked
keystore (``data``), the sharing, privacy and Connect My Data engines with the owner's keys (``engines``), the
live alert fan-out (``feed``), fleet status (``status``), the app factory (``app``) with its pages, admin
actions, Connect routes and JSON API, templates and vendored static files (htmx, uPlot), and what it holds of
a data subject (``registration``). It may import ``streams`` packages below the CLI (``keys``, ``store``,
``anomaly``, ``ingest``, ``share``, ``privacy``, ``connect``, ``registry``) and ``ledger``; only
``streams/cli``, the benchmarks and ``streams.capabilities`` (its registration) import it.
"""
