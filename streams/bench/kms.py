"""``meterseal bench kms``: each key service beside the passphrase keystore (``local``), in one run.

- **unwrap**: one stored DEK unwrapped, cold (ms: median and p99 over ``unwraps`` DEKs) — an RSA-OAEP-3072
  private operation in this process for ``local``, a loopback HTTPS-less call for ``openbao``, a PKCS#11 call
  for ``pkcs11``;
- **42-day range, cold cache**: the query and the opening of every hit with a fresh keyring (each DEK in range
  unwrapped once), then warm (the same keyring again), best of 3, over one built store whose DEKs rotate as a worker's do
  hourly (``dek_records`` readings each) — wrapped by each provider (``kms/wraps/``, as after a migration);
- **seal**: the worker's seal step (``Sealer.readings``, 500 a batch) with new DEKs from each provider, at the
  default rotation (100,000 records) and at a fast one (1,000), five rounds interleaved in rotating order, the
  best round counted.

The OpenBao dev server and the SoftHSM2 token are started here (a provider whose software is missing is left
out, and the result says so). Machines here are shared: compare the ratios, not the absolute figures.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

PROVIDERS = ("local", "openbao", "pkcs11")


def _services(work: Path, providers: tuple[str, ...], skipped: dict[str, str], hsm_uri: str | None) -> dict[str, Any]:
    """provider -> (service, closer) with keys made; ``local`` is the owner key pair of the built store."""
    out: dict[str, Any] = {}
    if "openbao" in providers:
        from streams.kms.devserver import DevOpenBao
        from streams.kms.openbao import OpenBaoTransit
        from streams.kms.uri import parse

        try:
            server = DevOpenBao(work / "openbao").start()
            server.enable_transit()
            service = OpenBaoTransit(parse(server.uri()), token=server.root_token)
            service.create_keys()
            out["openbao"] = (service, server.stop)
        except FileNotFoundError as exc:
            skipped["openbao"] = str(exc)
    if "pkcs11" in providers:
        from streams.kms.devserver import SoftHsm

        try:
            from streams.kms.pkcs11 import Pkcs11Token
            from streams.kms.uri import parse

            if hsm_uri is None:  # a token of its own; SOFTHSM2_CONF set before this process first loads SoftHSM2
                hsm = SoftHsm(work / "softhsm").start()
                os.environ.update(hsm.env())
                hsm_uri = hsm.uri()
            service = Pkcs11Token(parse(hsm_uri))
            service.create_keys()
            out["pkcs11"] = (service, service.close)
        except (FileNotFoundError, ImportError) as exc:
            skipped["pkcs11"] = str(exc)
        except Exception as exc:  # noqa: BLE001 - a token that will not start: reported, the rest measured
            skipped["pkcs11"] = f"{type(exc).__name__}: {exc}"
    return out


def _ms(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    return {"median": round(1000 * statistics.median(values), 3),
            "p99": round(1000 * values[min(len(values) - 1, int(0.99 * len(values)))], 3)}


def bench_kms(*, readings: int = 200_000, dek_records: int = 84, unwraps: int = 200, seal_readings: int = 100_000,
              providers: tuple[str, ...] = PROVIDERS, progress: Callable[[str], None] | None = None,
              hsm_uri: str | None = None) -> dict:
    """The figures above; ``readings`` in the built store, ``dek_records`` readings per DEK (84 at 200,000
    readings of 500 meters every 6 hours: about one DEK per hour of readings, a worker's hourly rotation).
    ``hsm_uri``: a PKCS#11 token already set up in this process (else one is made)."""
    say = progress or (lambda _text: None)
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="meterseal-bench-kms-") as tmp:
        work = Path(tmp)
        services = _services(work, providers, skipped, hsm_uri)
        try:
            say("building the store")
            result = {"providers": ["local", *services], "skipped": skipped}
            result["unwrap_ms"], result["range_42_days"] = _unwrap_and_range(work, services, readings, dek_records,
                                                                             unwraps, say)
            say("sealing")
            result["seal"] = _seal(services, seal_readings)
        finally:
            for _, close in services.values():
                close()
    result["note"] = ("unwrap: one stored DEK, cold, median/p99 ms; range: 42 days of readings queried and every hit "
                      "opened with a fresh keyring (cold: each DEK in range unwrapped once) and again (warm), best of "
                      "3; seal: "
                      "Sealer.readings 500 a batch with each provider's new DEKs, rounds interleaved (order rotated), best of 5, "
                      "in wall time (waits for the service included) and in CPU time (what neighbours do not change); "
                      "preliminary figures from a shared 2-core machine")
    return result


