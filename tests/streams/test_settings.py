from pathlib import Path

import pytest

from streams.exceptions import ConfigError
from streams.settings import DEFAULT_REGIONS, Settings


def test_defaults():
    s = Settings.from_env({})
    assert s.broker is None and s.data_dir == Path("meterseal-data") and s.regions == DEFAULT_REGIONS
    assert {"north", "south", "east", "west", "central"} <= set(s.regions)


def test_env_then_flags():
    env = {"METERSEAL_BROKER": "kafka://k:9092", "METERSEAL_DATA_DIR": "/tmp/x", "METERSEAL_DEK_MAX_RECORDS": "5"}
    s = Settings.from_env(env, data_dir=Path("/tmp/y"), broker=None)
    assert (s.broker, s.data_dir, s.dek_max_records) == ("kafka://k:9092", Path("/tmp/y"), 5)


def test_bad_values_name_the_variable():
    with pytest.raises(ConfigError, match="METERSEAL_PARTITIONS"):
        Settings.from_env({"METERSEAL_PARTITIONS": "many"})
    with pytest.raises(ConfigError):
        Settings.from_env({"METERSEAL_PARTITIONS": "0"})


def test_passphrase_is_not_in_repr():
    assert "hunter2" not in repr(Settings.from_env({"METERSEAL_PASSPHRASE": "hunter2"}))


def test_environ_round_trips():
    s = Settings.from_env({"METERSEAL_REGIONS": "a,b", "METERSEAL_MAX_KWH": "5"})
    assert Settings.from_env(s.environ()) == s
