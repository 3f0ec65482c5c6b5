"""Run a meterseal worker: unlock the index key, make sure the topics exist, start the Faust app."""

from __future__ import annotations

import logging
import sys
import time

import faust

from streams.broker import ensure_topics, resolve
from streams.keystore import Keystore
from streams.pipeline import Pipeline
from streams.settings import Settings
from streams.store import SegmentStore

from .app import build_app


def run_worker(settings: Settings, passphrase: str) -> None:
    """Blocks until the worker is stopped (SIGINT/SIGTERM stop it cleanly)."""
    started = time.monotonic()
    keystore = Keystore.load(settings.data_dir)
    index_key = keystore.index_key(passphrase)  # the worker never unlocks the owner's private key
    broker = resolve(settings.broker, settings.data_dir)
    ensure_topics(broker, settings.partitions)
    signer = keystore.ledger_signer(passphrase)
    pipeline = Pipeline(settings, index_key, keystore.owner_public, SegmentStore(settings.store_dir), signer)
    app = build_app(settings, pipeline, broker=broker, started=started)
    logging.getLogger("meterseal").setLevel(logging.INFO)
    worker = faust.Worker(app, loglevel=settings.log_level, quiet=True)
    if not sys.stdout.isatty():
        worker.spinner = None  # its terminal escapes only garble a log file
    worker.execute_from_commandline()
