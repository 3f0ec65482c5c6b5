"""Run a meterseal worker: unlock the index key, make sure the topics exist, start the Faust app."""

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


def run_worker(settings: Settings, passphrase: str) -> None:
    """Blocks until the worker is stopped (SIGINT/SIGTERM stop it cleanly)."""
    started = time.monotonic()
    keystore = Keystore.load(settings.data_dir)
    index_key = keystore.index_key(passphrase)  # the worker never unlocks the owner's private key
    broker = resolve(settings.broker, settings.data_dir)
    ensure_topics(broker, settings.partitions)
    check_partitions(broker)
    signer = keystore.ledger_signer(passphrase)
    pipeline = Pipeline(settings, index_key, keystore.owner_public, open_store(settings.store_location, catalog=settings.catalog, work_dir=settings.store_dir), signer,
                        region_keys=region_keys(settings, index_key))
    registry = capabilities.registry()

    def enforce_retention() -> dict:
        return enforce(pipeline.store, index_key=index_key, signers=[signer], registry=registry, data_dir=settings.data_dir,
                       dek_max_age_s=settings.dek_max_age_s)

    app = build_app(settings, pipeline, broker=broker, started=started, enforce_retention=enforce_retention)
    if settings.metrics_port:  # off by default
        from .metrics import serve

        serve(settings.metrics_port, *app.meterseal_stats, monitor=app.monitor, extra=app.meterseal_collectors)
        log.warning("metrics on http://127.0.0.1:%d/metrics", settings.metrics_port)
    tune_gc()  # after everything long-lived is loaded (and the metrics server started)
    logging.getLogger("meterseal").setLevel(logging.INFO)
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True)
    if not sys.stdout.isatty():
        worker.spinner = None  # its terminal escapes only garble a log file
    worker.execute_from_commandline()
