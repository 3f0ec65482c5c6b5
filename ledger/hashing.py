"""RFC 6962 §2.1 / RFC 9162 §2.1.1 hashing: SHA-256 with domain-separating prefixes.

>>> leaf_hash(b"").hex()[:16]
'6e340b9cffb37a98'
>>> EMPTY_ROOT.hex()[:16]                     # the empty tree: SHA-256 of nothing
'e3b0c44298fc1c14'
"""

from __future__ import annotations

import hashlib
from typing import Sequence

HASH_LEN = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n >= 2): where RFC 6962 splits a tree of n leaves."""
    return 1 << ((n - 1).bit_length() - 1)


def subtree_root(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH by the RFC's recursive definition (for proofs over a slice; ``root`` is faster for whole logs)."""
    n = len(leaf_hashes)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaf_hashes[0]
    k = split(n)
    return node_hash(subtree_root(leaf_hashes[:k]), subtree_root(leaf_hashes[k:]))
