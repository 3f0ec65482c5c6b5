"""streams.ingest.broker against the embedded broker (a real Kafka-protocol broker: marked ``broker``)."""

import pytest

from streams.ingest.broker import EmbeddedBroker, check_partitions, ensure_topics
from streams.exceptions import ConfigError

pytestmark = pytest.mark.broker


def test_a_sealed_topic_with_fewer_partitions_than_its_raw_topic_stops_the_worker(tmp_path):
    broker = EmbeddedBroker(log_path=tmp_path / "broker.log").start()
    try:
        ensure_topics(broker.bootstrap, 4, ["readings.raw", "bills.raw", "bills.sealed"])
        ensure_topics(broker.bootstrap, 2, ["readings.sealed"])  # a cluster made by hand, wrongly
        with pytest.raises(ConfigError, match="readings.sealed has 2 partitions but readings.raw has 4"):
            check_partitions(broker.bootstrap)
        other = EmbeddedBroker(log_path=tmp_path / "broker2.log").start()
        try:
            ensure_topics(other.bootstrap, 4)  # as the worker makes them: every topic alike
            check_partitions(other.bootstrap)
        finally:
            other.stop()
    finally:
        broker.stop()
