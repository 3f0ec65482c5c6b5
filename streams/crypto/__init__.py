"""Cryptography: the AEAD envelope (``envelope``: AES-256-GCM under rotating data keys; version 2 under per-record
keys), per-record key derivation and commitment (``record_keys``), keyed blind-index tokens (``tokens``) and the
one private module that touches ``cryptography``'s hazmat layer (``_primitives``).

May import only ``cryptography`` and ``streams.exceptions``; everything else that encrypts goes through here.
"""
