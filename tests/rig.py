"""A broker and a real worker process for integration tests (the ``rig``)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

from streams.ingest.broker import EmbeddedBroker, consume, ensure_topics
from streams.keys.keystore import Keystore
from streams.store.segments import connect
from streams.crypto.tokens import BlindIndex

PASSPHRASE = "integration-test-passphrase"


class Rig:
    def __init__(self, data_dir: Path, broker: EmbeddedBroker, environ: dict[str, str]) -> None:
        self.data_dir, self.broker, self.environ = data_dir, broker, environ
        self.workers: list[subprocess.Popen] = []
        self.worker = self.start_worker()
        keystore = Keystore.load(data_dir)
        # a key service's keystore (tests/test_kms_integration.py) has no passphrase: its tests bring their own keys
        self.keys = keystore.unlock(PASSPHRASE) if keystore.kms is None else None
        self.index = BlindIndex(self.keys.index_key) if self.keys else None
        self.env = {**os.environ, "METERSEAL_DATA_DIR": str(data_dir), "METERSEAL_BROKER": broker.url,
                    "METERSEAL_PASSPHRASE": PASSPHRASE}

    def start_worker(self, log: str = "worker.log") -> subprocess.Popen:
        """A worker subprocess logging to ``log`` (appended); also kept as ``self.worker``."""
        with open(self.data_dir / log, "ab") as fh:
            self.worker = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"], env=self.environ,
                                           stdout=fh, stderr=subprocess.STDOUT)
        self.workers.append(self.worker)
        return self.worker

    def stop_worker(self, worker: subprocess.Popen | None = None) -> None:
        for w in [worker] if worker else self.workers:
            if w.poll() is None:
                w.terminate()
                try:
                    w.wait(30)
                except subprocess.TimeoutExpired:
                    w.kill()
                    w.wait(10)

    def kill_worker(self, worker: subprocess.Popen | None = None) -> None:
        """SIGKILL: no shutdown hook runs, nothing is flushed — a crash."""
        worker = worker or self.worker
        worker.kill()
        worker.wait(10)

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "streams.cli", *args], env=self.env, capture_output=True,
                              text=True, timeout=120)

    def query(self, sql: str, params=()):
        con = connect(self.data_dir / "store")
        try:
            return con.execute(sql, list(params)).fetchall()
        finally:
            con.close()

    def wait_for(self, predicate, what: str, timeout: float = 90.0, log: str = "worker.log"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.worker.poll() is None, "worker died:\n" + (self.data_dir / log).read_text()[-3000:]
            value = predicate()
            if value:
                return value
            time.sleep(0.3)
        raise AssertionError(f"timed out waiting for {what}\n" + (self.data_dir / log).read_text()[-3000:])

    def scan(self, topic: str, idle: float = 2.0) -> list:
        """Every message on ``topic`` from the start, read until the topic is idle for ``idle`` seconds."""
        return list(consume(self.broker.bootstrap, topic, idle=idle))

    def topic_bytes(self, topic: str) -> list[bytes]:
        """Every key and value on ``topic``, alternating."""
        return [b for m in self.scan(topic) for b in (m.key() or b"", m.value() or b"")]

    def consumed(self, topic: str) -> bool:
        """True when the worker's group has committed past every message now on ``topic``."""
        from confluent_kafka import Consumer, TopicPartition

        ends: dict[int, int] = {}
        for m in self.scan(topic):
            ends[m.partition()] = max(ends.get(m.partition(), 0), m.offset() + 1)
        c = Consumer({"bootstrap.servers": self.broker.bootstrap, "group.id": "meterseal"})
        try:
            committed = c.committed([TopicPartition(topic, p) for p in ends], timeout=10)
            return all(tp.offset >= ends[tp.partition] for tp in committed)
        finally:
            c.close()


@contextlib.contextmanager
def running_rig(data_dir: Path, *, broker_port: int | None = None, **env: str):
    """Keystore, embedded broker (on ``broker_port``, else a free port) and one worker subprocess on ``data_dir``;
    stopped cleanly on exit."""
    if not Keystore.exists(data_dir):
        Keystore.init(data_dir, PASSPHRASE)
    broker = EmbeddedBroker(port=broker_port, log_path=data_dir / "broker.log").start()
    ensure_topics(broker.bootstrap, 4)
    environ = {**os.environ, "METERSEAL_DATA_DIR": str(data_dir), "METERSEAL_BROKER": broker.url,
               "METERSEAL_PASSPHRASE": PASSPHRASE, "METERSEAL_LOG_LEVEL": "info", **env}  # info: a failure's log says more
    rig = Rig(data_dir, broker, environ)
    try:
        yield rig
    finally:
        rig.stop_worker()
        broker.stop()
