"""The sealed store on S3-compatible object storage: Iceberg tables (pyiceberg, SQL catalog on PostgreSQL),
the ledger as C2SP tlog-tiles, wrapped DEKs and grants as write-once objects.

``METERSEAL_STORE=s3://BUCKET/PREFIX`` with ``METERSEAL_CATALOG=postgresql://...`` and the standard AWS_*
variables. Under the prefix::

    warehouse/<namespace>/readings/{data,metadata}/...   the Iceberg tables readings, bills, dlq
    ledger/<table>/p003/tile/0/x001/234 ...             each log's tiles, claims and checkpoints
    ledger/logs/<table>-p003                             one marker per log (so audits find every log)
    deks/<key id>.json, deks/marks/<key id>.json         wrapped DEKs, and where each is a key-log leaf
    grants/<region>/<key id>.json

Many writers, no file locks. Different sealed-topic partitions append to one Iceberg table at the same time:
each commit is optimistic (the catalog swaps the metadata pointer only if nobody committed since) and is
retried over the new snapshot on ``CommitFailedException``. The writers of *one* partition (only ever
more than one during a consumer-group rebalance) are serialised by a PostgreSQL advisory lock on the
catalog's server: a session lock, released by the server when a killed writer's connection drops, never
a lock file. Within that lock a writer checks record ids against the partition's ids in the snapshot it
commits over (read incrementally, one new manifest at a time) and numbers the new leaves; the tile log's
claim objects (``ledger.tiles``) fence any writer that lost the lock without knowing it.

Pure data movement: the worker's dedup/number/write/append sequence is ``streams.pipeline``'s, unchanged.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ContextManager, Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from ledger.tiles import TileCheckpoints, TileHashStore

from streams.exceptions import StoreError
from streams.store import deletes
from streams.store.objects import S3Blobs, parse_s3, s3_client
from streams.store.pglocks import AdvisoryLocks
from streams.store.segments import DESTROYED_DEKS, LEDGERED, REGION_NAME, TABLES, arrow_schema, fresh_rows

SPECS = ("day+bucket", "day+bucket4", "month+bucket", "month+bucket2", "day", "none")  # what the bench compared
DEFAULT_SPEC = "day"  # the best of those measured (README "Scale out", BENCHMARKS.md): see partition_spec
# pyiceberg retries a conflicting commit itself, re-using the data files it wrote (only the manifest list and
# metadata are redone): many quick retries, since writers of other partitions commit every few hundred ms
# compaction (``streams.store.compact``) deletes the files it rewrote by name: concurrent appends do not conflict
# with it (snapshot isolation); a file another compactor deleted meanwhile still does (pyiceberg checks that)
COMPACTION_ISOLATION = "write.delete.isolation-level"
# manifests merged once 100 pile up (each streaming commit adds one: a scan would read them all), old metadata
# files deleted after each commit (``streams.store.expire`` also sets these on tables made before)
MAINTENANCE_PROPERTIES = {"commit.manifest-merge.enabled": "true", "write.metadata.delete-after-commit.enabled": "true",
                          "write.metadata.previous-versions-max": "20"}
TABLE_PROPERTIES = {**MAINTENANCE_PROPERTIES, "write.parquet.compression-codec": "zstd", "commit.retry.num-retries": "30",
                    "commit.retry.min-wait-ms": "20", "commit.retry.max-wait-ms": "2000",
                    "commit.retry.total-timeout-ms": "120000", **{COMPACTION_ISOLATION: "snapshot"}}
BUCKETS = 8


def _ice_type(kind: pa.DataType):
    from pyiceberg.types import BinaryType, DoubleType, IntegerType, LongType, StringType

    return {pa.int32(): IntegerType(), pa.int64(): LongType(), pa.string(): StringType(), pa.binary(): BinaryType(),
            pa.float64(): DoubleType()}[kind]


def iceberg_schema(table: str):
    """The Iceberg schema of a store table: the Arrow schema's columns (all optional, ids from 1)."""
    from pyiceberg.schema import Schema
    from pyiceberg.types import NestedField

    return Schema(*[NestedField(i + 1, f.name, _ice_type(f.type), required=False)
                    for i, f in enumerate(arrow_schema(table))])


