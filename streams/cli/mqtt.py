"""`meterseal bridge mqtt`, `meterseal simulate meters` and `meterseal mqtt pki|broker`: from the meter, over MQTT."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import click

from streams.cli.common import console
from streams.settings import Settings


@click.group("bridge")
def bridge_group() -> None:
    """Bridges from the protocols meters speak into readings.raw."""


@bridge_group.command("mqtt")
@click.option("--url", help="mqtt://HOST:PORT or mqtts://HOST:PORT. [env METERSEAL_MQTT_URL]")
@click.option("--topic", help="Topic filter, one '+' level naming the meter. [env METERSEAL_MQTT_TOPIC; default "
              "meters/+/readings]")
@click.option("--share-group", help="Join this MQTT 5 shared subscription (bridges share the load). "
              "[env METERSEAL_MQTT_SHARE_GROUP]")
@click.option("--client-id", help="MQTT client id = the persistent session's name; unique per bridge. "
              "[env METERSEAL_MQTT_CLIENT_ID; default meterseal-bridge-<host>]")
@click.option("--ca", help="CA certificate of the broker (mqtts). [env METERSEAL_MQTT_CA]")
@click.option("--cert", help="The bridge's client certificate. [env METERSEAL_MQTT_CERT]")
@click.option("--key", help="Its private key. [env METERSEAL_MQTT_KEY]")
@click.option("--metrics-port", type=int, help="Serve Prometheus metrics on 127.0.0.1:PORT/metrics. "
              "[env METERSEAL_METRICS_PORT]")
@click.pass_obj
def bridge_mqtt(settings: Settings, url, topic, share_group, client_id, ca, cert, key, metrics_port) -> None:
    """Subscribe with QoS 1 and a persistent session; produce each reading to readings.raw keyed by its meter
    (acks=all); acknowledge each MQTT message only once Kafka has it. Runs until SIGTERM/Ctrl-C."""
    from streams.ingest.broker import resolve
    from streams.mqtt.bridge import Bridge, serve_metrics

    settings = settings.replace(**{k: v for k, v in dict(
        mqtt_url=url, mqtt_topic=topic, mqtt_share_group=share_group, mqtt_client_id=client_id, mqtt_ca=ca,
        mqtt_cert=cert, mqtt_key=key, metrics_port=metrics_port).items() if v is not None})
    bridge = Bridge(settings, bootstrap=resolve(settings.broker, settings.data_dir))
    if settings.metrics_port:
        serve_metrics(settings.metrics_port, bridge)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    console.print(f"bridge {bridge.client_id}: {settings.mqtt_url} {bridge.subscription} -> readings.raw "
                  f"at {bridge.bootstrap}"
                  + (f"; metrics on 127.0.0.1:{settings.metrics_port}" if settings.metrics_port else ""))
    bridge.run(stop)
    console.print(f"bridge stopped: {json.dumps(bridge.stats())}")


@click.group("simulate")
def simulate_group() -> None:
    """Simulated devices for trials and benchmarks."""


@simulate_group.command("meters")
@click.option("--mqtt", "url", help="mqtt://HOST:PORT or mqtts://HOST:PORT. [env METERSEAL_MQTT_URL]")
@click.option("--meters", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--readings", type=click.IntRange(min=0), default=10_000, show_default=True, help="Readings in total.")
@click.option("--rate", type=float, help="Readings per second, all meters together (default: as fast as it goes).")
@click.option("--sign", is_flag=True, help="Send each reading in the signed envelope under its meter's key.")
@click.option("--keys", "keys_dir", type=click.Path(file_okay=False, path_type=Path),
              help="The meters' signing keys (`device keygen --meters N --out DIR`). [default <data-dir>/device-keys]")
@click.option("--certs", type=click.Path(file_okay=False, path_type=Path),
              help="The PKI of `mqtt pki` (CA and per-meter client certificates), for mqtts. "
                   "[default <data-dir>/mqtt-pki]")
@click.option("--anomaly-rate", type=float, default=0.0, show_default=True,
              help="Fraction of readings with a labelled injected anomaly.")
@click.option("--interval", type=int, default=15, show_default=True, help="Minutes between a meter's readings.")
@click.option("--seed", type=int, default=7, show_default=True)
@click.pass_obj
def simulate_meters(settings: Settings, url, meters, readings, rate, sign, keys_dir, certs, anomaly_rate, interval,
                    seed) -> None:
    """Meters publishing over MQTT, one client (and certificate) per meter, QoS 1, like real meters."""
    from streams.mqtt.bridge import parse_url
    from streams.mqtt.fleet import run_fleet
    from streams.mqtt.pki import Pki

    settings = settings.replace(mqtt_url=url) if url else settings
    pki = None
    if parse_url(settings.mqtt_url).tls:
        pki = Pki(certs or settings.data_dir / "mqtt-pki")
        settings = settings.replace(mqtt_ca=str(pki.ca))
    keys = (keys_dir or settings.data_dir / "device-keys") if sign else None
    result = run_fleet(settings, meters=meters, readings=readings, rate=rate, sign_keys=keys, pki=pki,
                       anomaly_rate=anomaly_rate, interval_min=interval, seed=seed,
                       progress=lambda n: console.print(f"{n} published", end="\r"))
    click.echo(json.dumps(result, indent=2))


@click.group("mqtt")
def mqtt_group() -> None:
    """An MQTT broker for a one-machine trial: its PKI and Debian's Mosquitto on loopback."""


