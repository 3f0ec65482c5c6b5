"""Building proofs (RFC 9162 §2.1.3.1 PATH and §2.1.4.1 SUBPROOF) from a log's leaf hashes.

>>> from ledger.compact import root
>>> from ledger.hashing import leaf_hash
>>> from ledger.verify import verify_inclusion
>>> leaves = [leaf_hash(bytes([i])) for i in range(5)]
>>> verify_inclusion(leaves[3], 3, 5, inclusion_proof(3, leaves), root(leaves))
"""

from __future__ import annotations

from typing import Sequence

from .hashing import split, subtree_root


def inclusion_proof(index: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """Audit path of leaf ``index`` in the tree of ``leaf_hashes`` (leaf's sibling first)."""
    n = len(leaf_hashes)
    if not 0 <= index < n:
        raise ValueError(f"leaf index {index} is outside a tree of {n} leaves")
    if n == 1:
        return []
    k = split(n)
    if index < k:
        return inclusion_proof(index, leaf_hashes[:k]) + [subtree_root(leaf_hashes[k:])]
    return inclusion_proof(index - k, leaf_hashes[k:]) + [subtree_root(leaf_hashes[:k])]


def consistency_proof(size1: int, leaf_hashes: Sequence[bytes]) -> list[bytes]:
    """Proof that the tree of the first ``size1`` leaves is a prefix of the tree of all ``leaf_hashes``."""
    n = len(leaf_hashes)
    if not 0 < size1 <= n:
        raise ValueError(f"cannot prove consistency from size {size1} to {n}")
    return _subproof(size1, leaf_hashes, True)


def _subproof(m: int, leaves: Sequence[bytes], complete: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if complete else [subtree_root(leaves)]
    k = split(n)
    if m <= k:
        return _subproof(m, leaves[:k], complete) + [subtree_root(leaves[k:])]
    return _subproof(m - k, leaves[k:], False) + [subtree_root(leaves[:k])]
