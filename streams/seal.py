"""Sealing raw input: validate, tokenize, encrypt. The seal agent is a thin loop around ``Sealer``.

A sealed record's associated data binds everything the store shows in clear — record id (itself
an HMAC of meter id and timestamp), kind, schema version, tokens, region and category — and the
envelope header binds the key id. Moving a ciphertext to another row, or relabelling a row, makes
it fail to open.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import struct
import time
from dataclasses import dataclass
from typing import Any, Callable

import fastavro

import schemas
from streams.crypto import _primitives
from streams.crypto import envelope as env
from streams.crypto import record_keys
from streams.crypto.envelope import DataKey, DekRing
from streams.exceptions import InvalidEnvelope, InvalidInput
from streams.crypto.tokens import BlindIndex
from streams.validate import MeterState, Policy, Reading, check_bill, check_reading, decode_raw, next_state

SEALED_FORMAT = 1
DLQ_FORMAT = 1


@dataclass(frozen=True)
class Source:
    """Where a raw message came from."""

    topic: str
    partition: int
    offset: int

    @property
    def id(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"


@dataclass(frozen=True)
class Sealed:
    key: bytes  # the meter token: topics after the raw ones never carry a meter id in clear
    record: dict[str, Any]
    state: MeterState | None = None
    reading: Reading | None = None  # the plaintext, for the anomaly detector; never sent anywhere

    def encode(self) -> bytes:
        return schemas.encode("sealed", self.record)


MAX_BATCH_RECORDS = 1000
MAX_BATCH_BYTES = 512 * 1024  # well under Kafka's default 1 MiB message limit


def batch_messages(records: list[dict[str, Any]], *, max_records: int = MAX_BATCH_RECORDS,
                   max_bytes: int = MAX_BATCH_BYTES) -> list[bytes]:
    """Sealed records as ``SealedBatch`` messages for a sealed topic, in order, each holding at most
    ``max_records`` records and about ``max_bytes`` bytes (an envelope plus ~200 bytes of ids and tokens
    a record).

    >>> rec = {"format": 1, "record_id": "r", "kind": "reading", "schema_version": 2, "key_id": "k",
    ...        "meter_tok": "m", "day_tok": "d", "month_tok": "mo", "year_tok": "y", "envelope": b"x" * 100,
    ...        "sealed_at_ms": 0}
    >>> [len(sealed_records(m)) for m in batch_messages([rec] * 5, max_records=2)]
    [2, 2, 1]
    """
    out, chunk, size = [], [], 0
    for record in records:
        cost = len(record["envelope"]) + 200
        if chunk and (len(chunk) >= max_records or size + cost > max_bytes):
            out.append(schemas.encode("sealed_batch", {"records": chunk}))
            chunk, size = [], 0
        chunk.append(record)
        size += cost
    if chunk:
        out.append(schemas.encode("sealed_batch", {"records": chunk}))
    return out


def sealed_records(value: bytes) -> list[dict[str, Any]]:
    """The sealed records in one message of a sealed topic: a ``SealedBatch`` (what workers write), or a
    single ``SealedRecord``. Raises ``schemas.SchemaError`` on anything else."""
    if schemas.writer_of(value).name == "sealed_batch":
        return schemas.decode("sealed_batch", value)["records"]
    return [schemas.decode("sealed", value)]


@dataclass(frozen=True)
class Rejected:
    key: bytes
    record: dict[str, Any]
    decoded: dict[str, Any] | None = None  # the decoded raw reading, when it decoded; never sent anywhere

    def encode(self) -> bytes:
        return schemas.encode("dead_letter", self.record)


def record_aad(record: dict[str, Any]) -> bytes:
    """The associated data of a sealed record, rebuilt from its clear columns."""
    parts = (record["record_id"], record["kind"], str(record["schema_version"]), record["region"] or "",
             record["category"] or "", record["meter_tok"], record["account_tok"] or "", record["day_tok"],
             record["month_tok"], record["year_tok"])
    return ("meterseal/record/v1|" + "|".join(parts)).encode()


def dlq_aad(dlq_id: str) -> bytes:
    return b"meterseal/dlq/v1|" + dlq_id.encode()


ANY_KEY = object()  # Sealer.reading(key=...): do not check the message key (unit tests, replays)


def check_key(key: bytes | None, meter_id: str) -> None:
    """A raw reading's Kafka key must be its meter id (``InvalidInput`` rule ``key`` otherwise)."""
    if not key:
        raise InvalidInput("key", "message has no key: key readings by meter id (it picks the meter's partition)")
    if key.decode("utf-8", "replace").strip() != meter_id:
        raise InvalidInput("key", "message key is not the reading's meter_id")


