"""Each key-service provider, ready with its keys: the ``service`` fixture the contract suite runs on."""

from __future__ import annotations

import pytest

from streams.keys.keystore import Keystore
from streams.kms.uri import parse

PROVIDERS = ["local", pytest.param("openbao", marks=pytest.mark.kms), pytest.param("pkcs11", marks=pytest.mark.kms)]


def make_service(provider: str, request, tmp_path):
    if provider == "local":
        from streams.kms.local import LocalKeyService

        return LocalKeyService(Keystore.init(tmp_path / "local", "contract-passphrase"), "contract-passphrase")
    if provider == "openbao":
        from streams.kms.openbao import OpenBaoTransit

        server = request.getfixturevalue("openbao")
        service = OpenBaoTransit(parse(request.getfixturevalue("bao_uri")), token=server.root_token)
    else:
        from streams.kms.pkcs11 import Pkcs11Token

        service = Pkcs11Token(parse(request.getfixturevalue("hsm_uri")))
    service.create_keys()
    return service


@pytest.fixture(params=PROVIDERS)
def service(request, tmp_path):
    made = make_service(request.param, request, tmp_path)
    yield made
    made.close()
