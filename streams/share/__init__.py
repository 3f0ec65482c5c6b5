"""Sharing sealed data with other parties: party keys, grants and their consent log, share bundles,
continuous shares and Green Button (ESPI) in and out.

May import ``streams.crypto``, ``streams.keys``, ``streams.store``, ``streams.seal``, ``streams.devices``,
``schemas`` and ``ledger``; never ``streams.cli`` or Faust. Every function that opens, wraps or releases data names the key
it needs in its signature (``owner``, ``recipient: PartyPublicKey``, ``party: PartyKey``).
"""
