"""Cryptographic building blocks: the sealed envelope, blind-index tokens, per-record keys.

Pure code: may import ``cryptography`` (hazmat only in the private primitives module) and
``streams.exceptions``; never Faust, the store or the CLI.
"""
