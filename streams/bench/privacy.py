"""``meterseal bench privacy``: the DP error table, the billing figures and the encrypted-forecast figures,
each beside the earlier prototype's approach measured in the same run.

DP: fleets of simulated meters (``sources.simulate``, hourly readings, 30 days, 5 regions), hourly
per-region kWh sums. Fleets up to ``sealed_max`` meters are sealed into a temporary store by the real
pipeline and the true aggregate is computed from the *opened* store; larger fleets use the same simulated
readings in memory (sealing 7.2M readings through the pipeline takes ~25 min on 2 cores; the opened
store's aggregate equals the in-memory one for every sealed fleet, which the run checks and reports).
The prototype's approach — Laplace noise on every reading — is run on the same data at the same
per-meter privacy loss: each meter releases ``R`` readings, each eps0-DP, which is eps0²/2-zCDP each
and ``R·eps0²/2`` together, so eps0 = sqrt(2·rho/R).
"""

from __future__ import annotations

import csv
import datetime as dt
import math
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

RHOS = (0.05, 0.125, 0.5, 2.0)
FLEETS = (100, 1000, 10_000)
REGIONS = ("north", "south", "east", "west", "central")
SEED_CSV = Path(__file__).resolve().parents[3] / "shared" / "data" / "Electricity_bill_1k.csv"