def partition_spec(table: str, spec: str):
    """The Iceberg partition spec ``spec`` (``day``, ``month``, ``bucketN`` joined by ``+``, or ``none``).

    Tokens are random, so only equality (identity) and hashing (bucket) transforms can prune, and a search
    asks for day tokens (a range becomes every day token in it) and one meter token. Measured on 1M readings
    (``meterseal bench store --s3``), ``day`` alone had the lowest query times relative to the local store
    (geometric mean over range, week, day and meter-in-range queries 2.7x vs 4.1x for day+bucket4, 4.6x for
    day+bucket(8), 6.7-7.1x for month+bucket, 13x unpartitioned) and the fewest files per commit after
    ``none``; a meter query over all time is its weak side (no pruning by meter)."""
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.transforms import BucketTransform, IdentityTransform

    parts = spec.split("+")
    buckets = next((int(p[6:] or BUCKETS) for p in parts if p.startswith("bucket") and p[6:].isdigit() or p == "bucket"), 0)
    if not all(p in ("day", "month", "none") or p.startswith("bucket") and (p[6:] == "" or p[6:].isdigit()) for p in parts):
        raise StoreError(f"unknown partition spec {spec!r}: day, month, bucket[N] joined by '+', or none")
    if table not in LEDGERED:
        return PartitionSpec()
    ids = {f.name: f.field_id for f in iceberg_schema(table).fields}
    fields = []
    if "day" in parts:
        fields.append(PartitionField(ids["day_tok"], 1000 + len(fields), IdentityTransform(), "day_tok"))
    if "month" in parts:
        fields.append(PartitionField(ids["month_tok"], 1000 + len(fields), IdentityTransform(), "month_tok"))
    if buckets:
        fields.append(PartitionField(ids["meter_tok"], 1000 + len(fields), BucketTransform(buckets), "meter_bucket"))
    return PartitionSpec(*fields)


def _plain_uri(uri: str) -> str:
    return re.sub(r"^postgresql\+\w+://", "postgresql://", uri)


def _sqlalchemy_uri(uri: str) -> str:
    return re.sub(r"^postgres(ql)?://", "postgresql+psycopg://", uri)


@dataclass
class _State:
    manifests: set[str] = field(default_factory=set)
    files: set[str] = field(default_factory=set)
    ids: set[str] = field(default_factory=set)
    meter_counts: dict[str, int] = field(default_factory=dict)
    max_leaf: int = -1
    snapshot: int | None = None


