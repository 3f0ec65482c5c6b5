"""Property tests: every proof we build verifies; any single-bit change to any input fails."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from ledger.compact import CompactRange
from ledger.exceptions import ProofError
from ledger.hashing import leaf_hash, subtree_root
from ledger.compact import root
from ledger.proof import consistency_proof, inclusion_proof
from ledger.verify import verify_consistency, verify_inclusion


def leaves(n: int) -> list[bytes]:
    return [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


def flip(data: bytes, bit: int) -> bytes:
    b = bytearray(data)
    b[bit // 8] ^= 1 << (bit % 8)
    return bytes(b)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 300), st.data())
def test_inclusion_proofs_verify_and_any_bit_flip_fails(n, data):
    hashes = leaves(n)
    index = data.draw(st.integers(0, n - 1))
    proof = inclusion_proof(index, hashes)
    r = root(hashes)
    verify_inclusion(hashes[index], index, n, proof, r)
    target = data.draw(st.sampled_from(["leaf", "root"] + (["proof"] if proof else [])))
    bit = data.draw(st.integers(0, 255))
    if target == "leaf":
        args = (flip(hashes[index], bit), index, n, proof, r)
    elif target == "root":
        args = (hashes[index], index, n, proof, flip(r, bit))
    else:
        i = data.draw(st.integers(0, len(proof) - 1))
        args = (hashes[index], index, n, proof[:i] + [flip(proof[i], bit)] + proof[i + 1:], r)
    with pytest.raises(ProofError):
        verify_inclusion(*args)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 300), st.data())
def test_wrong_index_or_size_fails(n, data):
    hashes = leaves(n)
    index = data.draw(st.integers(0, n - 1))
    proof = inclusion_proof(index, hashes)
    other = data.draw(st.integers(0, 2 * n).filter(lambda i: i != index))
    with pytest.raises(ProofError):
        verify_inclusion(hashes[index], other, n, proof, root(hashes))


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 300), st.data())
def test_consistency_proofs_verify_and_any_bit_flip_fails(n, data):
    hashes = leaves(n)
    m = data.draw(st.integers(1, n))
    proof = consistency_proof(m, hashes)
    r1, r2 = root(hashes[:m]), root(hashes)
    verify_consistency(m, n, proof, r1, r2)
    bit = data.draw(st.integers(0, 255))
    choices = ["root1", "root2"] + (["proof"] if proof else [])
    target = data.draw(st.sampled_from(choices))
    if target == "root1":
        args = (m, n, proof, flip(r1, bit), r2)
    elif target == "root2":
        args = (m, n, proof, r1, flip(r2, bit))
    else:
        i = data.draw(st.integers(0, len(proof) - 1))
        args = (m, n, proof[:i] + [flip(proof[i], bit)] + proof[i + 1:], r1, r2)
    with pytest.raises(ProofError):
        verify_consistency(*args)


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 200), st.data())
def test_a_rewritten_history_is_not_consistent(n, data):
    hashes = leaves(n)
    m = data.draw(st.integers(1, n - 1))
    changed = data.draw(st.integers(0, m - 1))
    forged = hashes[:changed] + [leaf_hash(b"forged")] + hashes[changed + 1:]
    with pytest.raises(ProofError):
        verify_consistency(m, n, consistency_proof(m, forged), root(hashes[:m]), root(forged))


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 500))
def test_compact_range_root_equals_the_recursive_definition(n):
    hashes = leaves(n)
    tree = CompactRange()
    for h in hashes:
        tree.append(h)
    assert tree.root() == subtree_root(hashes)
    assert CompactRange(tree.size, list(tree.frontier)).root() == tree.root()


def test_compact_range_rejects_a_bad_frontier():
    with pytest.raises(ValueError):
        CompactRange(3, [bytes(32)])
