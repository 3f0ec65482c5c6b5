"""The key-service contract, run on every provider (local keystore, OpenBao transit, a PKCS#11 token).

What every provider must do: make a DEK and its wrap, give it back for the same key id and refuse it for any
other, refuse a wrap altered by one byte, wrap a key that exists, sign so that the signed-note code verifies it
under the key's public half, and move a wrap to its key's newest version without changing what it opens to.
"""

from __future__ import annotations

import os

import pytest

from ledger.note import Verifier, open_note, sign
from streams.exceptions import KeyServiceError
from streams.kms.service import (DEK, LEDGER, KeyRef, KeyService, ServiceDeks, ServiceUnwrap, service_signer,
                                 wrap_context)


def test_is_a_key_service(service):
    assert isinstance(service, KeyService)
    assert service.location


def test_a_dek_and_its_wrap_open_for_their_key_id_only(service):
    key = service.resolve_alias(DEK)
    key_id, other_id = os.urandom(16), os.urandom(16)
    secret, wrapped = service.generate_dek(key, key_id)
    assert len(secret) == 32 and secret not in wrapped
    assert service.unwrap(key, key_id, wrapped) == secret
    assert service.generate_dek(key, other_id)[0] != secret  # a fresh key each time
    with pytest.raises(KeyServiceError, match="does not open|could not be opened"):
        service.unwrap(key, other_id, wrapped)  # the key id is bound into the wrap


@pytest.mark.parametrize("where", [0, 17, -1])
def test_a_wrap_altered_by_one_byte_is_a_clear_error(service, where):
    key = service.resolve_alias(DEK)
    key_id = os.urandom(16)
    _, wrapped = service.generate_dek(key, key_id)
    altered = bytearray(wrapped)
    position = where if where >= 0 else len(altered) + where
    altered[position] ^= 0x01 if chr(altered[position]).isalnum() else 0x02
    with pytest.raises(KeyServiceError) as caught:
        service.unwrap(key, key_id, bytes(altered))
    assert key_id.hex() in str(caught.value) or "vault:vN" in str(caught.value)


def test_an_existing_key_wraps_and_comes_back(service):
    key = service.resolve_alias(DEK)
    key_id, secret = os.urandom(16), os.urandom(32)
    wrapped = service.wrap(key, key_id, secret)
    assert service.unwrap(key, key_id, wrapped) == secret


def test_aliases_resolve_the_same_way_every_time(service):
    assert service.resolve_alias(DEK) == service.resolve_alias(DEK)
    assert service.resolve_alias(DEK).fingerprint
    with pytest.raises(KeyServiceError):
        service.resolve_alias("no-such-alias")


def test_checkpoint_signatures_verify_under_the_public_key(service):
    key = service.resolve_alias(LEDGER)
    verifier = Verifier("meterseal-ledger", key.public, key.scheme)
    assert verifier.verify(b"a checkpoint\n", service.sign(key, b"a checkpoint\n"))
    note = sign("origin\n7\nroot\n", service_signer(service, key, name="meterseal-ledger"))
    assert open_note(note, [verifier]) == ("origin\n7\nroot\n", ["meterseal-ledger"])


def test_a_rewrap_opens_to_the_same_key(service):
    key = service.resolve_alias(DEK)
    key_id = os.urandom(16)
    secret, wrapped = service.generate_dek(key, key_id)
    moved = service.rewrap(key, key_id, wrapped)
    assert moved is None or service.unwrap(key, key_id, moved) == secret


def test_worker_deks_open_for_the_reader_and_a_foreign_wrap_is_named(service):
    maker = ServiceDeks(service, service.resolve_alias(DEK))
    dek, fields = maker.new_dek(1_800_000_000.0)
    record = {"key_id": dek.key_hex, **fields, "created_at_ms": 1_800_000_000_000, "worker": "w"}
    reader = ServiceUnwrap(service, [service.resolve_alias(DEK)])
    assert reader.unwrap_dek(record) == dek
    foreign = {**record, "owner_fingerprint": "ab" * 32}
    with pytest.raises(KeyServiceError, match="not this keystore's"):
        reader.unwrap_dek(foreign)


def test_contexts_bind_the_key_id():
    assert wrap_context(bytes(16)) != wrap_context(bytes(15) + b"\x01")
    with pytest.raises(ValueError):
        wrap_context(b"short")
    assert KeyRef("dek", "n", "s").public == b""
