"""Known-answer tests: the RFC 6962 test tree and every transparency-dev/merkle inclusion and
consistency vector, valid and invalid, from ../shared/vectors."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from ledger.exceptions import ProofError
from ledger.hashing import EMPTY_ROOT, leaf_hash, subtree_root
from ledger.compact import root
from ledger.proof import consistency_proof, inclusion_proof
from ledger.verify import verify_consistency, verify_inclusion

VECTORS = Path(__file__).resolve().parents[1] / "data" / "vectors"
TDM = VECTORS / "transparency-dev-merkle" / "testdata"


def _files(kind: str) -> list[Path]:
    return sorted((TDM / kind).rglob("*.json")) if TDM.exists() else []


def _b64(x: str) -> bytes:
    return base64.b64decode(x)


@pytest.fixture(scope="module")
def tree():
    return json.loads((VECTORS / "rfc6962_test_tree.json").read_text())


def test_rfc6962_test_tree(tree):
    inputs = [bytes.fromhex(x) for x in tree["leaf_inputs_hex"]]
    hashes = [leaf_hash(x) for x in inputs]
    assert [h.hex() for h in hashes] == tree["leaf_hashes_hex"]
    for size, want in tree["roots_by_size_hex"].items():
        assert root(hashes[: int(size)]).hex() == want
        assert subtree_root(hashes[: int(size)]).hex() == want
    assert EMPTY_ROOT.hex() == tree["empty_tree_root_hex"] == root([]).hex()
    for case in tree["hasher_cases"]:
        if "leaf_input_hex" in case:
            assert leaf_hash(bytes.fromhex(case["leaf_input_hex"])).hex() == case["want_hex"]


def test_proofs_we_build_match_the_reference_happy_paths(tree):
    hashes = [bytes.fromhex(h) for h in tree["leaf_hashes_hex"]]
    checked = 0
    for path in _files("inclusion"):
        v = json.loads(path.read_text())
        if v["wantErr"] or v["treeSize"] > len(hashes):
            continue
        assert inclusion_proof(v["leafIdx"], hashes[: v["treeSize"]]) == [_b64(p) for p in v["proof"] or []], path
        checked += 1
    for path in _files("consistency"):
        v = json.loads(path.read_text())
        if v["wantErr"] or v["size2"] > len(hashes) or v["size1"] == 0:
            continue
        assert consistency_proof(v["size1"], hashes[: v["size2"]]) == [_b64(p) for p in v["proof"] or []], path
        checked += 1
    assert checked >= 8


@pytest.mark.parametrize("path", _files("inclusion"), ids=lambda p: str(p.relative_to(TDM)))
def test_inclusion_vector(path):
    v = json.loads(path.read_text())
    args = (_b64(v["leafHash"]), v["leafIdx"], v["treeSize"], [_b64(p) for p in v["proof"] or []], _b64(v["root"]))
    if v["wantErr"]:
        with pytest.raises(ProofError):
            verify_inclusion(*args)
    else:
        verify_inclusion(*args)


@pytest.mark.parametrize("path", _files("consistency"), ids=lambda p: str(p.relative_to(TDM)))
def test_consistency_vector(path):
    v = json.loads(path.read_text())
    args = (v["size1"], v["size2"], [_b64(p) for p in v["proof"] or []], _b64(v["root1"]), _b64(v["root2"]))
    if v["wantErr"]:
        with pytest.raises(ProofError):
            verify_consistency(*args)
    else:
        verify_consistency(*args)


def test_vectors_are_present():
    assert len(_files("inclusion")) == 98 and len(_files("consistency")) == 98
