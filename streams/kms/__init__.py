"""Key services: the owner's master keys held by a key management service instead of a passphrase keystore.

One interface (``service.KeyService``: generate a DEK and its wrapped form, unwrap, sign, resolve an alias) with
three providers — ``local`` (the passphrase keystore, the embedded default), ``openbao`` (OpenBao/Vault transit
through ``hvac``) and ``pkcs11`` (a PKCS#11 token such as SoftHSM2 through ``python-pkcs11``) — chosen by
``METERSEAL_KMS`` (``uri``); ``access.open_keys`` gives each process exactly what it needs of them (index key,
new DEKs, a keyring, a checkpoint signer); ``migrate`` moves a store's keys into a service and re-wraps after a
rotation; ``usage`` counts every unwrap per process. May import ``streams.keys``, ``streams.store``,
``streams.crypto``, ``streams.unseal``, ``ledger``, ``streams.settings`` and ``streams.exceptions``.
"""
