from __future__ import annotations

from pathlib import Path

import pytest

from streams.crypto.envelope import DekRing
from streams.keys.keystore import Keystore
from streams.seal import Sealer
from streams.crypto.tokens import BlindIndex
from streams.validate import Policy

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
SEED_CSV = SHARED / "data" / "Electricity_bill_1k.csv"
REGIONS = frozenset({"north", "south", "east", "west", "central"})


@pytest.fixture
def seed_csv() -> Path:
    if not SEED_CSV.exists():
        pytest.skip(f"seed CSV not found at {SEED_CSV} (it lives in ../shared beside the checkout)")
    return SEED_CSV


@pytest.fixture
def index() -> BlindIndex:
    return BlindIndex(bytes(range(32)))


@pytest.fixture
def policy() -> Policy:
    return Policy(regions=REGIONS)


@pytest.fixture
def made_keys():
    return []


@pytest.fixture
def ring(made_keys) -> DekRing:
    return DekRing(max_records=1000, max_age_s=3600, on_new_key=made_keys.append)


@pytest.fixture
def sealer(index, ring, policy) -> Sealer:
    return Sealer(index, ring, policy, clock=lambda: 1_800_000_000.0)


@pytest.fixture(scope="session")
def keystore_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("keys")
    Keystore.init(path, "correct horse")
    return path
