"""METERSEAL_KMS: the three forms, and TLS verification that nothing turns off."""

from __future__ import annotations

import pytest

from streams.exceptions import ConfigError
from streams.kms.uri import LOCAL, OPENBAO, PKCS11, parse


def test_the_three_forms():
    assert parse(None).provider == parse("") .provider == parse("local").provider == LOCAL
    bao = parse("openbao://vault.example.org:8200/kv/transit/meterseal")
    assert (bao.provider, bao.host, bao.port, bao.mount, bao.key) == (OPENBAO, "vault.example.org", 8200, "kv/transit", "meterseal")
    assert str(bao) == "openbao://vault.example.org:8200/kv/transit/meterseal"
    hsm = parse("pkcs11:module=/usr/lib/softhsm/libsofthsm2.so;token=prod;key=ms")
    assert (hsm.provider, hsm.module, hsm.token, hsm.key) == (PKCS11, "/usr/lib/softhsm/libsofthsm2.so", "prod", "ms")
    assert parse(str(hsm)) == hsm


@pytest.mark.parametrize("bad", ["openbao://host/transit/k", "openbao://host:8200/k", "openbao://host:x/t/k",
                                 "pkcs11:module=/m.so;token=t", "pkcs11:module=/m.so;token=t;key=k;pin=1",
                                 "vault://host:8200/t/k", "kms"])
def test_bad_values_name_the_forms(bad):
    with pytest.raises(ConfigError, match="METERSEAL_KMS"):
        parse(bad)


def test_tls_is_verified_everywhere_but_plain_loopback():
    remote = parse("openbao://vault.example.org:8200/transit/meterseal")
    assert remote.base_url({}) == "https://vault.example.org:8200"
    assert remote.verify({}) is True  # the system's CAs
    assert remote.verify({"BAO_CACERT": "/etc/ca.pem"}) == "/etc/ca.pem"
    local = parse("openbao://127.0.0.1:8200/transit/meterseal")
    assert local.base_url({}) == "http://127.0.0.1:8200"  # a dev server on this machine
    assert local.base_url({"VAULT_CACERT": "/ca.pem"}) == "https://127.0.0.1:8200"  # a CA given: TLS, verified
    assert parse("openbao://[::1]:8200/transit/k").loopback and not parse("openbao://10.0.0.1:8200/t/k").loopback
    for env in ({"BAO_SKIP_VERIFY": "1"}, {"VAULT_SKIP_VERIFY": "true"}):
        with pytest.raises(ConfigError, match="never turns TLS verification off"):
            remote.verify(env)
    assert remote.verify({"BAO_SKIP_VERIFY": "false"}) is True