class Sealer:
    """Turns raw message bytes into a ``Sealed`` record or a ``Rejected`` dead letter. Never raises on data."""

    def __init__(self, index: BlindIndex, ring: DekRing, policy: Policy, *, max_message_bytes: int = 65_536,
                 clock: Callable[[], float] = time.time,
                 region_ring: Callable[[str], DekRing] | None = None) -> None:
        """``ring`` seals dead letters (and records, unless ``region_ring(region)`` gives each region its own
        DEKs: then no DEK spans regions, which is what lets a region key open one region only)."""
        self.index, self.ring, self.policy = index, ring, policy
        self.region_ring = region_ring
        self.max_message_bytes = max_message_bytes
        self.clock = clock
        self._reading_version = max(schemas.versions("reading"))
        self._bill_version = max(schemas.versions("bill"))

    def reading(self, data: bytes, source: Source,
                state_of: Callable[[str], MeterState | None] = lambda meter_tok: None, *,
                key: bytes | None | object = ANY_KEY) -> Sealed | Rejected:
        """Seal a raw reading; ``state_of(meter token)`` is the meter's last accepted state, if any.

        ``key`` is the message's Kafka key: it must be the meter id, because the key picks the partition,
        and a meter's state lives in its partition (the worker always passes it; ``ANY_KEY`` skips the check).
        """
        record = None
        try:
            self._check_size(data)
            record = decode_raw(data, "reading")
            meter_id = record.get("meter_id")
            known = isinstance(meter_id, (str, int)) and not isinstance(meter_id, bool)
            last = state_of(self.index.meter(str(meter_id))) if known else None
            reading = check_reading(record, policy=self.policy, now=self.clock(), last=last)
            if key is not ANY_KEY:
                check_key(key, reading.meter_id)
        except InvalidInput as exc:
            return self.reject(data, source, exc, decoded=record)
        return self._seal_reading(reading, last)

    def bill(self, data: bytes, source: Source) -> Sealed | Rejected:
        try:
            self._check_size(data)
            bill = check_bill(decode_raw(data, "bill"))
        except InvalidInput as exc:
            return self.reject(data, source, exc)
        day = dt.date.fromisoformat(bill["date"])
        return self._seal("bill", self.index.record_id("bill", bill["bill_no"]), self._bill_version,
                          schemas.encode_body(schemas.get("bill"), bill), meter_id=bill["meter_no"],
                          account_id=bill["account_id"], day=day, region=bill["region"], category=bill["category"])

    def _seal_reading(self, reading: Reading, last: MeterState | None) -> Sealed:
        sealed = self._seal("reading", self.index.record_id("reading", reading.meter_id, reading.ts),
                            self._reading_version,
                            schemas.encode_body(schemas.get("reading"), reading.as_record()),
                            meter_id=reading.meter_id, account_id=reading.account_id, day=reading.day,
                            region=reading.region, category=reading.category)
        return Sealed(sealed.key, sealed.record, next_state(last, reading), reading)

    def _seal(self, kind: str, record_id: str, version: int, body: bytes, *, meter_id: str,
              account_id: str | None, day, region: str | None, category: str | None) -> Sealed:
        dates = self.index.date_tokens(day)
        record = {
            "format": SEALED_FORMAT, "record_id": record_id, "kind": kind, "schema_version": version,
            "key_id": "", "region": region, "category": category, "meter_tok": self.index.meter(meter_id),
            "account_tok": self.index.account(account_id) if account_id else None,
            "day_tok": dates.day, "month_tok": dates.month, "year_tok": dates.year,
            "envelope": b"", "sealed_at_ms": int(self.clock() * 1000),
        }
        ring = self.region_ring(region or "") if self.region_ring else self.ring
        record["envelope"] = ring.seal(body, aad=record_aad(record), record_id=record_id)
        record["key_id"] = env.key_id_of(record["envelope"]).hex()
        return Sealed(record["meter_tok"].encode(), record)

    def reject(self, data: bytes, source: Source, exc: InvalidInput, *, decoded: dict[str, Any] | None = None) -> Rejected:
        # keyed id of (where, what): a redelivery maps to the same dead letter, a reused offset after a
        # broker restart does not
        dlq_id = self.index.record_id("dlq", source.id, hashlib.sha256(data).hexdigest())
        record = {
            "format": DLQ_FORMAT, "dlq_id": dlq_id, "source_topic": source.topic,
            "source_partition": source.partition, "source_offset": source.offset, "reason": exc.reason,
            "rule": exc.rule, "key_id": "", "envelope": self.ring.seal(data, aad=dlq_aad(dlq_id)),
            "received_at_ms": int(self.clock() * 1000),
        }
        record["key_id"] = env.key_id_of(record["envelope"]).hex()
        return Rejected(source.id.encode(), record, decoded)

    def _check_size(self, data: bytes) -> None:
        if len(data) > self.max_message_bytes:
            raise InvalidInput("size", f"message of {len(data)} bytes exceeds {self.max_message_bytes}")


