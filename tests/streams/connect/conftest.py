"""A sealed store of recent 15-minute readings (three meters, two customers), a console serving Connect My Data
on a free port, a registered third party, and a loopback receiver for its notifications."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from streams import capabilities
from streams.connect.notify import Outbox
from streams.console.app import ConsoleState
from streams.console.data import Vault
from streams.console.engines import Sharing, connect_for
from streams.console.sessions import SessionStore
from streams.console.throttle import Throttle
from streams.console.users import UserStore
from streams.ingest.broker import free_port
from streams.keys.keystore import Keystore
from streams.pipeline import Pipeline
from streams.seal import Source
from streams.settings import Settings
from streams.store.segments import SegmentStore
from tests.streams.console.conftest import PASSPHRASE, PASSWORD, Served

METERS = {"alice": ["M-A1", "M-A2"], "bob": ["M-B1"]}
REGION = "north"
DAYS = 3
SCOPE = "FB=1_3_4_5_13_14_39;IntervalDuration=900;BlockDuration=daily;HistoryLength=2592000"


def kwh_at(meter: str, i: int) -> float:
    return round(0.05 + (i % 96) / 400 + (0.01 if meter.endswith("2") else 0), 3)


@pytest.fixture(scope="session")
def connect_data(tmp_path_factory) -> dict:
    data = tmp_path_factory.mktemp("connect-data")
    keystore = Keystore.init(data, PASSPHRASE)
    keys = keystore.unlock(PASSPHRASE)
    settings = Settings.from_env({}, data_dir=data, regions=(REGION,), max_future_skew_s=1e9)
    pipeline = Pipeline(settings, keys.index_key, keystore.owner_public, SegmentStore(settings.store_dir),
                        keystore.ledger_signer(PASSPHRASE))
    today = dt.datetime.now(dt.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    start = today - dt.timedelta(days=DAYS)
    states: dict = {}
    messages, offset, source = [], 0, {}
    for meter in [m for ms in METERS.values() for m in ms]:
        register = 10.0
        for i in range(1, DAYS * 96 + 1):
            ts = start + dt.timedelta(minutes=15 * i)
            kwh = kwh_at(meter, i)
            register += kwh
            raw = json.dumps({"meter_id": meter, "ts": ts.isoformat().replace("+00:00", "Z"), "kwh": kwh,
                              "register_kwh": round(register, 3), "region": REGION, "category": "Domestic"}).encode()
            messages.append((0, offset, pipeline.seal_reading(raw, Source("readings.raw", 0, offset), states).encode()))
            source[(meter, int(ts.timestamp()))] = round(kwh * 1000)
            offset += 1
    pipeline.store_batch("readings.sealed", messages)
    pipeline.checkpoint_due(force=True)
    users = UserStore.for_data_dir(data)
    for name, meters in METERS.items():
        users.add(name, "customer", password=PASSWORD, meters=meters)
    users.add("root", "admin", password=PASSWORD)
    users.add("audrey", "auditor", password=PASSWORD)
    return {"dir": data, "settings": settings, "source": source, "start": start}


class Receiver:
    """A loopback notify-uri that records what it is POSTed (``fail`` > 0: answer 503 that many times)."""

    def __init__(self) -> None:
        self.got: list[tuple[bytes, str]] = []
        self.fail = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                if outer.fail > 0:
                    outer.fail -= 1
                    self.send_response(503)
                else:
                    outer.got.append((body, self.headers.get("Signature", "")))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/notify"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, n: int, timeout: float = 20.0) -> list[tuple[bytes, str]]:
        deadline = time.monotonic() + timeout
        while len(self.got) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.got

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture(scope="session")
def receiver():
    r = Receiver()
    yield r
    r.stop()


@pytest.fixture(scope="session")
def served_connect(connect_data):
    from streams.connect.notify import Notifier

    settings = connect_data["settings"]
    vault = Vault.open(settings.data_dir, PASSPHRASE)
    state = ConsoleState(users=UserStore.for_data_dir(settings.data_dir), sessions=SessionStore(ttl_s=600),
                         throttle=Throttle(limit=50, window_s=60), vault=vault, regions=settings.regions,
                         registry=capabilities.registry())
    state.sharing = Sharing(vault)
    state.connect = connect_for(vault, settings, retry_s=0.2)
    notifier = Notifier(state.connect.outbox, every_s=0.1).start()
    served = Served(state)
    yield served
    served.stop()
    notifier.stop()


@pytest.fixture(scope="session")
def party(served_connect, receiver) -> dict:
    """A third party in production with a loopback redirect URI and notify URI."""
    redirect = f"http://127.0.0.1:{free_port()}/callback"
    client, secret = served_connect.state.connect.register("tariff-app", redirect_uri=redirect, scope=SCOPE,
                                                           notify_uri=receiver.url, purpose="cheaper tariffs")
    return {"name": "tariff-app", "client_id": client.client_id, "secret": secret, "redirect_uri": redirect}


def outbox(served) -> Outbox:
    return served.state.connect.outbox
