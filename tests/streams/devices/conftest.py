from __future__ import annotations

import pytest

from ledger.note import Signer

from streams.devices.keys import DeviceKey
from streams.store.segments import SegmentStore

INDEX_KEY = bytes(range(32))


@pytest.fixture(scope="session")
def es256() -> DeviceKey:
    return DeviceKey.generate("ES256")


@pytest.fixture(scope="session")
def ed25519() -> DeviceKey:
    return DeviceKey.generate("Ed25519")


@pytest.fixture(scope="session")
def signer() -> Signer:
    return Signer.generate("meterseal-ledger")


@pytest.fixture
def store(tmp_path) -> SegmentStore:
    return SegmentStore(tmp_path / "store")
