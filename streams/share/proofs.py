"""Inclusion proofs for many leaves of one tree at once, and their offline check. Pure.

``ledger.proof.inclusion_proof`` rebuilds subtrees for every proof (O(n) each); a share bundle needs
thousands of proofs in one tree, so ``Tree`` keeps every level once (O(n)) and answers each audit path in
O(log n). RFC 6962's tree (split at the largest power of two) is the tree whose levels pair nodes left to
right and carry a lone last node up unchanged, so the paths are the same (tested against
``ledger.proof``). ``NodeTable`` stores each distinct hash of a bundle's paths once.

>>> from ledger.hashing import leaf_hash, root
>>> from ledger.proof import inclusion_proof
>>> leaves = [leaf_hash(bytes([i])) for i in range(7)]
>>> Tree(leaves).path(5) == inclusion_proof(5, leaves), Tree(leaves).root() == root(leaves)
(True, True)
"""

from __future__ import annotations

from typing import Sequence

from ledger.hashing import node_hash


class Tree:
    def __init__(self, leaf_hashes: Sequence[bytes]) -> None:
        if not leaf_hashes:
            raise ValueError("an empty tree has no inclusion proofs")
        self.levels = [list(leaf_hashes)]
        while len(self.levels[-1]) > 1:
            level = self.levels[-1]
            up = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
            if len(level) % 2:
                up.append(level[-1])
            self.levels.append(up)

    @property
    def size(self) -> int:
        return len(self.levels[0])

    def root(self) -> bytes:
        return self.levels[-1][0]

    def path(self, index: int) -> list[bytes]:
        if not 0 <= index < self.size:
            raise ValueError(f"leaf index {index} is outside a tree of {self.size} leaves")
        out = []
        for level in self.levels[:-1]:
            sibling = index ^ 1
            if sibling < len(level):
                out.append(level[sibling])
            index >>= 1
        return out


class NodeTable:
    """Distinct hashes, each stored once; a path becomes a list of positions."""

    def __init__(self) -> None:
        self.nodes: list[bytes] = []
        self._at: dict[bytes, int] = {}

    def refs(self, path: Sequence[bytes]) -> list[int]:
        out = []
        for h in path:
            i = self._at.get(h)
            if i is None:
                i = self._at[h] = len(self.nodes)
                self.nodes.append(h)
            out.append(i)
        return out
