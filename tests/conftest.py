from __future__ import annotations

from pathlib import Path

import pytest

from streams.crypto.envelope import DekRing
from streams.keys.keystore import Keystore
from streams.seal import Sealer
from streams.crypto.tokens import BlindIndex
from streams.validate import Policy

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data"  # the test data carried in the tree (tests/data/README.md says where each file is from)
SEED_CSV = DATA / "Electricity_bill_1k.csv"
REGIONS = frozenset({"north", "south", "east", "west", "central"})


@pytest.fixture
def seed_csv() -> Path:
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


# -- object storage: PostgreSQL + SeaweedFS on loopback, started once per session for `objectstore` tests ---
@pytest.fixture(scope="session")
def objectstore(tmp_path_factory):
    """A fresh PostgreSQL cluster (port 15442) and SeaweedFS ``weed mini`` (S3 on 15400, its other ports
    15401-15415), with the AWS_* and METERSEAL_CATALOG variables set for the session; both stopped after.
    ``METERSEAL_TEST_PORT_BASE=N`` moves them to N+42 and N (so two checkouts can run their tests at once)."""
    import os
    import shutil

    from streams.store.servers import Servers

    base = int(os.environ.get("METERSEAL_TEST_PORT_BASE", "15400"))
    servers = Servers(tmp_path_factory.mktemp("objectstore"), pg_port=base + 42, s3_port=base)
    try:
        servers.__enter__()
    except FileNotFoundError as exc:  # .ci/run installs both; a bare checkout may not have them
        pytest.skip(f"object storage servers not installed: {exc}")
    saved = {k: os.environ.get(k) for k in servers.env()}
    os.environ.update(servers.env())
    yield servers
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    servers.stop_seaweed()
    servers.stop_postgres(remove=True)
    shutil.rmtree(servers.base, ignore_errors=True)


@pytest.fixture
def s3_location(objectstore):
    """``s3://<fresh bucket>/store`` on the session's SeaweedFS."""
    import uuid

    from streams.store.objects import s3_client

    bucket = f"ms-{uuid.uuid4().hex[:12]}"
    s3_client().create_bucket(Bucket=bucket)
    return f"s3://{bucket}/store"


# -- MQTT: Debian's Mosquitto on loopback for `mqtt` tests ---------------------------------------------------------
MQTT_METERS = 200  # the fleet the MQTT tests publish from (client certificates made once per session)


@pytest.fixture(scope="session")
def mqtt_pki(tmp_path_factory):
    """A CA, the broker's and bridge's certificates and one client certificate per simulated meter (and two spare
    meters, ``M-A`` and ``M-B``); skips, naming the install, where Mosquitto is missing."""
    from streams.mqtt.fleet import fleet_meters
    from streams.mqtt.mosquitto import INSTALL, mosquitto_binary
    from streams.mqtt.pki import make_pki

    try:
        mosquitto_binary()
    except FileNotFoundError:
        pytest.skip(f"Mosquitto is not installed: {INSTALL}")
    return make_pki(tmp_path_factory.mktemp("mqtt-pki"), fleet_meters(MQTT_METERS) + ["M-A", "M-B"])


@pytest.fixture
def mosquitto(tmp_path, mqtt_pki):
    """Mosquitto on a free 127.0.0.1 port: TLS, client certificates required, CN as user name, ACL meters/%u/#."""
    from streams.mqtt.mosquitto import Mosquitto

    with Mosquitto(tmp_path / "mosquitto", pki=mqtt_pki) as broker:
        yield broker
