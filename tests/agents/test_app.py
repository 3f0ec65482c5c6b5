"""The Faust app is built by a function, declares its topics and agents, and touches no broker doing so."""

from streams.keys.owner import OwnerKeyPair
from streams.pipeline import Pipeline
from streams.settings import Settings
from streams.store.segments import SegmentStore


def test_importing_agents_does_no_work():
    import agents.app as app_module

    assert not hasattr(app_module, "app")  # no module-level app


def test_build_app_declares_topics_table_and_agents(tmp_path):
    from agents.app import build_app

    settings = Settings.from_env({}, data_dir=tmp_path, partitions=3)
    pipeline = Pipeline(settings, bytes(32), OwnerKeyPair.generate().public_key, SegmentStore(tmp_path / "store"))
    app = build_app(settings, pipeline, broker="kafka://127.0.0.1:1")
    assert set(app.agents) >= {"seal_readings", "seal_bills", "store_bills", "store_dlq", "store_keys"}
    sources = {name: set(agent.channel.topics) for name, agent in app.agents.items()}
    assert sources["seal_readings"] == {"readings.raw"} and sources["store_keys"] == {"keys.deks"}
    assert "meter-state" in app.tables
    assert app.conf.broker_session_timeout <= 10  # joins the group in seconds, not ~30 s
