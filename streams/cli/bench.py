"""`meterseal bench`: benchmarks that print ratios against a baseline measured in the same run."""

from __future__ import annotations

import json
import time

import click

from streams.cli.common import console

from streams.cli.common import print_result


@click.group(invoke_without_command=True)
@click.option("--quick", is_flag=True, help="20k readings and latency at 1k/s (a few minutes) instead of 100k and 5k/s.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_context
def bench(ctx: click.Context, quick: bool, fmt: str) -> None:
    """Benchmarks that print ratios against a baseline measured in the same run.

    Without a subcommand: the end-to-end figures in one run on fresh embedded brokers — readings/s with 1
    and 2 workers, a bare Faust agent's ceiling, the prototype's per-record RSA + AES-CFB on the same
    readings, and ingest->sealed / ingest->alert latency — with the ratios between them. The
    subcommands measure one part each.
    """
    if ctx.invoked_subcommand is not None:
        return
    from streams.bench.pipeline import bench_all

    with console.status("benchmarking") as status:
        result = bench_all(quick=quick, progress=lambda step: (status.update(step), console.log(step)))
    print_result(result, fmt)


_bench_fmt = click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)



@bench.command("seal")
@click.option("--records", type=int, default=20_000, show_default=True)
@_bench_fmt
def bench_seal_cmd(records: int, fmt: str) -> None:
    """Seal/open rate: envelope v3 (subject keys, what workers write) and v2 (per-record keys) vs v1 in the same
    run, and the prototype's RSA-OAEP + AES-CFB."""
    from streams.bench.micro import bench_seal

    print_result(bench_seal(records, max(200, records // 20)), fmt)


@bench.command("kms")
@click.option("--readings", type=int, default=200_000, show_default=True, help="Readings in the built store.")
@click.option("--dek-records", type=int, default=84, show_default=True,
              help="Readings per DEK in the built store (84: about one DEK per hour of readings, as workers rotate).")
@click.option("--unwraps", type=int, default=200, show_default=True, help="Stored DEKs unwrapped for the latency.")
@click.option("--seal-readings", type=int, default=100_000, show_default=True)
@click.option("--providers", default="local,openbao,pkcs11", show_default=True)
@_bench_fmt
def bench_kms_cmd(readings: int, dek_records: int, unwraps: int, seal_readings: int, providers: str, fmt: str) -> None:
    """Key services beside the passphrase keystore: DEK unwrap latency, a cold-cache 42-day range query, the
    worker's seal rate with each provider's new DEKs (starts OpenBao's dev server and a SoftHSM2 token itself)."""
    from streams.bench.kms import bench_kms

    result = bench_kms(readings=readings, dek_records=dek_records, unwraps=unwraps, seal_readings=seal_readings,
                       providers=tuple(p.strip() for p in providers.split(",") if p.strip()), progress=console.log)
    if fmt == "json":
        click.echo(json.dumps(result, indent=2))
    else:
        for name in result["providers"]:
            r = result["range_42_days"][name]
            seal = result["seal"]
            click.echo(f"{name:>8}  unwrap {result['unwrap_ms'][name]['median']:>7.3f} ms (p99 "
                       f"{result['unwrap_ms'][name]['p99']:.3f})  42-day range cold {r['cold_ms']:>8.1f} ms "
                       f"({r['hits']} hits, {r['deks']} DEKs; x{r['cold_vs_local']} local) warm {r['warm_ms']:.1f} ms  "
                       f"seal {seal['rotation_100000']['readings_per_s'][name]:>7}/s "
                       f"(rotation 1,000: {seal['rotation_1000']['readings_per_s'][name]}/s)")
        for name, why in result["skipped"].items():
            click.echo(f"{name:>8}  skipped: {why}")


@bench.command("erase")
@click.option("--readings", type=int, default=10_000_000, show_default=True)
@click.option("--meters", type=int, default=1000, show_default=True)
@click.option("--s3", "s3", is_flag=True, help="On Iceberg + S3 (the AWS_* and METERSEAL_CATALOG servers) instead of local.")
@click.option("--trial", is_flag=True, help="With --s3: start PostgreSQL and SeaweedFS on 127.0.0.1 for the run.")
@_bench_fmt
def bench_erase_cmd(readings: int, meters: int, s3: bool, trial: bool, fmt: str) -> None:
    """Erase one meter from a store of READINGS sealed readings (built by the worker's code): time per stage,
    segment bytes rewritten, and the ledger audit afterwards. Goal: under 60 s locally at 10M."""
    from streams.bench.erase import bench_erase

    print_result(bench_erase(readings, meters, s3=s3, trial=trial, progress=console.log), fmt)


@bench.command("mqtt")
@click.option("--readings", type=int, default=20_000, show_default=True, help="Signed readings in each backlog.")
@click.option("--meters", type=int, default=200, show_default=True, help="Simulated meters, each its own TLS client.")
@click.option("--rounds", type=int, default=2, show_default=True, help="Bare/bridge rounds, alternating (best counts).")
@click.option("--latency-s", type=float, default=20.0, show_default=True, help="Seconds of publishing for the latency.")
@_bench_fmt
def bench_mqtt_cmd(readings: int, meters: int, rounds: int, latency_s: float, fmt: str) -> None:
    """The MQTT bridge beside a bare subscriber on one Mosquitto; publish->sealed p99 at 80 % of the bridge's rate;
    device signature verification per reading (ES256, Ed25519). Needs Debian's mosquitto."""
    import signal
    import sys

    from streams.bench.mqtt import bench_mqtt

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stopped: its brokers and processes stop too
    with console.status("benchmarking") as status:
        result = bench_mqtt(readings, meters, rounds=rounds, latency_s=latency_s,
                            progress=lambda step: (status.update(step), console.log(step)))
    print_result(result, fmt)


@bench.command("detect")
@click.option("--readings", type=int, default=40_000, show_default=True)
@click.option("--meters", type=int, default=500, show_default=True)
@_bench_fmt
def bench_detect_cmd(readings: int, meters: int, fmt: str) -> None:
    """Anomaly detection as the seal agent runs it (sealed profiles opened and written back), CPU µs a reading."""
    from streams.bench.micro import bench_detect

    print_result(bench_detect(readings, meters), fmt)


@bench.command("forecaster")
@click.option("--meters", type=int, default=10, show_default=True)
@click.option("--days", type=int, default=60, show_default=True)
@click.option("--epochs", type=int, default=10, show_default=True)
@click.option("--seeds", type=int, default=3, show_default=True, help="Training seeds per variant (MAE is their mean).")
@_bench_fmt
def bench_forecaster_cmd(meters: int, days: int, epochs: int, seeds: int, fmt: str) -> None:
    """Forecaster variants (interval, lookback, parts of the last interval, loss) vs persistence on the same
    held-out UCI windows."""
    from streams.bench.fl import bench_forecaster

    result = bench_forecaster(meters=meters, days=days, epochs=epochs, seeds=seeds, progress=console.log)
    if fmt == "json":
        click.echo(json.dumps(result, indent=2))
    else:
        for row in result["variants"]:
            last = (f"  last part {row['last_part_mae_kwh']:.4f} ({row['better_than_last_part_pct']:+.1f} %)"
                    if row["recent_parts"] else "")
            click.echo(f"{row['interval_min']:>4} min  lookback {row['lookback']:>3}  parts {row['recent_parts']:>2}  "
                       f"{row['loss']:>3}  MAE {row['mae_kwh']:.4f}  persistence {row['persistence_mae_kwh']:.4f}  "
                       f"{row['better_than_persistence_pct']:+.1f} % (seeds {row['seed_range_pct'][0]:+.1f}.."
                       f"{row['seed_range_pct'][1]:+.1f}){last}")


@bench.command("fl")
@click.option("--meters", type=int, default=10, show_default=True, help="UCI meters in the store (2 per region).")
@click.option("--days", type=int, default=60, show_default=True, help="Days of minute readings per meter.")
@click.option("--rounds", type=int, default=5, show_default=True)
@click.option("--epochs", type=int, default=2, show_default=True, help="Local epochs per round.")
@_bench_fmt
def bench_fl_cmd(meters: int, days: int, rounds: int, epochs: int, fmt: str) -> None:
    """The federated forecaster on a sealed UCI store (built without a broker), FedAvg and FedProx, against
    persistence, local-only and centralized training measured in the same run."""
    from streams.bench.fl import bench_federated

    result = bench_federated(meters=meters, days=days, rounds=rounds, epochs=epochs, progress=console.log)
    if fmt == "json":
        click.echo(json.dumps(result, indent=2))
        return
    click.echo(f"{result['readings']:,} readings sealed into the store in {result['build_s']} s; "
               f"{rounds} rounds x {epochs} local epochs, hourly forecasts")
    click.echo(f"{'':>22} {'MAE':>8} {'RMSE':>8} {'R²':>7}")
    for strategy, run in result["runs"].items():
        for h in run["rounds"]:
            click.echo(f"{strategy + ' round ' + str(h['round']):>22} {h['mae']:8.4f} {h['rmse']:8.4f} {h['r2']:7.3f}")
        for name, m in run["baselines"].items():
            click.echo(f"{'  ' + name:>22} {m['mae']:8.4f} {m['rmse']:8.4f} {m['r2']:7.3f}")
        click.echo(f"{strategy}: {run['better_than_persistence_pct']:+.1f} % better than persistence, "
                   f"{run['above_centralized_pct']:+.1f} % above centralized")


@bench.command("ledger")
@click.option("--leaves", type=int, default=1_000_000, show_default=True)
@_bench_fmt
def bench_ledger_cmd(leaves: int, fmt: str) -> None:
    """Ledger append rate vs a hash chain, and the time of a full audit of a log of that many leaves."""
    from streams.bench.micro import bench_ledger

    print_result(bench_ledger(leaves), fmt)


@bench.command("store")
@click.option("--readings", type=int, default=1_000_000, show_default=True, help="Sealed readings to build (10000000 for the issue's figure).")
@click.option("--s3", "s3", is_flag=True, help="Compare with Iceberg on S3 (the AWS_* and METERSEAL_CATALOG servers): "
              "queries per partition spec, unseal, append with 1-3 writer processes.")
@click.option("--trial", is_flag=True, help="With --s3: start PostgreSQL and SeaweedFS on 127.0.0.1 for the run.")
@click.option("--append-rows", type=int, default=60_000, show_default=True, help="With --s3: rows each append run writes.")
@click.option("--compaction", is_flag=True, help="With --s3: only the compaction figures (--readings rows in "
              "500-row commits, queries before and after `meterseal store compact`).")
@click.option("--expiry", is_flag=True, help="With --s3: only the snapshot-expiry figures (commit time as snapshots pile "
              "up, with and without `meterseal store expire`, in --commits commits of 10 rows each).")
@click.option("--commits", type=int, default=600, show_default=True, help="With --expiry: commits to each table.")
@click.option("--trial-port", type=int, default=15420, show_default=True,
              help="With --trial: SeaweedFS uses this port and the next 15, PostgreSQL the one after.")
@click.option("--specs", default="day+bucket,month+bucket,day,none", show_default=True,
              help="With --s3: Iceberg partition specs to compare (day, month, bucketN joined by '+', or none).")
@_bench_fmt
def bench_store_cmd(readings: int, s3: bool, trial: bool, append_rows: int, compaction: bool, expiry: bool,
                    commits: int, trial_port: int, specs: str, fmt: str) -> None:
    """Range-query latency and unseal throughput over a store built directly, vs the prototype's per-record RSA."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from streams.bench.store import bench_store

    if s3 and expiry:
        from streams.bench.objstore import bench_expiry

        print_result(bench_expiry(commits, trial=trial, trial_port=trial_port,
                                  progress=lambda text: console.print(f"{time.strftime('%H:%M:%S')} {text}")), fmt)
        return
    if s3 and compaction:
        from streams.bench.objstore import bench_compaction

        print_result(bench_compaction(readings, trial=trial, trial_port=trial_port,
                                      progress=lambda text: console.print(f"{time.strftime('%H:%M:%S')} {text}")), fmt)
        return
    if s3:
        from streams.bench.objstore import bench_objstore

        print_result(bench_objstore(readings, trial=trial, append_rows=append_rows, specs=tuple(specs.split(",")),
                                    trial_port=trial_port,
                                    progress=lambda text: console.print(f"{time.strftime('%H:%M:%S')} {text}")), fmt)
        return

    with Progress(TextColumn("sealing readings into a bench store"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=console) as bar:
        task = bar.add_task("", total=readings)
        result = bench_store(readings, progress=lambda k: bar.advance(task, k))
    print_result(result, fmt)


@bench.command("pipeline")
@click.option("--readings", type=int, default=20_000, show_default=True)
@click.option("--workers", type=click.IntRange(1, 8), default=1, show_default=True)
@click.option("--batch", type=click.IntRange(min=0), default=0, show_default=True,
              help="Readings per message (head-end batches keyed by collector id); 0: one a message.")
@_bench_fmt
def bench_pipeline_cmd(readings: int, workers: int, batch: int, fmt: str) -> None:
    """End-to-end readings/s through real workers on the embedded broker."""
    from streams.bench.pipeline import bench_pipeline

    print_result(bench_pipeline(readings, workers=workers, batch=batch), fmt)


@bench.command("replay")
@click.option("--workers", type=click.IntRange(1, 8), default=2, show_default=True)
@click.option("--limit", type=int, default=None, help="Only the first N readings (default: all 2,075,259).")
@_bench_fmt
def bench_replay_cmd(workers: int, limit: int | None, fmt: str) -> None:
    """The whole UCI data set through real workers: wall time, rate, store size, ledger-verify time."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from streams.bench.pipeline import bench_replay
    from streams.ingest.sources import UCI_ROWS

    with Progress(TextColumn("readings stored"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console) as bar:
        task = bar.add_task("", total=min(limit or UCI_ROWS, UCI_ROWS))
        result = bench_replay(workers=workers, limit=limit, progress=lambda k: bar.advance(task, k))
    print_result(result, fmt)


@bench.command("latency")
@click.option("--readings", type=int, default=30_000, show_default=True)
@click.option("--rate", type=float, default=5000.0, show_default=True, help="Readings per second produced.")
@click.option("--workers", type=click.IntRange(1, 8), default=1, show_default=True)
@_bench_fmt
def bench_latency_cmd(readings: int, rate: float, workers: int, fmt: str) -> None:
    """Ingest->sealed and ingest->alert latency (p50/p99) through real workers, readings produced at a fixed rate."""
    from streams.bench.pipeline import bench_latency

    print_result(bench_latency(readings, rate=rate, workers=workers), fmt)




@bench.command("share")
@click.option("--meters", type=int, default=2, show_default=True, help="Fleet size in the store.")
@click.option("--days", type=int, default=30, show_default=True, help="Days per meter; the bundle is one meter's.")
@click.option("--interval-min", type=int, default=1, show_default=True, help="Reading interval (UCI is 1-minute).")
@_bench_fmt
def bench_share_cmd(meters: int, days: int, interval_min: int, fmt: str) -> None:
    """Size and open time of a one-meter, one-month share bundle (real UCI data, the worker's sealing path)."""
    from streams.bench.share import bench_share

    print_result(bench_share(meters=meters, days=days, interval_min=interval_min), fmt)


@bench.command("connect")
@click.option("--readings", type=int, default=35_040, show_default=True, help="15-minute readings of one meter.")
@click.option("--token-requests", type=int, default=200, show_default=True, help="Refresh-token grants timed.")
@click.option("--runs", type=int, default=3, show_default=True, help="Feed and export runs (median reported).")
@_bench_fmt
def bench_connect_cmd(readings: int, token_requests: int, runs: int, fmt: str) -> None:
    """Connect My Data: token endpoint requests/s, and Batch/Subscription of one meter-year of 15-minute readings
    beside `export espi` of the same data (same run; goal: the API within 1.5x)."""
    from streams.bench.connect import bench_connect

    print_result(bench_connect(readings=readings, token_requests=token_requests, feed_runs=runs), fmt)


@bench.command("console")
@click.option("--viewers", type=int, default=200, show_default=True, help="Concurrent SSE viewers of the live alerts.")
@click.option("--alerts", type=int, default=20, show_default=True, help="Alerts produced on the broker, one per --gap.")
@click.option("--gap", type=float, default=0.25, show_default=True, help="Seconds between alerts.")
@click.option("--requests", type=int, default=50, show_default=True, help="Requests per API endpoint.")
@click.option("--port", type=int, help="Console port (default: a free one).")
@click.option("--broker-port", type=int, help="Embedded broker port (default: a free one).")
@_bench_fmt
@click.pass_obj
def bench_console_cmd(settings, viewers: int, alerts: int, gap: float, requests: int, port: int | None,
                      broker_port: int | None, fmt: str) -> None:
    """The console: live-alert fan-out to --viewers SSE streams vs 1 viewer, and API p50/p95 on the store in
    --data-dir (e.g. the demo's) vs /healthz. The console runs in its own process on its own embedded broker."""
    from streams.bench.console import bench_console
    from streams.cli.common import passphrase_for

    result = bench_console(settings.data_dir, passphrase_for(settings), viewers=viewers, alerts=alerts, gap_s=gap,
                           requests=requests, port=port, broker_port=broker_port)
    if fmt == "json":
        click.echo(json.dumps(result, indent=2))
        return
    for name in ("sse_baseline_1_viewer", "sse_fanout"):
        click.echo(f"{name}: " + ", ".join(f"{k} {v}" for k, v in result[name].items()))
    click.echo(f"fan-out p95 / 1-viewer p95: {result['p95_ratio_vs_1_viewer']}")
    for endpoint, figures in result["api"].items():
        click.echo(f"{endpoint:<44} p50 {figures['p50_ms']:>7} ms  p95 {figures['p95_ms']:>7} ms  "
                   f"({figures['p95_vs_healthz']}x /healthz)")


@bench.command("privacy")
@click.option("--quick", is_flag=True, help="Fleets of 100 and 1,000 only, 10k billing customers, 2 rounds.")
@click.option("--sealed-max", type=int, default=1000, show_default=True,
              help="Fleets up to this size are sealed and opened; larger ones are aggregated in memory.")
@_bench_fmt
def bench_privacy_cmd(quick: bool, sealed_max: int, fmt: str) -> None:
    """DP error table (vs the prototype's per-value Laplace), BFV billing and CKKS forecast figures."""
    from streams.bench.privacy import bench_privacy, render

    result = bench_privacy(quick=quick, sealed_max=sealed_max, progress=console.log)
    click.echo(json.dumps(result, indent=2) if fmt == "json" else render(result))


@bench.command("rollup")
@click.option("--quick", is_flag=True, help="Smaller: 10k readings through the worker, stores of 100k and 1M, 2 days DP.")
@click.option("--part", type=click.Choice(["all", "throughput", "charts", "dp", "notifications"]), default="all",
              show_default=True, help="Only one of the four measurements.")
@_bench_fmt
def bench_rollup_cmd(quick: bool, part: str, fmt: str) -> None:
    """Rollups and notifications: worker throughput with rollups on vs off, the region chart from rollups vs raw
    readings (30 days, 12 months; 1M and 10M readings), DP error with per-hour vs per-reading clamping (1,000 and
    10,000 meters), notifications/s to a webhook."""
    from streams.bench import rollup as b

    if part == "all":
        result = b.bench_rollup(quick=quick, progress=console.log)
    elif part == "throughput":
        result = {"throughput": b.bench_throughput(10_000 if quick else 40_000, rounds=1 if quick else 2,
                                                   progress=console.log)}
    elif part == "charts":
        result = {"charts": b.bench_charts((100_000, 1_000_000) if quick else (1_000_000, 10_000_000),
                                           progress=console.log)}
    elif part == "dp":
        result = {"dp": b.bench_dp_clamping((1000, 10_000), days=2 if quick else 7, progress=console.log)}
    else:
        result = {"notifications": b.bench_notifications(200 if quick else 1000, progress=console.log)}
    click.echo(json.dumps(result, indent=2))
