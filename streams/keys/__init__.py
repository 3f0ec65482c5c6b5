"""Key management: the owner's keystore (``keystore``: passphrase-sealed owner keys, index key, ledger key — or,
for a key service, only what names its keys: ``streams.kms`` builds on this), owner key pairs and DEK wrapping
(``owner``: RSA-OAEP or HPKE), the reader's keyring (``keyring``: stored DEKs, cached with a bound and a TTL),
region keys for federated learning (``regions``) and the shared passphrase-file encoding (``passfile``).

May import ``streams.crypto``, ``streams.store`` (where wrapped DEKs live), ``ledger`` and ``streams.exceptions``.
"""
