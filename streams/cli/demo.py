"""``meterseal demo``: a broker, a worker, real and seed-format input, and proof it was all sealed.

The demo predicts what the worker must produce by running the same validation locally, then waits
until the store holds every expected record id and every expected dead letter, so it cannot report
success on a partial result.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from streams import capabilities
from streams.keys.subjects import SubjectKeyTable
from streams.ingest import sources
from streams.ingest.broker import BROKER_FILE, EmbeddedBroker, Producer, ensure_topics
from streams.exceptions import InvalidInput, MeterSealError
from streams.ingest.produce import encode_bill, encode_reading, produce
from streams.keys.keyring import Keyring
from streams.keys.keystore import Keystore
from streams.store.audit import audit_store
from streams.unseal import open_record
from streams.settings import Settings
from streams.cli.common import open_settings_store, passphrase_for
from streams.store.base import connect
from streams.crypto.tokens import BlindIndex
from streams.validate import Policy, check_bill, check_reading, decode_raw, next_state

console = Console(soft_wrap=True)

DEMO_ANALYST_RHO = 1.0  # the demo analyst's privacy budget (zCDP rho): some twenty questions at the page's default cost
DEMO_MIN_METERS = 1  # the demo console's region chart shows every cell: its meters each report at another time of week

# deliberately bad input, one per rule, so the dead-letter path is visible
BAD_READINGS = [
    b"this is not JSON",
    b'{"meter_id": "DEMO-BAD-1", "ts": "2024-01-01T00:00:00Z", "kwh": -3.5, "register_kwh": 10, "region": "north", "category": "Domestic"}',
    b'{"meter_id": "DEMO-BAD-2", "ts": "2024-01-01T00:00:00Z", "kwh": 1.0, "register_kwh": 10, "region": "atlantis", "category": "Domestic"}',
    b'{"meter_id": "DEMO-BAD-3", "ts": "2199-01-01T00:00:00Z", "kwh": 1.0, "register_kwh": 10, "region": "north", "category": "Domestic"}',
    b'{"meter_id": "DEMO-BAD-4", "ts": "2024-01-01T00:00:00Z", "kwh": "lots", "register_kwh": 10, "region": "north", "category": "Domestic"}',
]


def _expected_readings(messages: list[tuple[bytes, bytes]], index: BlindIndex, policy: Policy) -> tuple[set[str], int]:
    """Record ids the worker must seal and how many it must reject, by the worker's own rules."""
    ids, rejected, states = set(), 0, {}
    now = time.time()
    for _, value in messages:
        try:
            record = decode_raw(value, "reading")
            reading = check_reading(record, policy=policy, now=now, last=states.get(record.get("meter_id")))
        except InvalidInput:
            rejected += 1
            continue
        states[reading.meter_id] = next_state(states.get(reading.meter_id), reading)
        ids.add(index.record_id("reading", reading.meter_id, reading.ts))
    return ids, rejected


def _expected_bills(rows: list[dict], index: BlindIndex) -> tuple[set[str], int]:
    ids, rejected = set(), 0
    for row in rows:
        try:
            ids.add(index.record_id("bill", check_bill(row)["bill_no"]))
        except InvalidInput:
            rejected += 1
    return ids, rejected


