"""Run a meterseal worker: obtain its keys, make sure the topics exist, start the Faust app."""

from __future__ import annotations

import logging
import sys
import time
from typing import Callable

import faust

from streams import capabilities
from streams.erasure.retention import enforce
from streams.ingest.broker import check_partitions, ensure_topics, resolve
from streams.exceptions import MeterSealError
from streams.keys.keystore import Keystore
from streams.keys.owner import OwnerPublicKey
from streams.kms.access import open_keys
from streams.pipeline import Pipeline, tune_gc
from streams.settings import Settings
from streams.store.base import open_store

from .app import build_app

log = logging.getLogger("meterseal.worker")


def region_keys(settings: Settings, index_key: bytes) -> Callable[[], dict[str, OwnerPublicKey]]:
    """The region public keys, re-read from the keystore each time a DEK is made (so a region added while the
    worker runs is granted its next DEKs). Checked now: a region key that fails its MAC stops the worker here;
    if the file goes bad later, the last keys that checked out stay in use and the error is logged."""
    last = Keystore.load(settings.data_dir).region_publics(index_key)

    def current() -> dict[str, OwnerPublicKey]:
        nonlocal last
        try:
            last = Keystore.load(settings.data_dir).region_publics(index_key)
        except MeterSealError as exc:
            log.error("region keys not reloaded, keeping the last good ones: %s", exc)
        return last
    return current


def run_worker(settings: Settings, passphrase: str | Callable[[], str] | None = None) -> None:
    """Blocks until the worker is stopped (SIGINT/SIGTERM stop it cleanly). ``passphrase`` (or a function asking
    for it) unlocks a passphrase keystore's index and checkpoint keys; a key service's keystore needs none."""
    started = time.monotonic()
    # the worker's keys: the index key, new DEKs (never an unwrap of a stored one), a checkpoint signer; with a key
    # service, its token's capabilities are checked first (a missing one is named here, before any work)
    keys = open_keys(settings, role="worker", passphrase=passphrase, check=True)
    index_key = keys.index_key()
    broker = resolve(settings.broker, settings.data_dir)
    ensure_topics(broker, settings.partitions)
    check_partitions(broker)
    store = open_store(settings.store_location, catalog=settings.catalog, work_dir=settings.store_dir)
    keys.usage.attach(store)
    signer = keys.signer()
    pipeline = Pipeline(settings, index_key, keys.dek_maker(), store, signer,
                        region_keys=region_keys(settings, index_key))
    registry = capabilities.registry()

    def enforce_retention() -> dict:
        return enforce(pipeline.store, index_key=index_key, signers=[signer], registry=registry, data_dir=settings.data_dir,
                       dek_max_age_s=settings.dek_max_age_s)

    app = build_app(settings, pipeline, broker=broker, started=started, enforce_retention=enforce_retention)
    if settings.metrics_port:  # off by default
        from .metrics import serve

        serve(settings.metrics_port, *app.meterseal_stats, monitor=app.monitor,
              extra=[*app.meterseal_collectors, keys.usage.collector()])
        log.warning("metrics on http://127.0.0.1:%d/metrics", settings.metrics_port)
    tune_gc()  # after everything long-lived is loaded (and the metrics server started)
    logging.getLogger("meterseal").setLevel(logging.INFO)
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True)
    if not sys.stdout.isatty():
        worker.spinner = None  # its terminal escapes only garble a log file
    worker.execute_from_commandline()
