"""A PKCS#11 token (SoftHSM2) as the key service: keys that never leave it, AES key wrap with padding and
never RSA-OAEP (SoftHSM2 2.6.1 would do it with SHA-1 only), clear errors for a missing token or PIN."""

from __future__ import annotations

import os

import pytest

from streams.exceptions import KeyServiceDenied, KeyServiceUnavailable
from streams.kms.pkcs11 import Pkcs11Token
from streams.kms.service import DEK, INDEX
from streams.kms.uri import parse

pytestmark = pytest.mark.kms


def test_wrapping_keys_never_leave_the_token_and_only_wrap(hsm_uri):
    import pkcs11
    from pkcs11 import Attribute

    token = Pkcs11Token(parse(hsm_uri))
    token.create_keys()
    for alias in (DEK, INDEX):
        kek = token._kek(token.resolve_alias(alias))
        assert (kek[Attribute.EXTRACTABLE], kek[Attribute.SENSITIVE], kek[Attribute.WRAP], kek[Attribute.UNWRAP],
                kek[Attribute.ENCRYPT], kek[Attribute.DECRYPT]) == (False, True, True, True, False, False)
        with pytest.raises(pkcs11.exceptions.AttributeSensitive):
            kek[Attribute.VALUE]
    key = token.resolve_alias(DEK)
    key_id = os.urandom(16)
    secret, wrapped = token.generate_dek(key, key_id)
    # RFC 5649 over DEK || 16-byte tag: 48 bytes in, 56 out (an RSA-OAEP wrap would be the modulus' length)
    assert len(wrapped) == 56
    kek = token._kek(key)
    opened = kek.unwrap_key(pkcs11.ObjectClass.SECRET_KEY, pkcs11.KeyType.GENERIC_SECRET, wrapped,
                            mechanism=pkcs11.Mechanism.AES_KEY_WRAP_PAD, store=False,
                            template={Attribute.EXTRACTABLE: True, Attribute.SENSITIVE: False})
    assert opened[Attribute.VALUE][:32] == secret  # CKM_AES_KEY_WRAP_PAD it is
    token.close()


def test_a_missing_token_or_pin_is_a_clear_error(softhsm, monkeypatch):
    with pytest.raises(KeyServiceUnavailable, match="no token labelled 'absent'.*softhsm2-util --init-token"):
        Pkcs11Token(parse(softhsm.uri("absent", "k")))
    monkeypatch.delenv("METERSEAL_PKCS11_PIN")
    with pytest.raises(KeyServiceDenied, match="METERSEAL_PKCS11_PIN"):
        Pkcs11Token(parse(softhsm.uri("meterseal", "k")))
    with pytest.raises(KeyServiceUnavailable, match="apt-get install -y softhsm2"):
        Pkcs11Token(parse("pkcs11:module=/nonexistent/libsofthsm2.so;token=t;key=k"), pin="1234")