def _rel_errors(noisy: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    rel = np.abs(noisy - truth) / np.maximum(np.abs(truth), 1e-9)
    return {"median": float(np.median(rel)), "p90": float(np.quantile(rel, 0.9))}


def bench_dp(*, fleets=FLEETS, rhos=RHOS, days: int = 30, clamp_kwh: float = 8.0, sealed_max: int = 1000,
             repeats: int = 3, by: tuple[str, ...] = ("region", "hour"),
             progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    from streams.ingest import sources
    from streams.privacy import dp

    say = progress or (lambda _m: None)
    end = dt.datetime(2025, 3, 1, tzinfo=dt.timezone.utc) + dt.timedelta(days=days) - dt.timedelta(hours=1)
    query = dp.DPQuery(metric="sum", by=by, start=dt.date(2025, 3, 1),
                       end=dt.date(2025, 3, 1) + dt.timedelta(days=days - 1), regions=REGIONS,
                       bounds=dp.Bounds(clamp_kwh=clamp_kwh, per_hour=1))
    per_meter_releases = days * 24
    table, notes = [], {}
    rng = np.random.default_rng(0)
    for fleet in fleets:
        t0 = time.perf_counter()
        fleet_readings = sources.simulate(meters=fleet, readings=fleet * days * 24, regions=REGIONS, interval_min=60,
                                          end=end, seed=fleet)
        source = "in memory"
        if fleet <= sealed_max:
            readings = list(fleet_readings)
            cols = dp.Columns.from_records(readings)
            opened = _sealed_and_opened(readings, query)
            store_cols = dp.Columns.from_records(opened)
            same = np.allclose(dp.bounded_aggregates(store_cols, query)[0], dp.bounded_aggregates(cols, query)[0])
            notes[str(fleet)] = {"sealed_and_opened": len(opened), "aggregate_equals_in_memory": bool(same)}
            cols, source = store_cols, "opened store"
            del readings, opened
        else:
            cols = _columns(fleet_readings)
        # the true aggregate (no bounds), and the bounded one the mechanism estimates
        truth = np.zeros(len(REGIONS) * query.buckets)
        hour = ((cols.epoch - dp._epoch(query.start)) // 3600).astype(np.int64)
        reg = np.asarray([REGIONS.index(r) for r in cols.region])
        group = reg * query.buckets + hour // query.bucket_hours
        np.add.at(truth, group, cols.kwh)
        bounded, _ = dp.bounded_aggregates(cols, query)
        say(f"fleet {fleet}: {len(cols.kwh)} readings ({source}) in {time.perf_counter() - t0:.1f}s")
        for rho in rhos:
            plan = dp.plan(query, rho)
            central = [np.asarray([r["value"] for r in dp.release(plan, bounded, np.zeros_like(bounded))])
                       for _ in range(repeats)]
            eps0 = math.sqrt(2 * rho / per_meter_releases)
            laplace = []
            for _ in range(repeats):  # the prototype: every reading + Laplace(clamp/eps0), then summed
                noisy = cols.kwh + rng.laplace(0.0, clamp_kwh / eps0, len(cols.kwh))
                agg = np.zeros_like(truth)
                np.add.at(agg, group, noisy)
                laplace.append(agg)
            c_err = [_rel_errors(c, truth) for c in central]
            l_err = [_rel_errors(l, truth) for l in laplace]
            table.append({"fleet": fleet, "rho": rho, "epsilon_at_delta_1e-6": dp.approx_dp(rho),
                          "gaussian_noise_scale_kwh": plan.sum_scale,
                          "dp_median_rel_error": float(np.mean([e["median"] for e in c_err])),
                          "dp_p90_rel_error": float(np.mean([e["p90"] for e in c_err])),
                          "prototype_laplace_eps_per_value": eps0,
                          "prototype_median_rel_error": float(np.mean([e["median"] for e in l_err])),
                          "prototype_p90_rel_error": float(np.mean([e["p90"] for e in l_err])),
                          "clamping_bias_median_rel": _rel_errors(bounded, truth)["median"],
                          "mean_true_group_kwh": float(truth.mean())})
            say(f"  rho {rho}: DP median rel error {table[-1]['dp_median_rel_error']:.4f}, "
                f"prototype {table[-1]['prototype_median_rel_error']:.4f}")
    # the prototype has no budget: averaging k repeats of its answer shrinks its noise by sqrt(k)
    averaging = _averaging_attack(rng, clamp_kwh=clamp_kwh, eps0=math.sqrt(2 * 0.5 / per_meter_releases))
    return {"query": f"{'hourly' if by[-1] == 'hour' else 'daily' if by[-1] == 'day' else 'total'} per-region kWh "
                     f"sums over {days} days, {len(REGIONS)} regions "
                     f"({len(REGIONS) * query.buckets} groups), bounds: clamp {clamp_kwh} kWh per reading, "
                     "1 reading per meter per hour (hourly meters)",
            "error": "relative |answer - true| / true per group; median and 90th percentile over groups, "
                     f"mean of {repeats} runs",
            "table": table, "stores": notes, "prototype_averaging": averaging}


def _columns(readings) -> "Any":
    """Columns straight from a reading generator (no list of dicts: 7.2M of them would take GBs)."""
    from streams.privacy import dp

    meter, epoch, region, kwh = [], [], [], []
    parse = dt.datetime.fromisoformat
    for r in readings:
        meter.append(r["meter_id"])
        epoch.append(parse(r["ts"]).timestamp())
        region.append(r["region"])
        kwh.append(r["kwh"])
    return dp.Columns(np.asarray(meter, dtype=object), np.asarray(epoch), np.asarray(region, dtype=object),
                      np.asarray(kwh))


def _averaging_attack(rng, *, clamp_kwh: float, eps0: float, k: int = 100) -> dict[str, float]:
    """One meter's reading released k times with fresh Laplace noise each (the prototype re-noised every
    query): the average's error falls like 1/sqrt(k), so the 'private' value is recovered."""
    true = 0.8
    single = np.abs(rng.laplace(0, clamp_kwh / eps0, 2000)).mean()
    averaged = np.abs(rng.laplace(0, clamp_kwh / eps0, (2000, k)).mean(axis=1)).mean()
    return {"eps_per_release": eps0, "releases": k, "mean_abs_error_one_release_kwh": float(single),
            f"mean_abs_error_average_of_{k}_kwh": float(averaged), "true_kwh": true,
            "total_epsilon_after_k_releases_basic_composition": eps0 * k}


def _sealed_and_opened(readings: list[dict], query) -> list[dict]:
    import json

    from streams.keys.keystore import Keystore
    from streams.pipeline import Pipeline
    from streams.store.query import Query, Reader
    from streams.seal import Source
    from streams.settings import Settings
    from streams.store.segments import SegmentStore

    with tempfile.TemporaryDirectory(prefix="meterseal-bench-dp-") as tmp:
        data = Path(tmp)
        keystore = Keystore.init(data, "bench")
        keys = keystore.unlock("bench")
        settings = Settings.from_env({}, data_dir=data, regions=",".join(REGIONS))
        pipeline = Pipeline(settings, keys.index_key, keystore.owner_public, SegmentStore(settings.store_dir))
        table: dict = {}
        msgs: dict[int, list] = {}
        for i, r in enumerate(readings):
            part = int(r["meter_id"][-1]) % 4
            out = pipeline.seal_reading(json.dumps(r).encode(), Source("readings.raw", part, i), table)
            msgs.setdefault(part, []).append((part, i, out.encode()))
            if len(msgs[part]) >= 20_000:
                pipeline.store_batch("readings.sealed", msgs.pop(part))
        for batch in msgs.values():
            pipeline.store_batch("readings.sealed", batch)
        reader = Reader(settings.store_dir, keys)
        return reader.open_many(reader.search(Query(start=query.start, end=query.end), kinds=["readings"]))


def bench_billing(*, customers: int = 100_000, prototype_sample: int = 2_000,
                  prototype_seed_bills: int | None = None, seed_csv: Path | None = None, uci_months: bool = True,
                  progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    from streams.privacy import billing, billrun, tariff

    say = progress or (lambda _m: None)
    tar = tariff.default_tariff()
    path = seed_csv or SEED_CSV
    if path.exists():
        with open(path, newline="", encoding="utf-8-sig") as fh:
            seed_units = [tariff.units_of(row["Billed Unit"]) for row in csv.DictReader(fh)]
        seed_source = str(path.name)
    else:
        from streams.ingest import sources

        seed_units = [tariff.units_of(r["Billed Unit"]) for r in sources.generated_bills(1000)]
        seed_source = "generated seed-format bills (no checkout: tests/data not found)"
    t0 = time.perf_counter()
    holder = billing.KeyHolder.generate()
    keygen_s = time.perf_counter() - t0
    seed = billrun.run_encrypted([{"units": u} for u in seed_units], tar, holder=holder)
    say(f"seed bills: {seed['identical_to_clear']}/{seed['customers']} identical")
    rng = np.random.default_rng(1)
    units = rng.integers(0, 120_000, customers).tolist()  # 0-1,200 kWh a month, across every slab
    big = billrun.run_encrypted([{"units": int(u)} for u in units], tar, holder=holder)
    say(f"{customers} customers: {big['figures']['bills_per_s']:.0f} bills/s")
    uci = None
    if uci_months:  # the real UCI household's every calendar month (Dec 2006 - Nov 2010)
        from streams.ingest import sources

        months = billrun.meter_months(sources.uci_readings(meters=1))
        run = billrun.run_encrypted(months, tar, holder=holder)
        units_kwh = [u["units"] / 100 for u in months]
        uci = {"meter_months": run["customers"], "identical_to_clear_to_the_paisa": run["identical_to_clear"],
               "kwh_min": min(units_kwh), "kwh_max": max(units_kwh), "bills_per_s": run["figures"]["bills_per_s"]}
        say(f"UCI meter-months: {run['identical_to_clear']}/{run['customers']} identical")
    proto_seed = billrun.prototype_ckks(seed_units[:prototype_seed_bills], tar)
    proto_big = billrun.prototype_ckks([int(u) for u in units[:prototype_sample]], tar)
    return {"keygen_s": keygen_s,
            "seed_bills": {"source": seed_source, "customers": seed["customers"],
                           "identical_to_clear_to_the_paisa": seed["identical_to_clear"], **seed["figures"]},
            "uci_meter_months": uci,
            "fleet": {"customers": customers, "identical_to_clear_to_the_paisa": big["identical_to_clear"],
                      **big["figures"]},
            "prototype_ckks_decrypt_then_compute": {"seed_bills": proto_seed,
                                                    f"first_{prototype_sample}_of_fleet": proto_big,
                                                    "what_it_protects": "nothing from the party that computes: "
                                                                        "it decrypts every consumption first"}}


def bench_forecast(*, meters: int = 10, days: int = 60, rounds: int = 5, epochs: int = 2, windows: int = 200,
                   progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    from fl import rounds as fl_rounds
    from fl import task
    from fl.data import region_data

    from streams.ingest import sources
    from streams.privacy import he_forecast

    say = progress or (lambda _m: None)
    readings = list(sources.uci_readings(meters=meters, limit=meters * days * 1440, regions=REGIONS))
    datas = [region_data([r for r in readings if r["region"] == g], g) for g in REGIONS]
    say(f"UCI: {len(readings)} readings, {meters} meters")
    mlp = fl_rounds.run(datas, rounds=rounds, epochs=epochs, baselines=False)
    linear = he_forecast.train_federated(datas, rounds=rounds, epochs=epochs)
    weights = linear["model_weights"]
    x = np.concatenate([d.test[0] for d in datas])
    s = np.concatenate([d.test[2] for d in datas])
    actual = np.concatenate([d.test[1] * d.test[2] for d in datas])
    persistence = task.metrics(actual, task.persistence(x, s))
    gateway = he_forecast.Gateway.generate()
    pick = np.linspace(0, len(x) - 1, min(windows, len(x))).astype(int)
    agree = he_forecast.agreement(gateway, weights, x[pick], s[pick])
    say(f"agreement over {agree['windows']} windows: max {agree['max_abs_diff_kwh']:.2e} kWh")
    lin_mae, mlp_mae = linear["rounds"][-1]["mae"], mlp["rounds"][-1]["mae"]
    square = he_forecast.train_federated(datas, rounds=rounds, epochs=epochs, model="square")
    pick_sq = pick[:: max(1, len(pick) // 20)]
    square_agree = he_forecast.agreement(he_forecast.Gateway.generate("square"), square["model_weights"], x[pick_sq], s[pick_sq])
    return {"data": f"UCI household series as {meters} meters x {days} days, hourly windows, "
                    f"{len(actual)} held-out windows",
            "he_linear_mae_kwh": lin_mae, "federated_mlp_mae_kwh": mlp_mae, "persistence_mae_kwh": persistence["mae"],
            "he_linear_vs_persistence": lin_mae / persistence["mae"] - 1, "he_linear_vs_mlp": lin_mae / mlp_mae - 1,
            "encrypted_vs_plaintext": agree, "square_mlp_mae_kwh": square["rounds"][-1]["mae"],
            "square_mlp_encrypted_vs_plaintext": square_agree}


def bench_privacy(*, quick: bool = False, sealed_max: int = 1000,
                  progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Everything: DP table, billing, forecasts. ``quick``: fleets 100/1000 only, 10k customers, 2 rounds."""
    out: dict[str, Any] = {}
    t = time.perf_counter()
    out["dp"] = bench_dp(fleets=FLEETS[:2] if quick else FLEETS, sealed_max=sealed_max, progress=progress)
    out["billing"] = bench_billing(customers=10_000 if quick else 100_000,
                                   prototype_sample=500 if quick else 2_000, progress=progress)
    out["forecast"] = bench_forecast(rounds=2 if quick else 5, days=20 if quick else 60,
                                     windows=50 if quick else 200, progress=progress)
    out["seconds"] = time.perf_counter() - t
    return out


def render(result: dict[str, Any]) -> str:
    """The bench's figures as text tables (``--format table``)."""
    lines = [f"DP: {result['dp']['query']}", f"    error: {result['dp']['error']}",
             f"{'fleet':>7} {'rho':>6} {'eps@1e-6':>9} {'sigma kWh':>10} {'DP med':>8} {'DP p90':>8} "
             f"{'proto med':>10} {'proto p90':>10} {'mean true kWh':>14}"]
    for r in result["dp"]["table"]:
        lines.append(f"{r['fleet']:>7} {r['rho']:>6} {r['epsilon_at_delta_1e-6']:>9.2f} {r['gaussian_noise_scale_kwh']:>10.1f} "
                     f"{r['dp_median_rel_error']:>8.4f} {r['dp_p90_rel_error']:>8.4f} {r['prototype_median_rel_error']:>10.3f} "
                     f"{r['prototype_p90_rel_error']:>10.3f} {r['mean_true_group_kwh']:>14.1f}")
    lines.append(f"stores: {result['dp']['stores']}")
    lines.append(f"prototype averaging: {result['dp']['prototype_averaging']}")
    for part in ("billing", "forecast"):
        lines.append(f"{part}:")
        for key, value in result[part].items():
            lines.append(f"  {key}: {value}")
    lines.append(f"seconds: {result['seconds']:.0f}")
    return "\n".join(lines)
