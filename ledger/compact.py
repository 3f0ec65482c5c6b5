"""The compact range: all an appender keeps in memory — one hash per set bit of the tree size.

>>> from ledger.hashing import leaf_hash, subtree_root
>>> leaves = [leaf_hash(bytes([i])) for i in range(7)]
>>> tree = CompactRange()
>>> indexes = [tree.append(h) for h in leaves]
>>> tree.size, len(tree.frontier), tree.root() == subtree_root(leaves)
(7, 3, True)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from .hashing import EMPTY_ROOT, HASH_LEN, node_hash


@dataclass
class CompactRange:
    """Right-edge frontier of a Merkle tree of ``size`` leaves (perfect subtrees, largest first)."""

    size: int = 0
    frontier: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.frontier) != bin(self.size).count("1") or any(len(h) != HASH_LEN for h in self.frontier):
            raise ValueError("frontier does not match tree size")

    def append(self, leaf_hash: bytes) -> int:
        """Add a leaf hash; returns its index."""
        index, h, size = self.size, leaf_hash, self.size
        while size & 1:
            h = node_hash(self.frontier.pop(), h)
            size >>= 1
        self.frontier.append(h)
        self.size += 1
        return index

    def root(self) -> bytes:
        if not self.frontier:
            return EMPTY_ROOT
        r = self.frontier[-1]
        for h in reversed(self.frontier[:-1]):
            r = node_hash(h, r)
        return r

    def copy(self) -> "CompactRange":
        return CompactRange(self.size, list(self.frontier))


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH of a list of leaf hashes (iteratively, via the compact range)."""
    tree = CompactRange()
    for h in leaf_hashes:
        tree.append(h)
    return tree.root()
