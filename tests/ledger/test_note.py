import json
from pathlib import Path

import pytest

from ledger.checkpoint import Checkpoint
from ledger.exceptions import NoteError
from ledger.note import Signer, Verifier, open_note, sign

EXAMPLES = Path(__file__).resolve().parents[1] / "data" / "vectors" / "signed_note_examples.json"


@pytest.fixture(scope="module")
def examples():
    return json.loads(EXAMPLES.read_text())


def test_public_signed_note_examples_verify(examples):
    for ex in examples:
        verifier = Verifier.from_vkey(ex["vkey"])
        assert verifier.vkey == ex["vkey"]
        text, names = open_note(ex["note"], [verifier])
        assert names == [verifier.name] and ex["note"].startswith(text)


def test_public_examples_fail_when_changed(examples):
    ex = examples[0]
    verifier = Verifier.from_vkey(ex["vkey"])
    with pytest.raises(NoteError):
        open_note(ex["note"].replace("cryptography", "Cryptography"), [verifier])
    with pytest.raises(NoteError, match="no signature by a known key"):
        open_note(ex["note"], [Verifier.from_vkey(examples[1]["vkey"])])


def test_sign_and_open_a_checkpoint():
    signer = Signer.generate("meterseal.test/log")
    cp = Checkpoint("meterseal.test/readings/0", 42, bytes(range(32)))
    note = sign(cp.body(), signer)
    text, names = open_note(note, [Verifier.from_vkey(signer.verifier.vkey)])
    assert Checkpoint.parse(text) == cp and names == ["meterseal.test/log"]
    forged = note.replace("\n42\n", "\n43\n")
    with pytest.raises(NoteError):
        open_note(forged, [signer.verifier])


@pytest.mark.parametrize("body", ["o\n3\n", "o\nx\nAAAA\n", "o\n3\nnot base64!\n", "o\n3\nAAAA\n", "o\n03\n" + "A" * 43 + "=\n"])
def test_malformed_checkpoints_are_refused(body):
    with pytest.raises(NoteError):
        Checkpoint.parse(body)


def test_bad_vkeys_and_names():
    with pytest.raises(NoteError):
        Verifier.from_vkey("nonsense")
    with pytest.raises(NoteError):
        Signer.generate("has space")
    v = Signer.generate("a").verifier
    with pytest.raises(NoteError, match="hash"):
        Verifier.from_vkey(v.vkey.replace(v.key_hash.hex(), "00000000"))


def test_ml_dsa_65_signs_beside_ed25519_and_either_key_verifies():
    from ledger.note import Signer, Verifier, open_note, sign
    from ledger.exceptions import NoteError

    ed, pq = Signer.generate("example/ed"), Signer.generate("example/pq", "ml-dsa-65")
    note = sign("hello\n", ed.with_cosigners(pq))
    assert note.count("\u2014 ") == 2
    assert open_note(note, [pq.verifier]) == ("hello\n", ["example/pq"])
    assert open_note(note, [ed.verifier, pq.verifier]) == ("hello\n", ["example/ed", "example/pq"])
    vkey = pq.verifier.vkey
    assert Verifier.from_vkey(vkey) == pq.verifier and pq.verifier.algorithm == "ML-DSA-65"
    # the key hash follows C2SP: SHA-256(name || 0x0A || type || public)[:4], type = 0xff "ML-DSA-65"
    import hashlib

    assert pq.verifier.key_hash == hashlib.sha256(b"example/pq\n\xffML-DSA-65" + pq.verifier.public).digest()[:4]
    forged = sign("hello\n", ed.with_cosigners(Signer("example/pq", bytes(32), "ml-dsa-65")))
    assert open_note(forged, [ed.verifier]) == ("hello\n", ["example/ed"])  # unknown key: ignored
    with pytest.raises(NoteError):
        open_note(forged.replace("hello", "hellO"), [pq.verifier])
    with pytest.raises(NoteError, match="invalid signature by example/pq"):
        # same name, another key whose hash collides? no: swap only the signature bytes of the pq line
        lines = note.splitlines(keepends=True)
        good_pq = [line for line in lines if line.startswith("\u2014 example/pq")][0]
        import base64

        raw = bytearray(base64.b64decode(good_pq.split(" ")[2]))
        raw[10] ^= 1
        open_note(note.replace(good_pq, f"\u2014 example/pq {base64.b64encode(bytes(raw)).decode()}\n"), [pq.verifier])
