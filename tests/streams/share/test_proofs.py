"""The bundle's proof helpers agree with the ledger library: same paths, same roots, same verdicts."""

from __future__ import annotations


import pytest
from hypothesis import given, settings, strategies as st

from ledger.exceptions import ProofError
from ledger.hashing import leaf_hash, subtree_root as root
from ledger.proof import inclusion_proof
from ledger.verify import verify_inclusion
from streams.share.proofs import InclusionChecker, NodeTable, Tree


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13, 64, 100])
def test_tree_paths_are_rfc_6962_paths(n):
    leaves = [leaf_hash(bytes([i % 256, i // 256])) for i in range(n)]
    tree = Tree(leaves)
    assert tree.root() == root(leaves)
    assert all(tree.path(i) == inclusion_proof(i, leaves) for i in range(n))
    table = NodeTable()
    refs = [table.refs(tree.path(i)) for i in range(n)]
    assert [[table.nodes[j] for j in r] for r in refs] == [tree.path(i) for i in range(n)]


def _verdict(fn):
    try:
        fn()
        return True
    except ProofError:
        return False


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 80), st.randoms(use_true_random=False))
def test_checker_agrees_with_verify_inclusion_on_good_and_bad_proofs(n, rnd):
    leaves = [leaf_hash(rnd.randbytes(8)) for _ in range(n)]
    tree, checker = Tree(leaves), InclusionChecker()
    for i in rnd.sample(range(n), n):
        path = tree.path(i)
        leaf, index = leaves[i], i
        mutation = rnd.choice(["none", "none", "flip", "index", "leaf", "drop"])
        if mutation == "flip" and path:
            k = rnd.randrange(len(path))
            path = path[:k] + [bytes([path[k][0] ^ 1]) + path[k][1:]] + path[k + 1:]
        elif mutation == "index":
            index = (i + 1) % n
        elif mutation == "leaf":
            leaf = leaf_hash(b"other")
        elif mutation == "drop" and path:
            path = path[:-1]
        want = _verdict(lambda: verify_inclusion(leaf, index, n, path, tree.root()))
        assert _verdict(lambda: checker.check("t", leaf, index, n, path, tree.root())) == want, (n, i, mutation)
