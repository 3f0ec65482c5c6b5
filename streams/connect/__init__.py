"""Connect My Data: third parties ask over OAuth 2.0, the customer consents, data flows over an ESPI REST API.

What it holds, as plain functions and small classes (no web framework here): third-party registrations and
their credentials (``clients``), ESPI scope strings parsed strictly (``scopes``), authorization codes and
tokens stored only as hashes (``tokens``), the OAuth 2.0 authorization server built on Authlib's server
components (``oauth``), the ESPI resources over the sealed store (``resources``), signed BatchList
notifications to a party's notify-uri with retries (``notify``), Kantara consent receipts with consent-log
proofs (``receipts``), revocation from every side (``revocation``) and its registration with the capability
registry (``registration``). The reference third-party client lives in ``client``.

May import: ``streams.share`` (grants, parties, bundles, the ESPI writer), ``streams.store``, ``streams.crypto``,
``streams.registry``, ``streams.exceptions``, ``ledger``. Never the console or the CLI (they import this).
"""