class IcebergStore:
    """The store interface (as ``SegmentStore``) over Iceberg tables and write-once objects on S3."""

    def __init__(self, location: str, catalog: str | None, *, work_dir: Path | str, spec: str = DEFAULT_SPEC,
                 create: bool = True) -> None:
        if not catalog:
            raise StoreError(f"METERSEAL_STORE={location} needs METERSEAL_CATALOG=postgresql://USER@HOST:PORT/DB "
                             "(the Iceberg SQL catalog)")
        self.location, self.spec = location, spec
        self.bucket, self.prefix = parse_s3(location)
        self.catalog_uri = catalog
        self.root = Path(work_dir)  # this process's own working files only (the detector's models)
        self.endpoint = os.environ.get("AWS_ENDPOINT_URL")
        self.blobs = S3Blobs(s3_client(endpoint=self.endpoint), self.bucket, self.prefix)
        self.namespace = "meterseal_" + re.sub(r"[^a-z0-9]+", "_", f"{self.bucket}_{self.prefix}".lower()).strip("_")
        self._states: dict[tuple[str, int], _State] = {}
        self._local = threading.local()  # each thread its own pyiceberg Table objects: see ``_tables``
        self._locks = AdvisoryLocks(_plain_uri(catalog), location)
        self._logs_known: set[str] = set()
        self._hash_stores: dict[tuple[str, int], TileHashStore] = {}
        self._check()
        with self._setup_lock():  # first use of a catalog or store: one process at a time creates things
            self._catalog = self._open_catalog()
            if create:
                for table in TABLES:
                    self._table(table, create=True)

    # -- connections -----------------------------------------------------------------------------
    def _check(self) -> None:
        """Bucket reachable with these credentials, catalog reachable: else one clear error, nothing written."""
        self.blobs.check()
        import psycopg

        try:
            with psycopg.connect(_plain_uri(self.catalog_uri), connect_timeout=3) as con:
                con.execute("SELECT 1")
        except psycopg.Error as exc:
            raise StoreError(f"cannot reach the Iceberg catalog at {self._catalog_where()}: check METERSEAL_CATALOG "
                             f"and that PostgreSQL is running ({str(exc).strip().splitlines()[0]})") from exc

    @contextlib.contextmanager
    def _setup_lock(self) -> Iterator[None]:
        """Serialise creating the catalog's tables, the namespace and the store's tables across processes
        (several workers starting at once would race on CREATE TABLE): a transaction advisory lock."""
        import psycopg

        with psycopg.connect(_plain_uri(self.catalog_uri), connect_timeout=5) as con:
            con.execute("SELECT pg_advisory_xact_lock(%s)", (0x6D657465727365,))  # 'meterse'
            yield

    def _catalog_where(self) -> str:
        return re.sub(r"//[^@/]*@", "//", self.catalog_uri)  # never print a password

    def _s3_props(self) -> dict[str, str]:
        props = {"s3.region": os.environ.get("AWS_REGION", "us-east-1"),
                 "s3.access-key-id": os.environ.get("AWS_ACCESS_KEY_ID", ""),
                 "s3.secret-access-key": os.environ.get("AWS_SECRET_ACCESS_KEY", ""),
                 "s3.connect-timeout": "5", "s3.request-timeout": "30"}
        if self.endpoint:
            props["s3.endpoint"] = self.endpoint
        return props

    def _open_catalog(self):
        from pyiceberg.catalog.sql import SqlCatalog

        warehouse = f"s3://{self.bucket}/{self.prefix + '/' if self.prefix else ''}warehouse"
        catalog = SqlCatalog("meterseal", uri=_sqlalchemy_uri(self.catalog_uri), warehouse=warehouse,
                             **self._s3_props())
        with contextlib.suppress(Exception):  # NamespaceAlreadyExistsError, or a racing writer made it
            catalog.create_namespace(self.namespace)
        return catalog

    def filesystem(self):
        """A ``pyarrow.fs.S3FileSystem`` for this store's endpoint and credentials."""
        from pyarrow.fs import S3FileSystem

        scheme = "https"
        endpoint = self.endpoint
        if endpoint and "://" in endpoint:
            scheme, endpoint = endpoint.split("://", 1)
        return S3FileSystem(endpoint_override=endpoint, scheme=scheme, region=os.environ.get("AWS_REGION", "us-east-1"),
                            access_key=os.environ.get("AWS_ACCESS_KEY_ID"), secret_key=os.environ.get("AWS_SECRET_ACCESS_KEY"),
                            connect_timeout=5, request_timeout=30)

    @property
    def _tables(self) -> dict[str, Any]:
        """This thread's pyiceberg ``Table`` objects. A ``Table`` is not safe to share: an append builds its
        manifest list on the metadata it started from but takes the commit's requirement (the branch head) from
        ``table.metadata`` when it commits, so another thread's ``refresh()`` in between makes the catalog accept
        a snapshot that drops every commit since — the CI run of 2026-12-01 lost a 569-row group write of a
        never-killed worker that way (its checkpoint thread read the table while its store thread appended)."""
        tables = getattr(self._local, "tables", None)
        if tables is None:
            tables = self._local.tables = {}
        return tables

    def _table(self, table: str, *, create: bool = False):
        from pyiceberg.exceptions import NoSuchTableError, TableAlreadyExistsError

        found = self._tables.get(table)
        if found is not None:
            return found
        ident = (self.namespace, table)
        try:
            found = self._catalog.load_table(ident)
        except NoSuchTableError:
            if not create:
                raise StoreError(f"no table {table} in {self.location}: start a worker on this store first") from None
            try:
                found = self._catalog.create_table(ident, schema=iceberg_schema(table),
                                                   partition_spec=partition_spec(table, self.spec),
                                                   properties=TABLE_PROPERTIES)
            except TableAlreadyExistsError:  # another writer made it a moment ago
                found = self._catalog.load_table(ident)
        except Exception as exc:  # noqa: BLE001 - S3 or catalog failure
            raise StoreError(f"cannot open table {table} of {self.location}: {exc}") from exc
        self._tables[table] = found
        return found

    # -- the dedup state of one partition, read incrementally from new manifests ---------------------
    def _state(self, table: str, partition: int) -> _State:
        for _ in range(2):
            try:
                return self._read_state(table, partition)
            except FileNotFoundError:  # the snapshot we refreshed to was expired while we read it: read again
                pass
        return self._read_state(table, partition)

    def _read_state(self, table: str, partition: int) -> _State:
        tbl = self._table(table)
        tbl.refresh()
        state = self._states.setdefault((table, partition), _State())
        snap = tbl.current_snapshot()
        if snap is None or snap.snapshot_id == state.snapshot:
            return state
        part_id = next(f.field_id for f in tbl.schema().fields if f.name == "topic_partition")
        id_col = TABLES[table][1]
        fs = self.filesystem()
        for manifest in snap.manifests(tbl.io):
            if manifest.manifest_path in state.manifests:
                continue
            for entry in manifest.fetch_manifest_entry(tbl.io, discard_deleted=True):
                data = entry.data_file
                lo, hi = data.lower_bounds.get(part_id), data.upper_bounds.get(part_id)
                if lo is not None and hi is not None and not (struct.unpack("<i", lo)[0] <= partition <= struct.unpack("<i", hi)[0]):
                    continue
                if data.file_path in state.files:
                    continue
                cols = [id_col, "topic_partition"] + (["meter_tok", "leaf_index", "meter_seq"] if table in LEDGERED else [])
                part = pq.read_table(data.file_path.removeprefix("s3://"), columns=cols, filesystem=fs)
                part = part.filter(pa.compute.equal(part.column("topic_partition"), partition))
                ids = part.column(id_col).to_pylist()
                if table in LEDGERED:  # next sequence number per meter: one past its highest (rows may be deleted)
                    for tok, seq in zip(part.column("meter_tok").to_pylist(), part.column("meter_seq").to_pylist()):
                        if seq is not None and seq >= state.meter_counts.get(tok, 0):
                            state.meter_counts[tok] = seq + 1
                state.ids.update(ids)
                if table in LEDGERED:
                    leaves = [i for i in part.column("leaf_index").to_pylist() if i is not None]
                    state.max_leaf = max([state.max_leaf, *leaves])
                state.files.add(data.file_path)
            state.manifests.add(manifest.manifest_path)
        state.snapshot = snap.snapshot_id
        return state

    def fresh(self, table: str, partition: int, rows: Iterable[tuple[int, dict[str, Any]]]) -> list[dict[str, Any]]:
        return fresh_rows(self._state(table, partition).ids, TABLES[table][1], partition, rows)

    def number(self, table: str, partition: int, rows: list[dict[str, Any]], first_leaf: int) -> None:
        counts = self._states.setdefault((table, partition), _State()).meter_counts
        for i, row in enumerate(rows):
            row["leaf_index"] = first_leaf + i
            row["meter_seq"] = seq = counts.get(row["meter_tok"], 0)
            counts[row["meter_tok"]] = seq + 1

    def write(self, table: str, partition: int, rows: list[dict[str, Any]], *, attempts: int = 20) -> int:
        """Append rows (from ``fresh``) in one Iceberg commit, retried over newer snapshots on conflict."""
        from pyiceberg.exceptions import CommitFailedException, ValidationException

        if not rows:
            return 0
        data = pa.Table.from_pylist(rows, schema=arrow_schema(table))
        data = data.cast(pa.schema([f.with_nullable(True) for f in data.schema]))
        tbl = self._table(table)
        for attempt in range(attempts):
            try:
                tbl.append(data)
                break
            except (CommitFailedException, ValidationException, FileNotFoundError):
                # a conflict, or the snapshot the append started from was expired meanwhile (pyiceberg's retry
                # cannot find it; ``streams.store.expire`` deleted its manifest list): only a parent that stopped
                # being the head can be expired, so this append was losing its commit anyway — start it again
                if attempt == attempts - 1:
                    raise StoreError(f"{table}: {attempts} commits in a row lost to other writers; try again") from None
                time.sleep(min(1.0, 0.02 * 2 ** attempt) * (0.5 + int.from_bytes(os.urandom(1), "big") / 255))
                tbl.refresh()
        state = self._states.setdefault((table, partition), _State())
        snap = tbl.current_snapshot()
        for manifest in snap.manifests(tbl.io):  # our own files: known already, never read back
            if manifest.added_snapshot_id == snap.snapshot_id:
                state.files.update(e.data_file.file_path for e in manifest.fetch_manifest_entry(tbl.io))
                state.manifests.add(manifest.manifest_path)
        state.ids.update(r[TABLES[table][1]] for r in rows)
        if table in LEDGERED:
            state.max_leaf = max([state.max_leaf, *(r["leaf_index"] for r in rows if r.get("leaf_index") is not None)])
        return len(rows)

    def append(self, table: str, partition: int, rows: Iterable[tuple[int, dict[str, Any]]]) -> int:
        return self.write(table, partition, self.fresh(table, partition, rows))

    def max_leaf(self, table: str, partition: int) -> int:
        return self._state(table, partition).max_leaf

    # -- reads: snapshots as Arrow -----------------------------------------------------------------
    def scan(self, table: str, row_filter: Any = None, *, snapshot_id: int | None = None) -> pa.Table:
        """The rows of one snapshot (the current one by default) matching a pyiceberg ``row_filter``, pruned
        by partition and column statistics before any data file is read."""
        from pyiceberg.expressions import AlwaysTrue

        tbl = self._table_or_none(table)
        if tbl is None:
            return arrow_schema(table).empty_table()
        tbl.refresh()
        out = tbl.scan(row_filter=row_filter or AlwaysTrue(), snapshot_id=snapshot_id).to_arrow()
        return out.cast(arrow_schema(table)) if out.num_rows else arrow_schema(table).empty_table()

    def arrow(self, table: str, *, snapshot_id: int | None = None) -> pa.Table:
        return self.scan(table, snapshot_id=snapshot_id)

    def _table_or_none(self, table: str):
        from pyiceberg.exceptions import NoSuchTableError

        if table in self._tables:
            return self._tables[table]
        try:
            self._tables[table] = self._catalog.load_table((self.namespace, table))
        except NoSuchTableError:
            return None
        return self._tables[table]

    def pruned(self, table: str, *, day_toks: list[str] | None = None, month_toks: list[str] | None = None,
               meter_tok: str | None = None, account_tok: str | None = None, region: str | None = None) -> pa.Table:
        """Rows that may match a search, read after Iceberg pruned partitions (day token, meter bucket) and
        files (column bounds); the caller applies the exact condition."""
        from pyiceberg.expressions import AlwaysTrue, And, EqualTo, In

        cond = AlwaysTrue()
        for name, value in (("meter_tok", meter_tok), ("account_tok", account_tok), ("region", region)):
            if value is not None:
                cond = And(cond, EqualTo(name, value))
        for name, values in (("day_tok", day_toks), ("month_tok", month_toks)):
            if values is not None:  # every row's day and month token: both hold for a match, so both prune
                cond = And(cond, In(name, set(values)) if values else EqualTo(name, ""))
        return self.scan(table, cond)

    def find(self, table: str, record_id: str) -> dict[str, Any] | None:
        """The row with this record id, or None (a scan filtered on the id: only matching rows are read)."""
        from pyiceberg.expressions import EqualTo

        rows = self.scan(table, EqualTo(TABLES[table][1], record_id)).to_pylist()
        return rows[0] if rows else None

    def snapshot_id(self, table: str) -> int | None:
        tbl = self._table_or_none(table)
        if tbl is None:
            return None
        tbl.refresh()
        snap = tbl.current_snapshot()
        return snap.snapshot_id if snap else None

    def is_empty(self, table: str) -> bool:
        return self.snapshot_id(table) is None

    def rows(self, table: str, partition: int, *, min_leaf: int | None = None) -> list[dict[str, Any]]:
        from pyiceberg.expressions import And, EqualTo, GreaterThanOrEqual

        cond = EqualTo("topic_partition", partition)
        if min_leaf is not None:
            cond = And(cond, GreaterThanOrEqual("leaf_index", min_leaf))
        rows = self.scan(table, cond).to_pylist()
        return sorted(rows, key=lambda r: (r.get("leaf_index") is None, r.get("leaf_index") or 0))

    def partitions(self, table: str) -> list[int]:
        data = self.scan(table).column("topic_partition")
        return sorted(set(data.to_pylist()))

    # -- the ledger: tiles and checkpoints as write-once objects --------------------------------------
    def _log_prefix(self, table: str, partition: int) -> str:
        return f"ledger/{table}/p{partition:03d}"

    def hash_store(self, table: str, partition: int) -> TileHashStore:
        """The log's tiles (one object per log and process: it remembers the size it last saw, so finding
        the current size costs a few requests, not a search from leaf 0)."""
        marker = f"ledger/logs/{table}-p{partition:03d}"
        if marker not in self._logs_known:
            self.blobs.create(marker, b"")
            self._logs_known.add(marker)
        found = self._hash_stores.get((table, partition))
        if found is None:
            found = self._hash_stores[(table, partition)] = TileHashStore(self.blobs, self._log_prefix(table, partition))
        return found

    def checkpoint_store(self, table: str, partition: int) -> TileCheckpoints:
        return TileCheckpoints(self.blobs, self._log_prefix(table, partition))

    def log_keys(self) -> list[tuple[str, int]]:
        out = []
        for key in self.blobs.list("ledger/logs/"):
            table, _, p = key.rsplit("/", 1)[1].rpartition("-p")
            out.append((table, int(p)))
        return sorted(out)

    def locked(self, table: str, partition: int) -> ContextManager[None]:
        """A PostgreSQL session advisory lock on one partition's rows and log (released if we die)."""
        return self._locks.held(f"{table}/{partition}")

    def try_locked(self, name: str) -> ContextManager[bool]:
        """A store-wide lock taken only if free (snapshot expiry: one process at a time)."""
        return self._locks.tried(f"job/{name}")

    # -- wrapped DEKs and grants: write-once JSON objects ---------------------------------------------
    def put_dek(self, wrapped: dict[str, Any]) -> bool:
        if self.blobs.exists(f"{DESTROYED_DEKS}{wrapped['key_id']}"):
            return False  # destroyed by retention: never stored again
        doc = {**wrapped, "wrapped": wrapped["wrapped"].hex()}
        doc.pop("partition", None), doc.pop("leaf_index", None)
        return self.blobs.create(f"deks/{wrapped['key_id']}.json", json.dumps(doc, sort_keys=True).encode())

    def mark_dek(self, key_id: str, *, partition: int, leaf_index: int) -> dict[str, Any]:
        mark = json.dumps({"partition": partition, "leaf_index": leaf_index}).encode()
        key = f"deks/marks/{key_id}.json"
        if not self.blobs.create(key, mark) and self.blobs.get(key) != mark:
            raise StoreError(f"DEK {key_id} is already a leaf elsewhere in the key log: reload and retry")
        return self.get_dek(key_id)

    def get_dek(self, key_id: str) -> dict[str, Any] | None:
        if not re.fullmatch(r"[0-9a-f]{32}", key_id):
            return None
        data = self.blobs.get(f"deks/{key_id}.json")
        if data is None:
            return None
        doc = json.loads(data)
        mark = self.blobs.get(f"deks/marks/{key_id}.json")
        if mark is not None:
            doc.update(json.loads(mark))
        return {**doc, "wrapped": bytes.fromhex(doc["wrapped"])}

    def delete_rows(self, table: str, column: str, values: Iterable[str], *,
                    record_ids: Iterable[str] | None = None) -> int:
        """Delete the rows whose ``column`` is one of ``values`` (and, given ``record_ids``, whose record id is one of
        them: ``streams.store.deletes``); returns how many."""
        return deletes.delete_rows(self, table, column, values, record_ids=record_ids)

    def delete_dek(self, key_id: str) -> int:
        """Destroy a wrapped DEK, its key-log mark and its region grants (retention); returns objects removed."""
        if not re.fullmatch(r"[0-9a-f]{32}", key_id):
            return 0
        self.blobs.put(f"{DESTROYED_DEKS}{key_id}", b"")
        grants = [k for k in self.blobs.list("grants/") if k.endswith(f"/{key_id}.json")]
        return deletes.delete_objects(self, [f"deks/{key_id}.json", f"deks/marks/{key_id}.json", *grants])

    def dek_ids(self) -> list[str]:
        return sorted(k[len("deks/"):-5] for k in self.blobs.list("deks/") if k.count("/") == 1 and k.endswith(".json"))

    def dek_rows(self, partition: int | None = None) -> list[dict[str, Any]]:
        marks = {k.rsplit("/", 1)[1][:-5] for k in self.blobs.list("deks/marks/")}
        ids = self.dek_ids() if partition is None else sorted(marks)
        rows = [self.get_dek(k) for k in ids]
        rows = [r for r in rows if r is not None]
        if partition is not None:
            rows = [r for r in rows if r.get("partition") == partition and r.get("leaf_index") is not None]
        return sorted(rows, key=lambda r: (r.get("leaf_index") is None, r.get("leaf_index") or 0))

    def put_grant(self, grant: dict[str, Any], *, replace: bool = False) -> bool:
        if not re.fullmatch(r"[0-9a-f]{32}", grant["key_id"]) or not REGION_NAME.fullmatch(grant["region"]):
            raise StoreError(f"bad grant name {grant['region']}/{grant['key_id']}")
        key = f"grants/{grant['region']}/{grant['key_id']}.json"
        data = json.dumps({**grant, "wrapped": grant["wrapped"].hex()}).encode()
        if replace:
            self.blobs.put(key, data)
            return True
        return self.blobs.create(key, data)

    def get_grant(self, region: str, key_id: str) -> dict[str, Any] | None:
        if not re.fullmatch(r"[0-9a-f]{32}", key_id) or not REGION_NAME.fullmatch(region):
            return None
        data = self.blobs.get(f"grants/{region}/{key_id}.json")
        if data is None:
            return None
        doc = json.loads(data)
        return {**doc, "wrapped": bytes.fromhex(doc["wrapped"])}

    def grant_ids(self, region: str) -> list[str]:
        return sorted(k.rsplit("/", 1)[1][:-5] for k in self.blobs.list(f"grants/{region}/"))

    def close(self) -> None:
        self._locks.close()
