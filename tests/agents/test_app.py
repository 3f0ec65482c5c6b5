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


def test_a_failing_last_checkpoint_does_not_stop_the_shutdown(tmp_path, caplog):
    """The shutdown (and rebalance) signals never raise: an error there stops Faust half way and the worker hangs
    after SIGTERM (seen when the catalog stopped before a worker)."""
    import asyncio

    from agents.app import build_app
    from streams.exceptions import StoreError

    settings = Settings.from_env({}, data_dir=tmp_path, partitions=3)
    pipeline = Pipeline(settings, bytes(32), OwnerKeyPair.generate().public_key, SegmentStore(tmp_path / "store"))

    def catalog_gone(**kwargs):
        raise StoreError("cannot reach the Iceberg catalog")

    pipeline.checkpoint_due = catalog_gone
    app = build_app(settings, pipeline, broker="kafka://127.0.0.1:1")
    asyncio.run(app.on_before_shutdown.send())
    assert "could not sign a checkpoint at shutdown (StoreError: cannot reach the Iceberg catalog)" in caplog.text