# --- per-meter validator state, sealed (its changelog topic must not carry readings in clear) ----

_STATE = struct.Struct("<dd")
_STATE_KEY_ID = b"meterseal-state!"


class StateCodec:
    """Seals one kind of per-meter state for a changelog-backed table (key: meter token).

    By default the validator's ``MeterState``; ``key_id``, ``aad_prefix``, ``pack`` and ``unpack`` make
    the same codec for other state (the anomaly detector's profiles, ``streams.anomaly.alerting``).
    """

    def __init__(self, state_key: bytes, *, key_id: bytes = _STATE_KEY_ID, aad_prefix: bytes = b"",
                 pack: Callable[[Any], bytes] = lambda s: _STATE.pack(s.ts, s.register_kwh),
                 unpack: Callable[[bytes], Any] = lambda b: MeterState(*_STATE.unpack(b))) -> None:
        self._key_id, self._key = key_id, {key_id: DataKey(key_id, state_key)}
        self._aad_prefix, self._pack, self._unpack = aad_prefix, pack, unpack

    def encode(self, state: Any, meter_tok: str) -> bytes:
        return env.seal(self._key[self._key_id], self._pack(state), aad=self._aad_prefix + meter_tok.encode())

    def decode(self, blob: bytes | None, meter_tok: str) -> Any:
        if blob is None:
            return None
        return self._unpack(env.open_with(self._key, blob, aad=self._aad_prefix + meter_tok.encode()))


# --- the owner's side: opening -----------------------------------------------------------------


def open_record(record: dict[str, Any], keys: Callable[[bytes], DataKey], index: BlindIndex | None = None) -> dict[str, Any]:
    """The plaintext raw record inside a sealed record (raises ``InvalidEnvelope``).

    With ``index``, also checks that the plaintext's meter and time hash to the row's record id and
    tokens, so a row whose clear columns were edited does not open as if nothing happened.
    """
    body = env.open_with(keys, record["envelope"], aad=record_aad(record), record_id=record["record_id"])
    kind = record["kind"]
    writer = schemas.get(kind, record["schema_version"])
    plain = schemas.decode_body(body, writer, schemas.get(kind))
    if index is not None:
        if kind == "reading":
            expected = index.record_id("reading", plain["meter_id"], plain["ts"])
            meter = plain["meter_id"]
        else:
            expected = index.record_id("bill", plain["bill_no"])
            meter = plain["meter_no"]
        if expected != record["record_id"] or index.meter(meter) != record["meter_tok"]:
            raise InvalidEnvelope("envelope could not be opened")
    return plain


def _fastavro_reader(kind: str, version: int) -> Callable[[bytes], dict[str, Any]]:
    pair = (schemas.get(kind, version).parsed, schemas.get(kind).parsed)
    return lambda body: fastavro.schemaless_reader(io.BytesIO(body), *pair)


def open_many(records: list[dict[str, Any]], keys: Callable[[bytes], DataKey],
              index: BlindIndex | None = None) -> list[dict[str, Any]]:
    """``open_record`` for many records (dicts of the sealed columns); ``open_table`` for an Arrow table."""
    boxes = [r["envelope"] for r in records]
    aads = [record_aad(r) for r in records]
    return _open_all(boxes, aads, [r["kind"] for r in records], [r["schema_version"] for r in records], keys,
                     index, [r["record_id"] for r in records], [r["meter_tok"] for r in records] if index else None)


# the store columns a sealed record is opened from: what ``record_aad`` binds, in its order, and the envelope
SEALED_COLUMNS = ("record_id", "kind", "schema_version", "region", "category", "meter_tok", "account_tok", "day_tok",
                  "month_tok", "year_tok", "envelope")


