"""``meterseal bench console``: live-alert fan-out to many SSE viewers, and API latency on a real store.

The console runs in its own process (as in production: the viewers' clients do not share its GIL), on
an embedded broker of its own. Fan-out: ``viewers`` SSE streams open at once (one operator session),
then ``alerts`` alerts are produced on the broker's ``alerts`` topic, one every ``gap_s``; for each
(viewer, alert) the time from just before the produce call to the viewer reading the event is measured.
The baseline in the same run is the same measurement with a single viewer. API: each endpoint is asked
``requests`` times in a row (customer endpoints for one of the store's meters); ``/healthz`` (no store,
no keys) is the baseline.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

BENCH_PASSWORD = "bench console password"


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))] if values else float("nan")


def _serve(data_dir: str, users_path: str, port: int, broker: str) -> None:
    """The console process the bench talks to (entry point of the child)."""
    from streams.console.app import ConsoleState, create_app
    from streams.console.data import Vault
    from streams.console.feed import AlertHub
    from streams.console.server import alert_source, uvicorn_config
    from streams.console.sessions import SessionStore
    from streams.console.throttle import Throttle
    from streams.console.users import UserStore
    from streams.settings import Settings

    settings = Settings.from_env()
    state = ConsoleState(users=UserStore(users_path), sessions=SessionStore(), throttle=Throttle(),
                         vault=Vault.open(data_dir, os.environ["METERSEAL_PASSPHRASE"]), regions=settings.regions,
                         broker=broker)
    state.hub = AlertHub(alert_source(broker)).start()
    uvicorn.Server(uvicorn_config(create_app(state), host="127.0.0.1", port=port)).run()


def _login(base: str, name: str) -> dict[str, str]:
    import re

    with httpx.Client(base_url=base, timeout=30) as c:
        token = re.search(r'name="csrf_token" value="([^"]+)"', c.get("/login").text)[1]
        r = c.post("/login", data={"username": name, "password": BENCH_PASSWORD, "csrf_token": token})
        if r.status_code != 303:
            raise RuntimeError(f"bench login as {name} failed: {r.status_code}")
        return dict(c.cookies)


async def _fanout(base: str, cookies: dict[str, str], viewers: int, alerts: int, gap_s: float, bootstrap: str) -> dict[str, Any]:
    import schemas
    from streams.ingest.broker import Producer

    sent: dict[str, float] = {}
    got: list[list[float]] = [[] for _ in range(viewers)]
    ready = asyncio.Semaphore(0)
    limits = httpx.Limits(max_connections=viewers + 10, max_keepalive_connections=viewers + 10)

    async def viewer(i: int, client: httpx.AsyncClient) -> None:
        async with client.stream("GET", "/events/alerts", timeout=None) as r:
            async for line in r.aiter_lines():
                if line.startswith("event: ready"):
                    ready.release()
                elif line.startswith("data:") and "alert_id" in line:
                    alert_id = json.loads(line[5:])["alert_id"]
                    if alert_id in sent:
                        got[i].append(time.perf_counter() - sent[alert_id])
                        if len(got[i]) == alerts:
                            return

    async with httpx.AsyncClient(base_url=base, cookies=cookies, limits=limits, timeout=30) as client:
        tasks = [asyncio.create_task(viewer(i, client)) for i in range(viewers)]
        for _ in range(viewers):
            await asyncio.wait_for(ready.acquire(), 60)
        producer = Producer(bootstrap, **{"linger.ms": 0})
        run = f"{time.time():.0f}-{viewers}"
        for n in range(alerts):
            now = int(time.time() * 1000)
            alert = {"format": 1, "alert_id": f"bench-{run}-{n}", "meter_tok": f"{n:032x}", "ts": "2024-01-01T00:00:00+00:00",
                     "kind": "spike", "score": 0.99, "severity": "warning", "reason": "bench", "region": "north",
                     "kwh": None, "ingested_at_ms": now, "detected_at_ms": now}
            value = schemas.encode("alert", alert)
            sent[alert["alert_id"]] = time.perf_counter()
            producer.send("alerts", value, key=alert["meter_tok"].encode())
            producer.flush(10)
            await asyncio.sleep(gap_s)
        done, pending = await asyncio.wait(tasks, timeout=10)
        for t in pending:
            t.cancel()
        producer.close()
    lat = [x for v in got for x in v]
    expected = viewers * alerts
    return {"viewers": viewers, "alerts": alerts, "delivered": len(lat), "expected": expected,
            "within_1s": round(sum(1 for x in lat if x <= 1.0) / expected, 4),
            "p50_ms": round(_pct(lat, 50) * 1000, 1), "p95_ms": round(_pct(lat, 95) * 1000, 1),
            "p99_ms": round(_pct(lat, 99) * 1000, 1), "max_ms": round(max(lat, default=float("nan")) * 1000, 1)}


def _api(base: str, operator: dict, customer: dict, meter: str, requests: int) -> dict[str, Any]:
    out = {}
    with httpx.Client(base_url=base, timeout=60, cookies=customer) as cust, \
            httpx.Client(base_url=base, timeout=60, cookies=operator) as ops:
        usage = cust.get(f"/api/meters/{meter}/usage?period=week").json()
        end = usage["end"]
        start = usage["start"]
        probes = [
            ("GET /healthz (baseline)", ops, "/healthz"),
            ("GET /api/meters/{id}/usage?period=week", cust, f"/api/meters/{meter}/usage?period=week&end={end}"),
            ("GET /api/meters/{id}/readings (1 week)", cust, f"/api/meters/{meter}/readings?from={start}&to={end}"),
            ("GET /api/bills", cust, "/api/bills"),
            ("GET /api/alerts", ops, "/api/alerts"),
            ("GET /api/status", ops, "/api/status"),
            ("GET /api/ledger/checkpoints", ops, "/api/ledger/checkpoints"),
            ("GET /api/regions/usage?range=7d", ops, "/api/regions/usage?range=7d"),
        ]
        for name, client, url in probes:
            times = []
            for _ in range(requests):
                t = time.perf_counter()
                r = client.get(url)
                times.append(time.perf_counter() - t)
                if r.status_code != 200:
                    raise RuntimeError(f"{url}: {r.status_code} {r.text[:200]}")
            out[name] = {"p50_ms": round(_pct(times, 50) * 1000, 1), "p95_ms": round(_pct(times, 95) * 1000, 1),
                         "bytes": len(r.content)}
    base_p95 = out["GET /healthz (baseline)"]["p95_ms"]
    for v in out.values():
        v["p95_vs_healthz"] = round(v["p95_ms"] / base_p95, 1) if base_p95 else None
    return out


def bench_console(data_dir: Path, passphrase: str, *, viewers: int = 200, alerts: int = 20, gap_s: float = 0.25,
                  requests: int = 50, port: int | None = None, broker_port: int | None = None) -> dict[str, Any]:
    """Run both measurements against the store in ``data_dir`` (e.g. the demo's) and return the figures."""
    from streams.console.data import Vault
    from streams.console.users import UserStore
    from streams.ingest.broker import EmbeddedBroker, ensure_topics, free_port
    from streams.store.query import Query

    vault = Vault.open(data_dir, passphrase)
    rows = vault.reader.search(Query(), kinds=("readings",))[:1]
    if not rows:
        raise RuntimeError(f"no readings in {data_dir}: run `meterseal demo` first")
    meter = vault.reader.open_many(rows)[0]["meter_id"]
    bill_rows = vault.reader.search(Query(), kinds=("bills",))[:1]
    bill_meters = [vault.reader.open_many(bill_rows)[0]["meter_no"]] if bill_rows else []
    tmp = Path(tempfile.mkdtemp(prefix="meterseal-bench-console-"))
    users = UserStore(tmp / "users.json")
    users.add("bench-admin", "admin", password=BENCH_PASSWORD)  # admin: operator and auditor routes
    users.add("bench-customer", "customer", password=BENCH_PASSWORD, meters=[meter, *bill_meters])
    port = port or free_port()
    base = f"http://127.0.0.1:{port}"
    with EmbeddedBroker(port=broker_port, log_path=tmp / "broker.log") as broker:
        ensure_topics(broker.bootstrap, 4)
        env = {**os.environ, "METERSEAL_PASSPHRASE": passphrase}
        code = (f"from streams.bench.console import _serve; _serve({str(data_dir)!r}, {str(tmp / 'users.json')!r}, "
                f"{port}, {broker.bootstrap!r})")
        child = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL,
                                 stderr=open(tmp / "console.log", "wb"))
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if child.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the bench console did not start: {(tmp / 'console.log').read_text()[-800:]}")
                time.sleep(0.2)
            operator, customer = _login(base, "bench-admin"), _login(base, "bench-customer")
            single = asyncio.run(_fanout(base, operator, 1, alerts, gap_s, broker.bootstrap))
            many = asyncio.run(_fanout(base, operator, viewers, alerts, gap_s, broker.bootstrap))
            api = _api(base, operator, customer, meter, requests)
        finally:
            child.terminate()
            child.wait(15)
    return {"sse_baseline_1_viewer": single, "sse_fanout": many,
            "p95_ratio_vs_1_viewer": round(many["p95_ms"] / single["p95_ms"], 2) if single["p95_ms"] else None,
            "api": api, "store": str(data_dir), "meter": meter}
