"""A bare Faust agent: the ceiling ``meterseal bench`` compares the worker with.

It reads ``readings.raw`` in the same batches as the seal agent, with the worker's own settings
(``agents.app``: timeouts, fetch wait, Tansu fixes) and does nothing else, so its rate is what Faust
itself costs per message on this broker and machine. ``--forward`` also sends every message on to
``bench.forward`` (one produce per message, as the seal agent does). It prints one line,
``bare: <messages> messages in <seconds> s, first at <epoch s>, last at <epoch s>`` (the first and last
batch taken, wall clock), and exits once it has read ``--count`` messages. It prints ``bare ready`` when it
has been assigned partitions, so a bench can produce while it reads (the worker's conditions).

    python -m agents.bare --broker kafka://127.0.0.1:9092 --count 20000
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import faust

from streams.ingest.broker import faust_url

from . import tansu


def build_bare_app(broker: str, count: int, *, forward: bool = False, partitions: int = 4) -> faust.App:
    tansu.install()
    app = faust.App(f"meterseal-bare-{os.getpid()}", broker=faust_url(broker), store="memory://", web_enabled=False,
                    datadir=tempfile.mkdtemp(prefix="meterseal-bare-"),  # not <app id>-data in the current directory
                    topic_partitions=partitions, topic_replication_factor=1, consumer_auto_offset_reset="earliest",
                    broker_session_timeout=6.0, broker_heartbeat_interval=1.0, broker_rebalance_timeout=6.0,
                    broker_commit_interval=1.0, producer_acks=-1, producer_linger=0.005, stream_wait_empty=False)
    raw = app.topic("readings.raw", key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    seen = {"n": 0, "first": 0.0, "first_epoch": 0.0}

    @app.agent(raw, name="bare")
    async def bare(stream):
        async for events in stream.take_events(500, within=0.02):
            if not seen["n"]:
                seen["first"], seen["first_epoch"] = time.perf_counter(), time.time()
            if forward:
                for event in events:
                    await app.producer.send("bench.forward", event.key, event.value, None, None, None)
            seen["n"] += len(events)
            if seen["n"] >= count:
                print(f"bare: {seen['n']} messages in {time.perf_counter() - seen['first']:.4f} s, "
                      f"first at {seen['first_epoch']:.4f}, last at {time.time():.4f}", flush=True)
                os._exit(0)  # the measurement is done; skip Faust's slow shutdown

    @app.on_partitions_assigned.connect
    async def on_assigned(sender, assigned, **kwargs) -> None:
        if assigned:
            print("bare ready", flush=True)

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--broker", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--forward", action="store_true")
    args = parser.parse_args(argv)
    app = build_bare_app(args.broker, args.count, forward=args.forward)
    worker = faust.Worker(app, loglevel="warn", quiet=True)
    worker.spinner = None
    worker.execute_from_commandline()


if __name__ == "__main__":
    main(sys.argv[1:])
