"""Key management: the owner's keystore (``keystore``: passphrase-sealed owner keys, index key, ledger key),
owner key pairs and DEK wrapping (``owner``: RSA-OAEP or HPKE), the worker's DEK keyring (``keyring``),
region keys for federated learning (``regions``) and the shared passphrase-file encoding (``passfile``).

May import ``streams.crypto``, ``streams.store`` (where wrapped DEKs live), ``ledger`` and ``streams.exceptions``.
"""