def run_demo(settings: Settings, passphrase: str, *, csv_path: Path | None = None, uci_limit: int = 5_000,
             timeout: float = 150.0, console_port: int | None = None) -> int:
    """The demo; with ``console_port``, the broker, worker and console keep running until Ctrl-C."""
    t0 = time.monotonic()
    data_dir = Path(settings.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    if not Keystore.exists(data_dir):
        store = Keystore.init(data_dir, passphrase)
        for region in settings.regions:  # each region's Flower client opens its own region only (streams.keys.regions)
            store.add_region(passphrase, region)
        console.print(f"[green]created keystore[/] {data_dir / 'keystore.json'} with keys for regions "
                      f"{', '.join(settings.regions)} (export one with `meterseal keys region export REGION`)")
    keystore = Keystore.load(data_dir)
    keys = keystore.unlock(passphrase)  # the demo plays the data owner too, to show a record opening
    index = BlindIndex(keys.index_key)

    if csv_path is None:
        csv_path = sources.write_bills_csv(data_dir / "demo-bills.csv", sources.generated_bills(200))
        console.print(f"no CSV given: generated 200 seed-format bills at {csv_path}")
    bill_rows = list(sources.read_bills_csv(csv_path))
    uci = [(r["meter_id"].encode(), encode_reading(r)) for r in sources.uci_readings(meters=10, regions=settings.regions, limit=uci_limit)]
    # each run's bad messages differ (a dead letter's id covers its bytes), so a re-run shows its own
    run = f"demo-run-{int(time.time())}".encode()
    bad = [(b"DEMO-BAD", value.replace(b"DEMO-BAD", b"DEMO-BAD-" + run) if b"{" in value else value + b" " + run)
           for value in BAD_READINGS]
    readings = uci + bad
    want_readings, rejected_readings = _expected_readings(readings, index, Policy.from_settings(settings))
    want_bills, rejected_bills = _expected_bills(bill_rows, index)

    broker = EmbeddedBroker(log_path=data_dir / "broker.log").start()
    worker = None
    info_path = data_dir / BROKER_FILE
    try:
        info_path.write_text(json.dumps({"url": broker.url, "pid": broker.pid}))
        ensure_topics(broker.bootstrap, settings.partitions)
        console.print(f"[green]broker[/] Tansu (memory storage) on {broker.url}")
        env = {**os.environ, **settings.environ(), "METERSEAL_BROKER": broker.url, "METERSEAL_PASSPHRASE": passphrase}
        worker_log = open(data_dir / "worker.log", "ab")
        worker = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"], env=env, stdout=worker_log,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        console.print(f"[green]worker[/] pid {worker.pid}, log {data_dir / 'worker.log'}")
        started_ingest = time.time()

        producer = Producer(broker.bootstrap)
        produce(producer, "bills.raw", ((r["Meter No."].encode(), encode_bill(r)) for r in bill_rows),
                total=len(bill_rows), label=f"bills from {csv_path.name}")
        produce(producer, "readings.raw", iter(readings), total=len(readings), label="UCI readings + 5 bad ones")
        producer.close()

        counts = _wait(settings, want_readings, want_bills, rejected_readings + rejected_bills, started_ingest,
                       worker, timeout)
        if console_port is None:
            worker.terminate()  # a clean stop signs a checkpoint of every log's last leaves
            worker.wait(30)
        _report(settings, keys, index, counts, len(bill_rows), len(readings), time.monotonic() - t0)
        _share(settings, passphrase)
        console.print(f"[bold green]demo complete[/] in {time.monotonic() - t0:.1f} s — data in {settings.data_dir}")
        if console_port is not None:
            _console(console_settings(settings.replace(broker=broker.url)), passphrase, console_port,
                     customer_meters=[uci[0][0].decode(), bill_rows[0]["Meter No."]])
        return 0
    except MeterSealError as exc:
        console.print(f"[bold red]demo failed:[/] {exc}")
        if (data_dir / "worker.log").exists():
            console.print("last worker log lines:\n" + "\n".join((data_dir / "worker.log").read_text().splitlines()[-15:]))
        return 1
    finally:
        if worker and worker.poll() is None:
            worker.terminate()
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
        broker.stop()
        info_path.unlink(missing_ok=True)


def _wait(settings: Settings, want_readings: set[str], want_bills: set[str], want_dead: int, since: float,
          worker: subprocess.Popen, timeout: float) -> dict:
    total = len(want_readings) + len(want_bills) + want_dead
    store = open_settings_store(settings)
    deadline = time.monotonic() + timeout
    with Progress(TextColumn("waiting for the worker to seal and store"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task("", total=total)
        while True:
            con = connect(store)  # a fresh snapshot each time (either backend)
            got_r = {r for (r,) in con.execute("SELECT record_id FROM readings").fetchall()} & want_readings
            got_b = {r for (r,) in con.execute("SELECT record_id FROM bills").fetchall()} & want_bills
            dead = con.execute("SELECT count(*) FROM dlq WHERE received_at_ms >= ?", [int(since * 1000)]).fetchone()[0]
            con.close()
            done = len(got_r) + len(got_b) + min(dead, want_dead)
            bar.update(task, completed=done)
            if done == total:
                return {"readings": len(got_r), "bills": len(got_b), "dead": dead}
            if worker.poll() is not None:
                raise MeterSealError(f"the worker exited with code {worker.returncode}")
            if time.monotonic() > deadline:
                raise MeterSealError(f"timed out after {timeout:.0f} s with {done} of {total} records stored")
            time.sleep(0.5)


def _report(settings: Settings, keys, index: BlindIndex, counts: dict, n_bills: int, n_readings: int, elapsed: float) -> None:
    store = open_settings_store(settings)
    con = connect(store)
    summary = Table(title="sealed into the store", show_lines=False)
    for col in ("input", "produced", "sealed", "dead letters"):
        summary.add_column(col, justify="right" if col != "input" else "left")
    summary.add_row("bills.raw", str(n_bills), str(counts["bills"]), str(n_bills - counts["bills"]))
    summary.add_row("readings.raw", str(n_readings), str(counts["readings"]), str(n_readings - counts["readings"]))
    console.print(summary)

    dlq = Table(title=f"dead letters (dlq): reason in clear, original bytes sealed — {counts['dead']} this run")
    for col in ("source", "rule", "reason", "sealed bytes"):
        dlq.add_column(col)
    for topic, part, offset, rule, reason, size in con.execute(
            "SELECT source_topic, source_partition, source_offset, rule, reason, octet_length(envelope) FROM dlq "
            "ORDER BY received_at_ms DESC LIMIT 10").fetchall():
        dlq.add_row(f"{topic}/{part}@{offset}", rule, reason, str(size))
    console.print(dlq)

    row = con.execute("SELECT * FROM bills ORDER BY sealed_at_ms LIMIT 1").fetchall()
    cols = [d[0] for d in con.description]
    record = dict(zip(cols, row[0]))
    shown = {k: (v.hex()[:48] + f"… ({len(v)} bytes)" if isinstance(v, bytes) else v) for k, v in record.items()}
    console.print("[bold]one sealed bill, as the store holds it[/] (no name, address, phone, account or meter number):")
    console.print_json(json.dumps(shown))
    plain = open_record(record, Keyring(store, keys.unwrappers(), index_key=keys.index_key), index)
    console.print(f"opened with the owner's private key: bill {plain['bill_no']} of {plain['date']}, "
                  f"{plain['billed_unit']} units, category {plain['category']} (AEAD verified, record id checked)")
    console.print(f"wrapped DEKs in the store: {len(store.dek_ids())}; customers' subject keys: "
                  f"{len(SubjectKeyTable(store, keys.index_key).tokens())}; "
                  f"store totals: {con.execute('SELECT count(*) FROM readings').fetchone()[0]} readings, "
                  f"{con.execute('SELECT count(*) FROM bills').fetchone()[0]} bills, "
                  f"{con.execute('SELECT count(*) FROM dlq').fetchone()[0]} dead letters")
    con.close()
    results = audit_store(store, Keystore.load(settings.data_dir).ledger_verifier, registry=capabilities.registry())
    problems = [f for _, findings in results for f in findings]
    console.print(f"ledger: {len(results)} Merkle logs, {sum(s.leaves for s, _ in results)} leaves, "
                  f"{sum(s.checkpoints for s, _ in results)} signed checkpoints — "
                  + ("[green]verified[/]" if not problems else f"[red]{problems[0]}[/]")
                  + " (`meterseal ledger verify`, `meterseal ledger prove RECORD_ID`)")
    log = Path(settings.data_dir) / "worker.log"
    for line in (log.read_text(errors="replace").splitlines() if log.exists() else [])[::-1]:
        if "first record sealed" in line:
            console.print("worker: " + line.split("] ")[-1].strip())
            break



def console_settings(settings: Settings) -> Settings:
    """The demo console's settings: its ten meters each report at another time of the week, so no region-hour
    has two of them and the default suppression (cells of fewer than 10 meters) would hide the whole region
    chart; the demo shows every cell unless METERSEAL_ROLLUP_MIN_METERS says otherwise."""
    if os.environ.get("METERSEAL_ROLLUP_MIN_METERS"):
        return settings
    return settings.replace(rollup_min_meters=DEMO_MIN_METERS)


def console_accounts(settings: Settings, passphrase: str, *, customer_meters: list[str]) -> dict[str, tuple[str, str]]:
    """What `demo --console` prepares before serving: one ``demo-<role>`` account per role (random passwords,
    returned once) and a privacy budget for the demo analyst, so every role's first screen has work to do."""
    from streams.console.server import demo_accounts
    from streams.privacy import set_budget

    accounts = demo_accounts(settings.data_dir, customer_meters=customer_meters)
    set_budget(settings.store_dir, signer=Keystore.load(settings.data_dir).ledger_signer(passphrase),
               rho=DEMO_ANALYST_RHO, analyst=accounts["analyst"][0])  # a ledgered event, as `dp budget set` writes
    return accounts


def _console(settings: Settings, passphrase: str, port: int, *, customer_meters: list[str]) -> None:
    """One login per role (random passwords, printed once), then the console until Ctrl-C."""
    from streams.console.server import serve

    accounts = console_accounts(settings, passphrase, customer_meters=customer_meters)
    table = Table(title=f"console logins (printed once; the customer owns meters {', '.join(customer_meters)})")
    for col in ("role", "user name", "password"):
        table.add_column(col)
    for role, (name, password) in accounts.items():
        table.add_row(role, name, password)
    console.print(table)
    console.print(f"{accounts['analyst'][0]} may spend a privacy budget of rho {DEMO_ANALYST_RHO:g} "
                  "(`meterseal dp budget set --analyst NAME --rho R` changes it)")
    console.print(f"the region chart shows cells of {settings.rollup_min_meters}+ meters (METERSEAL_ROLLUP_MIN_METERS, "
                  "10 unless set: the demo's meters each report at another time of the week)")
    console.print("broker, worker and console keep running: Ctrl-C stops them all")
    try:
        serve(settings, passphrase, host="127.0.0.1", port=port, registry=capabilities.registry(),
              ready=lambda url: console.print(f"[bold green]console[/] {url}"))
    except KeyboardInterrupt:
        pass


@click.command()
@click.argument("csv_path", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--uci-limit", type=int, default=5_000, show_default=True, help="Readings of the UCI stream to replay.")
@click.option("--timeout", type=float, default=150.0, show_default=True, help="Seconds to wait for everything to be sealed.")
@click.option("--console", "with_console", is_flag=True,
              help="Then leave the broker, worker and web console running, and print one login per role.")
@click.option("--console-port", type=int, default=8800, show_default=True)
@click.pass_obj
def demo(settings: Settings, csv_path: Path | None, uci_limit: int, timeout: float, with_console: bool,
         console_port: int) -> None:
    """Start a broker and a worker, ingest bills (CSV_PATH, or generated ones) and UCI readings, show the result."""
    sys.exit(run_demo(settings, passphrase_for(settings, confirm=not Keystore.exists(settings.data_dir)),
                      csv_path=csv_path, uci_limit=uci_limit, timeout=timeout,
                      console_port=console_port if with_console else None))



def _share(settings: Settings, passphrase: str) -> None:
    """The demo's last step: a recipient's key pair, one grant (a meter's first day of readings), its bundle
    exported and opened as the recipient would, trusting only the post-quantum checkpoint key."""
    import datetime as dt

    from streams.share.bundle import export_bundle, open_bundle
    from streams.share.grants import create_grant
    from streams.share.parties import PartyKey, add_party
    from streams.store.query import Query, Reader

    keystore = Keystore.load(settings.data_dir)
    keys, signer = keystore.unlock(passphrase), keystore.ledger_signer(passphrase)
    store = open_settings_store(settings)
    reader = Reader(store, keys)
    hits = reader.search(Query(meter="UCI-00000"), kinds=["readings"])
    if not hits:
        return
    day = dt.date.fromisoformat(reader.open(hits[0])["ts"][:10])
    recipient = PartyKey.generate()  # made by the recipient; only its public half reaches the owner
    party = add_party(store, "demo-recipient", recipient.public_key, replace=True)
    grant = create_grant(store, signer=signer, index_key=keys.index_key, party=party,
                         meters=["UCI-00000"], start=day, end=day, purpose="demo: one meter, one day")
    from streams.exceptions import ShareError

    deadline = time.monotonic() + 20  # a running worker (--console) signs its next checkpoint within 10 s
    while True:
        started = time.perf_counter()
        try:
            blob, summary = export_bundle(store, grant.grant_id, owner=keys, signer=signer)
            break
        except ShareError as exc:
            if "not under a signed checkpoint" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(1.0)
    path = Path(settings.data_dir) / "demo-share.json"
    path.write_bytes(blob)
    export_s, started = time.perf_counter() - started, time.perf_counter()
    opened = open_bundle(blob, party=recipient, verifiers=[keystore.ledger_pq_verifier or keystore.ledger_verifier])
    open_s = time.perf_counter() - started
    console.print(f"[bold]sharing[/]: grant {grant.grant_id} to {party.name} ({grant.scope_text()}); bundle {path} "
                  f"{summary['records']} records, {len(blob):,} bytes, exported in {export_s:.2f} s")
    first = opened.records[0]
    console.print(f"opened by the recipient in {open_s:.2f} s with its party key alone, checkpoints checked with "
                  f"{', '.join(opened.checked_keys)}: {len(opened.records)} records verified, e.g. {first['ts']} "
                  f"{first['kwh']} kWh (record {first['record_id'][:12]}…, leaf {first['leaf_index']} of {first['log']})")
