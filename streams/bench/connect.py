"""``meterseal bench connect``: Connect My Data's token endpoint (requests/s) and its Batch/Subscription feed for
one meter-year of 15-minute readings (35,040 IntervalReadings), beside ``export espi`` of the same data in the
same run (goal: the API within 1.5x of the CLI export's time).

A fresh store is sealed in-process through the worker's own pipeline; the console is served by uvicorn on a
free loopback port in this process; the third party's calls are real HTTP (httpx). The consent is given through
the service's own ``decide`` (what the consent page's Approve button calls), not a browser.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import math
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

SCOPE = "FB=1_3_4_5_13_14_39;IntervalDuration=900;BlockDuration=daily;HistoryLength=31622400"


def _readings(meter: str, end: dt.datetime, n: int) -> list[dict]:
    out, register = [], 1000.0
    for i in range(n):
        ts = end - dt.timedelta(minutes=15 * (n - 1 - i))
        kwh = round(0.05 + 0.2 * (1 + math.sin(i / 96 * 2 * math.pi)) + (i % 7) / 100, 3)
        register += kwh
        out.append({"meter_id": meter, "ts": ts.isoformat().replace("+00:00", "Z"), "kwh": kwh,
                    "register_kwh": round(register, 3), "region": "north", "category": "Domestic"})
    return out


def bench_connect(*, readings: int = 35_040, token_requests: int = 200, feed_runs: int = 3) -> dict:
    import httpx
    import uvicorn

    from streams.connect.oauth import HttpRequest
    from streams.console.app import ConsoleState, create_app
    from streams.console.data import Vault
    from streams.console.engines import connect_for
    from streams.console.server import uvicorn_config
    from streams.console.sessions import SessionStore
    from streams.console.throttle import Throttle
    from streams.console.users import UserStore
    from streams.ingest.broker import free_port
    from streams.keys.keystore import Keystore
    from streams.pipeline import Pipeline
    from streams.seal import Sealed, Source
    from streams.settings import Settings
    from streams.share import espi
    from streams.store.query import Query, Reader
    from streams.store.segments import SegmentStore

    with tempfile.TemporaryDirectory(prefix="meterseal-bench-connect-") as tmp:
        data = Path(tmp)
        keystore = Keystore.init(data, "bench")
        keys, signer = keystore.unlock("bench"), keystore.ledger_signer("bench")
        settings = Settings.from_env({}, data_dir=data, regions=("north",))
        pipeline = Pipeline(settings, keys.index_key, keystore.owner_public, SegmentStore(settings.store_dir), signer)
        end = dt.datetime.now(dt.timezone.utc).replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=1)
        rows = _readings("M-YEAR", end, readings)
        started, states, batch = time.perf_counter(), {}, []
        for i, r in enumerate(rows):
            out = pipeline.seal_reading(json.dumps(r).encode(), Source("readings.raw", 0, i), states)
            if isinstance(out, Sealed):
                batch.append((0, i, out.encode()))
            if len(batch) >= 5000:
                pipeline.store_batch("readings.sealed", batch)
                batch = []
        pipeline.store_batch("readings.sealed", batch)
        pipeline.checkpoint_due(force=True)
        seal_s = time.perf_counter() - started
        first = dt.datetime.fromisoformat(rows[0]["ts"].replace("Z", "+00:00")).date()
        last = end.date()

        # the CLI's `export espi` path: search, open, write the feed
        reader = Reader(settings.store_dir, keys)
        export_times, export_bytes = [], 0
        for _ in range(feed_runs):
            t0 = time.perf_counter()
            hits = reader.open_hits(reader.search(Query(meter="M-YEAR", start=first, end=last), kinds=["readings"]))
            body = espi.feed(hits)
            export_times.append(time.perf_counter() - t0)
            export_bytes = len(body)

        # the console, serving the API
        users = UserStore.for_data_dir(data)
        users.add("cust", "customer", password="bench password 1", meters=["M-YEAR"])
        vault = Vault.open(data, "bench")
        state = ConsoleState(users=users, sessions=SessionStore(), throttle=Throttle(), vault=vault,
                             regions=settings.regions)
        state.connect = connect = connect_for(vault, settings)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server = uvicorn.Server(uvicorn_config(create_app(state), host="127.0.0.1", port=port))
        import threading

        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.02)
        try:
            redirect = "https://bench.example/cb"
            client, secret = connect.register("bench-app", redirect_uri=redirect, scope=SCOPE)
            verifier = secrets.token_urlsafe(48)
            challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            query = {"response_type": "code", "client_id": client.client_id, "redirect_uri": redirect, "scope": SCOPE,
                     "state": "s", "code_challenge": challenge, "code_challenge_method": "S256"}
            reply = connect.decide(HttpRequest("GET", f"{base}/oauth/authorize?{urlencode(query)}",
                                               query=tuple(query.items())),
                                   approve=True, customer_meters=["M-YEAR"], chosen=["M-YEAR"])
            code = parse_qs(urlsplit(reply.location).query)["code"][0]
            with httpx.Client(base_url=base, timeout=300) as http:
                auth = (client.client_id, secret)
                token = http.post("/oauth/token", auth=auth, data={"grant_type": "authorization_code", "code": code,
                                                                   "redirect_uri": redirect,
                                                                   "code_verifier": verifier}).json()
                latencies = []
                t0 = time.perf_counter()
                for _ in range(token_requests):
                    t1 = time.perf_counter()
                    token = http.post("/oauth/token", auth=auth, data={"grant_type": "refresh_token",
                                                                       "refresh_token": token["refresh_token"]}).json()
                    latencies.append(time.perf_counter() - t1)
                token_s = time.perf_counter() - t0
                path = "/espi/1_1/resource" + token["resourceURI"].split("/espi/1_1/resource", 1)[1]
                api_times, api_bytes, intervals = [], 0, 0
                for _ in range(feed_runs):
                    t1 = time.perf_counter()
                    r = http.get(path, headers={"Authorization": f"Bearer {token['access_token']}"})
                    api_times.append(time.perf_counter() - t1)
                    api_bytes, intervals = len(r.content), r.content.count(b"<espi:IntervalReading>")
                    if r.status_code != 200:
                        raise RuntimeError(f"feed: HTTP {r.status_code} {r.text[:200]}")
        finally:
            server.should_exit = True
            thread.join(10)
        export_s, api_s = statistics.median(export_times), statistics.median(api_times)
        return {
            "readings_sealed": len(rows), "seal_s": round(seal_s, 2),
            "token_endpoint": {"requests": token_requests, "requests_per_s": round(token_requests / token_s, 1),
                               "p50_ms": round(statistics.median(latencies) * 1000, 2),
                               "p95_ms": round(sorted(latencies)[int(0.95 * len(latencies)) - 1] * 1000, 2)},
            "export_espi": {"median_s": round(export_s, 3), "bytes": export_bytes},
            "api_batch_subscription": {"median_s": round(api_s, 3), "bytes": api_bytes, "interval_readings": intervals},
            "api_over_export": round(api_s / export_s, 2), "goal": "api_over_export <= 1.5",
            "runs": feed_runs,
        }