def _unwrap_and_range(work: Path, services: dict[str, Any], n: int, dek_records: int, unwraps: int,
                      say: Callable[[str], None]) -> tuple[dict, dict]:
    import datetime as dt

    from streams.bench.store import build_reading_store
    from streams.keys.keyring import Keyring, put_wrap
    from streams.kms.service import DEK, ServiceUnwrap
    from streams.store.query import Query, where
    from streams.store.segments import SegmentStore, connect
    from streams.unseal import SEALED_COLUMNS, open_table

    base = work / "store-local"
    index, made, owner = build_reading_store(base, n, meters=500, dek_records=dek_records)
    stores = {"local": base}
    for name, (service, _) in services.items():
        say(f"wrapping {len(made)} DEKs with {name}")
        stores[name] = work / f"store-{name}"
        shutil.copytree(base, stores[name])
        store, ref = SegmentStore(stores[name]), service.resolve_alias(DEK)
        for dek in made.values():
            put_wrap(store, {"key_id": dek.key_hex, "scheme": ref.scheme, "owner_fingerprint": ref.fingerprint,
                             "wrapped": service.wrap(ref, dek.key_id, dek.secret), "created_at_ms": 0, "worker": "bench"})
    unwrap = {"local": {owner.public_key.fingerprint: owner.unwrapper()}}
    for name, (service, _) in services.items():
        unwrap[name] = ServiceUnwrap(service, [service.resolve_alias(DEK)])
    sample = list(made)[:unwraps]
    latency = {}
    for name, location in stores.items():
        say(f"unwrap latency: {name}")
        times = []
        for key_id in sample:
            ring = Keyring(SegmentStore(location), unwrap[name])
            start = time.perf_counter()
            ring(key_id)
            times.append(time.perf_counter() - start)
        latency[name] = _ms(times)
    first, last = dt.date(2022, 1, 10), dt.date(2022, 2, 20)
    condition, params = where(Query(start=first, end=last), index)
    cols = ", ".join(SEALED_COLUMNS)
    ranges: dict[str, Any] = {}
    for name, location in stores.items():
        say(f"42-day range: {name}")
        con = connect(location)
        cold = warm = float("inf")
        for _ in range(3):  # the best of 3, each cold run with a fresh keyring
            ring = Keyring(SegmentStore(location), unwrap[name])
            start = time.perf_counter()
            hits = con.sql(f"SELECT {cols} FROM readings WHERE {condition}", params=params).to_arrow_table()
            opened = open_table(hits, ring)
            cold = min(cold, time.perf_counter() - start)
            start = time.perf_counter()
            hits = con.sql(f"SELECT {cols} FROM readings WHERE {condition}", params=params).to_arrow_table()
            open_table(hits, ring)
            warm = min(warm, time.perf_counter() - start)
        con.close()
        ranges[name] = {"hits": len(opened), "deks": len(ring), "cold_ms": round(1000 * cold, 1),
                        "warm_ms": round(1000 * warm, 1)}
    for name in ranges:
        ranges[name]["cold_vs_local"] = round(ranges[name]["cold_ms"] / ranges["local"]["cold_ms"], 2)
    return latency, ranges


def _seal(services: dict[str, Any], n: int, rounds: int = 5) -> dict:
    import json

    from streams.crypto.envelope import DekRing
    from streams.crypto.tokens import BlindIndex
    from streams.keys.owner import OwnerKeyPair
    from streams.kms.service import DEK, ServiceDeks
    from streams.seal import Sealer, Source
    from streams.validate import Policy

    makers = {"local": OwnerKeyPair.generate().public_key}
    makers.update({name: ServiceDeks(service, service.resolve_alias(DEK)) for name, (service, _) in services.items()})
    raw = [json.dumps({"meter_id": f"m{i % 500}", "ts": f"2024-01-{1 + i // 86400 % 28:02d}T00:00:{i % 60:02d}Z",
                       "kwh": 0.1, "register_kwh": i, "region": "north", "category": "Domestic"}).encode()
           for i in range(n)]
    index, policy, sources = BlindIndex(os.urandom(32)), Policy(frozenset({"north"})), [Source("readings.raw", 0, 0)] * 500
    out: dict[str, Any] = {}
    for rotation in (100_000, 1_000):
        best = {name: 0.0 for name in makers}
        best_cpu = {name: 0.0 for name in makers}
        made = {name: 0 for name in makers}
        names = list(makers)
        for round_ in range(rounds):
            # interleaved, each round in another order: a noisy neighbour and a warm cache favour none of them
            for name in names[round_ % len(names):] + names[:round_ % len(names)]:
                maker = makers[name]
                wraps: list = []

                def generate(now: float, maker=maker) -> Any:
                    dek, fields = maker.new_dek(now)
                    wraps.append(fields)
                    return dek

                ring = DekRing(rotation, 3600, lambda _dek: None, generate=generate)
                sealer = Sealer(index, ring, policy, clock=lambda: 1.8e9)
                start, cpu = time.perf_counter(), time.process_time()
                for i in range(0, n, 500):
                    sealer.readings(raw[i:i + 500], sources)
                best[name] = max(best[name], n / (time.perf_counter() - start))
                best_cpu[name] = max(best_cpu[name], n / max(1e-9, time.process_time() - cpu))
                made[name] = len(wraps)
        out[f"rotation_{rotation}"] = {
            "readings_per_s": {k: round(v) for k, v in best.items()}, "deks_made": made,
            "vs_local": {k: round(v / best["local"], 3) for k, v in best.items() if k != "local"},
            # CPU time: what a shared machine's neighbours do not change (but a wait for the service is not in it)
            "cpu_readings_per_s": {k: round(v) for k, v in best_cpu.items()},
            "cpu_vs_local": {k: round(v / best_cpu["local"], 3) for k, v in best_cpu.items() if k != "local"}}
    return out