@mqtt_group.command("pki")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), help="[default <data-dir>/mqtt-pki]")
@click.option("--meters", type=click.IntRange(min=0), default=50, show_default=True,
              help="Client certificates for the simulator's first N meters.")
@click.option("--host", "hosts", multiple=True, help="Another DNS name of the broker (e.g. mosquitto in compose).")
@click.pass_obj
def mqtt_pki(settings: Settings, out: Path | None, meters: int, hosts: tuple[str, ...]) -> None:
    """A CA, the broker's and the bridge's certificates, and one client certificate per meter (CN = meter id)."""
    from streams.mqtt.fleet import fleet_meters
    from streams.mqtt.pki import make_pki

    pki = make_pki(out or settings.data_dir / "mqtt-pki", fleet_meters(meters) if meters else [], hosts=hosts)
    console.print(f"wrote {pki.directory}: ca.crt, server.crt, bridge.crt and {meters} meter certificate(s) "
                  "under meters/")


@mqtt_group.command("broker")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              help="Its config, persistence and log. [default <data-dir>/mosquitto]")
@click.option("--port", type=int, help="Port on 127.0.0.1 (default: a free one).")
@click.option("--certs", type=click.Path(file_okay=False, path_type=Path),
              help="The PKI of `mqtt pki`. [default <data-dir>/mqtt-pki]")
@click.option("--plain", is_flag=True, help="No TLS, no ACL: anyone on this machine may publish as any meter.")
@click.pass_obj
def mqtt_broker(settings: Settings, directory: Path | None, port: int | None, certs: Path | None, plain: bool) -> None:
    """Run Debian's Mosquitto on 127.0.0.1 (TLS client certificates, CN as user name, ACL meters/%u/#) until Ctrl-C."""
    from streams.mqtt.mosquitto import Mosquitto
    from streams.mqtt.pki import Pki

    pki = None if plain else Pki(certs or settings.data_dir / "mqtt-pki")
    if pki is not None and not pki.ca.exists():
        raise click.ClickException(f"no CA in {pki.directory}: run `meterseal mqtt pki` first (or --plain)")
    broker = Mosquitto(directory or settings.data_dir / "mosquitto", pki=pki, port=port)
    try:
        broker.start()
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(broker.url)
    console.print(f"mosquitto on {broker.url} (log {broker.log_path}). Ctrl-C to stop.")
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    try:
        while not stopping.is_set() and broker._proc.poll() is None:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        broker.stop()