def open_table(table: Any, keys: Callable[[bytes], DataKey], index: BlindIndex | None = None) -> list[dict[str, Any]]:
    """``open_many`` for a ``pyarrow.Table`` of the ``SEALED_COLUMNS``, as DuckDB returns them: Arrow compute
    joins every row's associated data in one pass, so Python only decrypts and decodes (1.7x ``open_many``
    on ``table.to_pylist()``, with the same result). The bulk path of ``unseal()``, the FL clients and
    ``meterseal bench store``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    envelopes = table.column("envelope")
    bound = SEALED_COLUMNS[:-1]
    parts = [pc.cast(table.column(c), pa.string()) for c in bound]
    for i in (bound.index("region"), bound.index("category"), bound.index("account_tok")):
        parts[i] = pc.fill_null(parts[i], "")  # record_aad writes a missing one as ""; any other null: no aad
    aads = pc.cast(pc.binary_join_element_wise("meterseal/record/v1", *parts, "|"), pa.binary())

    def column(name: str) -> list[Any]:
        return table.column(name).to_pylist()

    return _open_all(envelopes.to_pylist(), aads.to_pylist(), column("kind"), column("schema_version"), keys, index,
                     column("record_id"), column("meter_tok") if index else None)


def _open_all(boxes: list[bytes | None], aads: list[bytes | None], kinds: list[str], versions: list[int],
              keys: Callable[[bytes], DataKey], index: BlindIndex | None, record_ids: list[str],
              meter_toks: list[str] | None) -> list[dict[str, Any]]:
    """The loop ``open_many`` and ``open_table`` share: one decoder per (kind, schema version); a version-1
    envelope is opened with one AES-GCM object per data key, a version-2 one under its record key, derived
    from its DEK and record id. ``aads`` are the clear columns' associated data (``record_aad``), without
    the envelope header. Raises ``InvalidEnvelope``."""
    header, nonce_end = env.HEADER_LEN, env.HEADER_LEN + _primitives.NONCE_LEN
    header2, nonce_end2 = env.HEADER_LEN_2, env.HEADER_LEN_2 + _primitives.NONCE_LEN
    label, hmac_sha256, aes_gcm_open = record_keys.RECORD_KEY_LABEL, _primitives.hmac_sha256, _primitives.aes_gcm_open
    ciphers: dict[bytes, Any] = {}
    secrets: dict[bytes, bytes] = {}
    decoders: dict[tuple[str, int], Callable[[bytes], dict[str, Any]]] = {}
    out = []
    for box, aad, kind, version, record_id in zip(boxes, aads, kinds, versions, record_ids):
        if box is None or aad is None or record_id is None:
            raise InvalidEnvelope("envelope could not be opened")
        try:
            if box[0] == env.VERSION_2 and len(box) >= env.OVERHEAD_2:
                key_id = box[1:header]
                secret = secrets.get(key_id)
                if secret is None:
                    secret = secrets[key_id] = keys(key_id).secret
                body = aes_gcm_open(hmac_sha256(secret, label + record_id.encode()), box[header2:nonce_end2],
                                    box[nonce_end2:], box[:header2] + aad)
            elif box[0] == env.VERSION and len(box) >= env.OVERHEAD:
                key_id = box[1:header]
                cipher = ciphers.get(key_id)
                if cipher is None:
                    cipher = ciphers[key_id] = _primitives.aead(keys(key_id).secret)
                body = cipher.decrypt(box[header:nonce_end], box[nonce_end:], box[:header] + aad)
            else:
                raise InvalidEnvelope("envelope could not be opened")
        except (KeyError, _primitives.InvalidTag) as exc:
            raise InvalidEnvelope("envelope could not be opened") from exc
        decode = decoders.get((kind, version))  # (after opening: kind and version are authenticated now)
        if decode is None:
            decode = decoders[(kind, version)] = schemas.fast_reader(kind, version) or _fastavro_reader(kind, version)
        out.append(decode(body))
    if index is not None:
        _recheck(out, kinds, record_ids, meter_toks, index)
    return out


def _recheck(plains: list[dict[str, Any]], kinds: list[str], record_ids: list[str], meter_toks: list[str],
             index: BlindIndex) -> None:
    """Each plaintext's meter and time (bill number) hash to its row's record id and meter token, so a row
    whose clear columns were edited does not open as if nothing happened."""
    for plain, kind, record_id, meter_tok in zip(plains, kinds, record_ids, meter_toks):
        if kind == "reading":
            expected, meter = index.record_id("reading", plain["meter_id"], plain["ts"]), plain["meter_id"]
        else:
            expected, meter = index.record_id("bill", plain["bill_no"]), plain["meter_no"]
        if expected != record_id or index.meter(meter) != meter_tok:  # (BlindIndex caches meter tokens)
            raise InvalidEnvelope("envelope could not be opened")


def derive_state_key(index_root: bytes) -> bytes:
    return _primitives.hkdf_sha256(index_root, info=b"meterseal/validator-state/v1")
