"""One federated run over the store's regions as the data owner (``meterseal fl run``, ``bench fl``)."""

from __future__ import annotations

import json
import os
import time
from typing import Callable

from streams.exceptions import MeterSealError
from streams.settings import Settings

STEPS_MIN = (60, 15, 5, 1)  # forecasting interval tried in turn until the store has enough windows


def federate(settings: Settings, *, rounds: int = 3, strategy: str = "fedavg", proximal_mu: float = 0.01,
             epochs: int = 2, interval: str = "auto", say=print, status=None, task_name: str = "readings",
             passphrase: str | Callable[[], str] | None = None) -> dict:
    """One federated run over the store's regions, as the data owner: each region's client opens only its
    region's readings; every round's global model is saved and its hash appended to the ledger."""
    import contextlib

    from streams.kms.access import open_keys
    from streams.store.query import Reader
    from streams.store.base import open_store

    from fl import plot, provenance, rounds as fed, task
    from fl.data import region_data, region_readings, region_readings_with_key

    owner = open_keys(settings, role="console", passphrase=passphrase)  # a passphrase keystore, or a key service
    keystore = owner.keystore
    store = open_store(settings.store_location, catalog=settings.catalog, work_dir=settings.store_dir, create=False)
    reader = Reader(store, owner.unlocked())
    model_fn = task.Forecaster
    if task_name == "bills":  # the prototype's task: one client per category, TinyNet, prev bill -> next
        from fl.bills import category_bills, category_data

        categories = [c for (c,) in reader.connect().execute("SELECT DISTINCT category FROM bills ORDER BY 1").fetchall()
                      if c is not None]
        datas = [category_data(category_bills(reader, c), c) for c in categories]
        model_fn, minutes = task.TinyNet, None
    else:
        capabilities = {}
        with (status or (lambda _: contextlib.nullcontext()))("each region's client reads and opens its readings"):
            readings = {}
            for region in settings.regions:
                if region in keystore.region_names:  # the client gets its region's key, nothing more
                    key = owner.region_key(region)
                    readings[region] = region_readings_with_key(store, key)
                    capabilities[region] = f"region key {key.fingerprint[:16]}"
                else:
                    readings[region] = region_readings(reader, region)
                    capabilities[region] = "owner key (no region key: meterseal keys region add)"
        if any(c.startswith("owner") for c in capabilities.values()):
            say("note: regions without a region key were opened with the owner's key: "
                + ", ".join(r for r, c in capabilities.items() if c.startswith("owner")))
        steps = STEPS_MIN if interval == "auto" else (int(interval),)
        for minutes in steps:
            datas = [region_data(rs, region, step_s=minutes * 60) for region, rs in readings.items()]
            if sum(len(d.train[1]) for d in datas) >= 200 or minutes == steps[-1]:
                break
    if not any(len(d.train[1]) for d in datas):
        raise MeterSealError("the store has too few consecutive readings per meter for a forecasting window "
                                   "(ingest some: meterseal ingest uci)")
    signer = owner.signer()
    run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{strategy}-{os.urandom(2).hex()}"

    def save(round_: int, weights, metrics: dict) -> dict:
        row = provenance.record_model(store, signer, weights, run_id=run_id, round_=round_, strategy=strategy,
                                      metrics=metrics)
        return {"model_sha256": row["model_sha256"], "ledger_leaf": row["leaf_index"]}

    report = fed.run(datas, rounds=rounds, strategy=strategy, proximal_mu=proximal_mu, epochs=epochs,
                     progress=say, on_round=save, model_fn=model_fn)
    report["task"] = task_name
    if task_name != "bills":
        report["capabilities"] = capabilities
    report.pop("model_weights")
    report["interval_min"] = minutes
    report["run_id"] = run_id
    out = provenance.run_dir(store, run_id)
    (out / "history.json").write_text(json.dumps(report, indent=2))
    plot.plot_history(report, out / "metrics.png")
    say(f"models, history.json and metrics.png in {out}; each model's SHA-256 is a leaf of the ledger's "
        "model log (meterseal ledger verify checks them)")
    return report
