"""Devices and signed readings: meters that sign what they measure, and meterseal checking it before sealing.

``keys`` (a device's public key, its KEY_ID, and the private key of simulators and trials), ``signed`` (the
signed envelope ``{"payload", "alg", "kid", "sig"}``), ``registry`` (which key belongs to which meter: events in
the store and a Merkle log of them), ``counters`` (each device's ``device_seq`` window against replays),
``verify`` (the step before the ``Sealer``: envelope, registry, signature, counter) and ``proof`` (a reading's
proof from the device to the signed ledger, checked offline with the device's public key and the ledger vkey).

May import ``streams.crypto``, ``streams.keys``, ``streams.store``, ``streams.seal``, ``streams.unseal``,
``streams.validate``, ``streams.exceptions``, ``schemas`` and ``ledger``; never Faust, MQTT or ``streams.cli``.
"""
