"""Verifying proofs: RFC 9162 §2.1.3.2 (inclusion) and §2.1.4.2 (consistency). Pure; raise ``ProofError``.

The checks are as strict as transparency-dev/merkle's: hashes must be 32 bytes, a proof must have exactly
the expected length, and a consistency proof from an empty tree is refused.
"""

from __future__ import annotations

from typing import Sequence

from .exceptions import ProofError
from .hashing import HASH_LEN, node_hash


def _check_hashes(*hashes: bytes) -> None:
    if any(len(h) != HASH_LEN for h in hashes):
        raise ProofError("a hash is not 32 bytes")


def root_from_inclusion(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """The root that ``proof`` implies for leaf ``index`` of a tree of ``size`` leaves."""
    _check_hashes(leaf_hash, *proof)
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of {size} leaves")
    fn, sn, r = index, size - 1, leaf_hash
    for p in proof:
        if sn == 0:
            raise ProofError("inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is too short")
    return r


def verify_inclusion(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """Raises ``ProofError`` unless leaf ``index`` with ``leaf_hash`` is in the tree of ``size`` with ``root``."""
    _check_hashes(root)
    if root_from_inclusion(leaf_hash, index, size, proof) != root:
        raise ProofError("inclusion proof does not lead to the root")


def verify_consistency(size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes) -> None:
    """Raises ``ProofError`` unless the tree (size1, root1) is a prefix of the tree (size2, root2)."""
    _check_hashes(*proof)
    if size1 <= 0:
        raise ProofError("consistency from an empty tree is not proved")
    if size2 < size1:
        raise ProofError(f"tree shrank from {size1} to {size2}")
    if size1 == size2:
        if proof:
            raise ProofError("same-size consistency proof must be empty")
        if root1 != root2:
            raise ProofError("same size, different roots")
        return
    _check_hashes(root1, root2)
    if not proof:
        raise ProofError("consistency proof is empty")
    path = list(proof)
    if size1 & (size1 - 1) == 0:  # size1 is a power of two: the old root is a node of the new tree
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is too short")
    if fr != root1:
        raise ProofError("consistency proof does not lead to the old root")
    if sr != root2:
        raise ProofError("consistency proof does not lead to the new root")
