"""Sealing raw input: validate, tokenize, encrypt. The seal agent is a thin loop around ``Sealer``.

A sealed record's associated data binds everything the store shows in clear — record id (itself
an HMAC of meter id and timestamp), kind, schema version, tokens, region and category — and the
envelope header binds the key id. Moving a ciphertext to another row, or relabelling a row, makes
it fail to open.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import struct
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, NamedTuple

import orjson

import schemas
from streams.crypto import _primitives
from streams.crypto import envelope as env
from streams.crypto.envelope import DataKey, DekRing, SubjectKey
from streams.crypto.tokens import TOKEN_BYTES, BlindIndex
from streams.exceptions import InvalidInput, KeyServiceError, SubjectErased
from streams.validate import (_BILL_BY_HEADER, MeterState, Policy, Reading, _json_loads, _parse_ts, check_bill,
                              check_reading, decode_raw)

_zigzag = schemas._zigzag  # Avro's zig-zag varint
_loads, _JSONDecodeError = orjson.loads, orjson.JSONDecodeError

SEALED_FORMAT = 1
DLQ_FORMAT = 1
UNSIGNED_VERSION, SIGNED_VERSION = 2, 3  # reading schema versions: unsigned readings are sealed as v2, signed as v3


class DeviceFields(NamedTuple):
    """A device's signature over a reading, verified before sealing (``streams.devices.verify``); sealed with the
    reading as reading schema v3's ``device``."""

    alg: str
    kid: str
    seq: int
    sig: bytes
    payload: bytes  # the signed bytes, as the meter sent them


@dataclass(frozen=True)
class Source:
    """Where a raw message came from."""

    topic: str
    partition: int
    offset: int

    @property
    def id(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"


class Sealed(NamedTuple):
    """A sealed record: ``record`` (the ``SealedRecord`` fields) and ``body``, the same record Avro-encoded
    (schemaless: what a ``SealedBatch`` message concatenates)."""

    key: bytes  # the meter token: topics after the raw ones never carry a meter id in clear
    record: dict[str, Any]
    state: MeterState | None = None
    reading: Reading | None = None  # the plaintext, for the anomaly detector; never sent anywhere
    body: bytes = b""

    def encode(self) -> bytes:
        return schemas.encode("sealed", self.record)


class Rejected(NamedTuple):
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


def _no_state(meter_tok: str) -> MeterState | None:
    return None


_LENGTHS = [_zigzag(n) for n in range(1024)]  # Avro length prefixes of short strings, made once


def _avro_string(text: str) -> bytes:
    data = text.encode()
    n = len(data)
    return (_LENGTHS[n] if n < 1024 else _zigzag(n)) + data


def _device_avro(device: DeviceFields) -> bytes:
    """Reading v3's ``device``: the union's record branch (index 1) and its fields."""
    return b"".join((b"\x02", _avro_string(device.alg), _avro_string(device.kid), _zigzag(device.seq),
                     _zigzag(len(device.sig)), device.sig, _zigzag(len(device.payload)), device.payload))


def _avro_optional(text: str | None) -> bytes:
    """An Avro ``["null", "string"]`` value."""
    return b"\x00" if text is None else b"\x02" + _avro_string(text)


_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
CACHE_SIZE = 100_000  # entries per Sealer cache (meters, accounts, days, places); a full cache starts over


class Sealer:
    """Turns raw message bytes into a ``Sealed`` record or a ``Rejected`` dead letter. Never raises on data.

    One seal path for readings and bills (``_seal``): the record id (one HMAC), the tokens (cached per
    meter, account and day, with their Avro encodings), the Avro body written field by field, one AEAD call,
    and the ``SealedRecord`` both as a dict and already encoded. A reading costs a few microseconds in
    Python, so the worker's time goes to Kafka, not here (``meterseal bench seal``).
    """

    def __init__(self, index: BlindIndex, ring: DekRing, policy: Policy, *, max_message_bytes: int = 65_536,
                 clock: Callable[[], float] = time.time,
                 region_ring: Callable[[str], DekRing] | None = None,
                 subjects: Callable[[str, str], SubjectKey] | None = None,
                 epochs: Callable[[str, str], Any] | None = None) -> None:
        """``ring`` seals dead letters (and records, unless ``region_ring(region)`` gives each region its own
        DEKs: then no DEK spans regions, which is what lets a region key open one region only).

        ``subjects(token, kind)`` gives a customer's subject key (``streams.keys.subjects.SubjectRing.key``):
        records are then sealed in envelope v3, under their DEK *and* their subject's key — the account's where the
        record names one, else the meter's. Without it, v2 (the benchmarks compare both). ``epochs(kind, id)``
        gives a meter's or account's current token epoch (``streams.keys.subjects.current_epoch``): a reading of an
        erased subject timed before its erasure becomes a dead letter with rule ``erased`` and no content."""
        self.index, self.ring, self.policy = index, ring, policy
        self.region_ring = region_ring
        self.subjects, self.epochs = subjects, epochs
        self.max_message_bytes = max_message_bytes
        self.clock = clock
        self._reading_version = UNSIGNED_VERSION
        self._bill_version = max(schemas.versions("bill"))
        names = [[f["name"] for f in schemas.get("reading", v).fields] for v in (UNSIGNED_VERSION, SIGNED_VERSION)]
        if max(schemas.versions("reading")) != SIGNED_VERSION or names[1] != names[0] + ["device"]:
            # seal_readings writes v2 bodies, and v3 = v2 + device; a new version needs a new writer
            raise RuntimeError("Sealer writes reading v2 (+ device: v3) bodies; update seal_readings for the new schema")
        self._times: dict[str, tuple[float, str]] = {}  # ts text -> (epoch, UTC ISO), see check_reading
        # meter id -> (token, Avro id, Avro token, key, erased until); the token is the current epoch's, and readings
        # timed at or before "erased until" (epoch seconds; -inf: never erased) are not sealed again
        self._meters: dict[str, tuple[str, bytes, bytes, bytes, float]] = {}
        self._accounts: dict[str | None, tuple[str | None, bytes, bytes, float]] = {None: _NO_ACCOUNT}
        self._days: dict[int, tuple[str, str, str, bytes]] = {}  # day number -> day, month, year tokens, Avro
        self._places: dict[tuple, tuple[bytes, bytes, DekRing]] = {}  # (region, category) -> Avro bodies, ring
        self._ms: tuple[int, bytes] = (-1, b"")  # (sealed_at_ms, its Avro varint)
        self._key_hex: dict[bytes, str] = {}  # DEK id -> hex
        self._reading_id = index.reading_id_pads()

    # -- readings --------------------------------------------------------------------------------
    def reading(self, data: bytes, source: Source, state_of: Callable[[str], MeterState | None] = _no_state, *,
                key: bytes | None | object = ANY_KEY) -> Sealed | Rejected:
        """Seal a raw reading; ``state_of(meter token)`` is the meter's last accepted state, if any.

        ``key`` is the message's Kafka key: it must be the meter id, because the key picks the partition,
        and a meter's state lives in its partition (the worker always passes it; ``ANY_KEY`` skips the check).
        """
        return self.readings([data], [source], state_of, keys=None if key is ANY_KEY else [key])[0]

    def message(self, data: bytes, source: Source, state_of: Callable[[str], MeterState | None] = _no_state, *,
                key: bytes | None | object = ANY_KEY) -> Iterator[Sealed | Rejected]:
        """The outcomes of one raw readings message: one for a single reading (JSON object or Avro ``Reading``),
        one per reading of a head-end batch (JSON array or Avro ``ReadingBatch``), in order. A batch's readings are
        sealed in one ``seal_readings`` loop: a meter's later reading is checked against its earlier one.

        A batch's key is its collector id (it picks the partition), not a meter id: a ``ReadingBatch`` must
        name the same collector, and a JSON reading that carries a ``collector_id`` must too. Each reading is
        validated on its own; a bad one is a dead letter with its ``batch_index``, the rest are sealed. What
        is wrong with the whole message (size, key, no readings, not decodable) is one dead letter.
        """
        if len(data) > self.max_message_bytes or not _is_batch(data):
            yield self.reading(data, source, state_of, key=key)
            return
        collector = None
        try:
            if data[:2] == schemas.MARKER:
                try:
                    batch = schemas.decode("reading_batch", data)
                except schemas.SchemaError as exc:
                    raise InvalidInput("decode", f"Avro: {exc}") from None
                items, collector, encode = batch["readings"], batch["collector_id"], _avro_reading
            else:
                items, encode = decode_batch(data), _json_item
            if key is not ANY_KEY:
                if not key:
                    raise InvalidInput("key", "batch message has no key: key batches by collector id "
                                              "(it picks the partition)")
                key = key.decode("utf-8", "replace").strip()
                if collector is not None and collector.strip() != key:
                    raise InvalidInput("key", "message key is not the batch's collector_id")
            if not items:
                raise InvalidInput("decode", "batch holds no readings")
        except InvalidInput as exc:
            yield self.reject(data, source, exc)
            return
        outcomes: list[Any] = []
        for item in items:
            if type(item) is not dict:
                outcomes.append(InvalidInput("decode", f"batch item must be a JSON object, got {type(item).__name__}"))
            elif key is not ANY_KEY and "collector_id" in item and str(item["collector_id"]).strip() != key:
                outcomes.append(InvalidInput("key", "reading's collector_id is not the message key"))
            else:
                outcomes.append(None)
        todo = [i for i, outcome in enumerate(outcomes) if outcome is None]
        for i, outcome in zip(todo, self.seal_readings([items[i] for i in todo], state_of)):
            outcomes[i] = outcome
        for i, (item, outcome) in enumerate(zip(items, outcomes)):
            if type(outcome) is Sealed:
                yield outcome
            else:
                yield self.reject(encode(item, data), source, outcome, decoded=item if type(item) is dict else None,
                                  index=i)

    def reading_record(self, record: dict[str, Any], state_of: Callable[[str], MeterState | None] = _no_state, *,
                       key: bytes | None | object = ANY_KEY) -> Sealed:
        """Validate and seal one decoded reading (a raw message's, or one of a batch's); ``InvalidInput`` if
        it is not valid (the caller makes the dead letter)."""
        outcome = self.seal_readings([record], state_of, keys=None if key is ANY_KEY else [key])[0]
        if type(outcome) is not Sealed:
            raise outcome
        return outcome

    def readings(self, messages: list[bytes], sources: list[Source],
                 state_of: Callable[[str], MeterState | None] = _no_state, *,
                 keys: list[bytes | None] | None = None,
                 devices: list[DeviceFields | None] | None = None) -> list[Sealed | Rejected]:
        """``reading`` for many single-reading messages at once (a worker's batch of events): the same outcomes,
        in order, with the sealing done in one ``seal_readings`` loop. A meter's later reading in the list is
        checked against its earlier one, as if the caller had updated ``state_of`` between them. ``devices``: each
        message's verified device signature, or None (``seal_readings``)."""
        loads, limit = _loads, self.max_message_bytes
        decoded: list[Any] = []
        for data in messages:
            try:
                if len(data) > limit:
                    self._check_size(data)
                try:
                    record = loads(data)
                except _JSONDecodeError:
                    record = decode_raw(data, "reading")
                if type(record) is not dict:
                    record = decode_raw(data, "reading")
            except InvalidInput as exc:
                record = exc
            decoded.append(record)
        try:
            if all(type(record) is dict for record in decoded):  # the usual batch: every message decoded
                outcomes: list[Any] = self.seal_readings(decoded, state_of, keys=keys, devices=devices)
            else:
                todo = [i for i, record in enumerate(decoded) if type(record) is dict]
                outcomes = list(decoded)
                for i, outcome in zip(todo, self.seal_readings(
                        [decoded[i] for i in todo], state_of, keys=None if keys is None else [keys[i] for i in todo],
                        devices=None if devices is None else [devices[i] for i in todo])):
                    outcomes[i] = outcome
        except KeyServiceError:  # no new DEK to be had (the key service is down): not the data's fault
            raise
        except Exception:  # noqa: BLE001 - a bug met on one message's data: only that message becomes a dead letter
            outcomes = self._one_by_one(decoded, state_of, keys, devices)
        for i, outcome in enumerate(outcomes):
            if type(outcome) is not Sealed:
                record = decoded[i]
                outcomes[i] = self.reject(messages[i], sources[i], outcome,
                                          decoded=record if type(record) is dict else None)
        return outcomes

    def messages(self, messages: list[bytes], sources: list[Source],
                 state_of: Callable[[str], MeterState | None] = _no_state, *,
                 keys: list[bytes | None] | None = None,
                 devices: list[DeviceFields | None] | None = None) -> list[list[Sealed | Rejected]]:
        """``message`` for a worker's batch of raw messages: each message's outcomes, in order. A run of
        single-reading messages is sealed in one ``readings`` loop, a head-end batch message on its own; a
        meter's later reading is checked against its earlier one throughout, as if the caller had updated
        ``state_of`` after each message."""
        newer: dict[str, MeterState] = {}

        def state(meter_tok: str) -> MeterState | None:
            found = newer.get(meter_tok)
            return found if found is not None else state_of(meter_tok)

        def batched(data: bytes) -> bool:  # what ``message`` treats as a head-end batch
            return len(data) <= self.max_message_bytes and _is_batch(data)

        out: list[list[Sealed | Rejected]] = []
        i = 0
        while i < len(messages):
            j = i + 1
            if batched(messages[i]):
                found = [list(self.message(messages[i], sources[i], state, key=ANY_KEY if keys is None else keys[i]))]
            else:
                while j < len(messages) and not batched(messages[j]):
                    j += 1
                found = [[o] for o in self.readings(messages[i:j], sources[i:j], state,
                                                    keys=None if keys is None else keys[i:j],
                                                    devices=None if devices is None else devices[i:j])]
            for outcomes in found:
                for outcome in outcomes:
                    if type(outcome) is Sealed:
                        newer[outcome.record["meter_tok"]] = outcome.state
                out.append(outcomes)
            i = j
        return out

    def _one_by_one(self, decoded: list[Any], state_of: Callable[[str], MeterState | None],
                    keys: list[bytes | None] | None, devices: list[DeviceFields | None] | None = None) -> list[Any]:
        """``readings``' outcomes when sealing them together raised: each message on its own, so that an
        unexpected error costs its own message only (a dead letter with rule ``internal``), in order."""
        sealed: dict[str, MeterState] = {}

        def state(meter_tok: str) -> MeterState | None:
            return sealed.get(meter_tok) or state_of(meter_tok)

        outcomes: list[Any] = []
        for i, record in enumerate(decoded):
            if type(record) is not dict:
                outcomes.append(record)
                continue
            try:
                outcome = self.seal_readings([record], state, keys=None if keys is None else [keys[i]],
                                             devices=None if devices is None else [devices[i]])[0]
            except KeyServiceError:
                raise
            except Exception as exc:  # noqa: BLE001
                outcome = InvalidInput("internal", f"unexpected {type(exc).__name__} while sealing")
            if type(outcome) is Sealed:
                sealed[outcome.record["meter_tok"]] = outcome.state
            outcomes.append(outcome)
        return outcomes

    def seal_readings(self, records: list[dict[str, Any]], state_of: Callable[[str], MeterState | None] = _no_state,
                      *, keys: list[bytes | None] | None = None,
                      devices: list[DeviceFields | None] | None = None) -> list[Sealed | InvalidInput]:
        """The one seal path of readings: each decoded reading validated (``check_reading``'s rules) and sealed, in
        one loop; an ``InvalidInput`` in place of each reading that is not valid (the caller makes its dead
        letter). ``keys`` are the messages' Kafka keys (``check_key``), or None not to check them.

        The usual reading (plain strings and numbers, a timestamp seen before, no account or label, in range, the
        meter's newest) is accepted inline; any other goes through ``check_reading`` itself, so every rejection
        is the validator's (a test checks both agree). A meter's state is the one sealed earlier in this call, else
        ``state_of(meter token)``. A reading with a verified device signature in ``devices`` is sealed as reading
        schema v3 (the v2 body followed by the signature); one without, as v2."""
        now = self.clock()
        policy = self.policy
        max_kwh, min_ts, latest, regions = policy.max_kwh, policy.min_ts, now + policy.max_future_skew_s, policy.regions
        times, meters, accounts, places, days = self._times, self._meters, self._accounts, self._places, self._days
        rid_inner, rid_outer = self._reading_id
        version, kind_version, key_hex = self._reading_version, _KIND_VERSION["reading", self._reading_version], \
            self._key_hex
        signed_kind_version = _KIND_VERSION["reading", SIGNED_VERSION]
        no_account = accounts[None]
        subject_key = self.subjects
        sealed_at_ms = int(now * 1000)
        if sealed_at_ms != self._ms[0]:  # the varint of the sealing time, made once per millisecond
            self._ms = (sealed_at_ms, _zigzag(sealed_at_ms))
        ms = self._ms[1]
        lookup = None if state_of is _no_state else state_of
        states: dict[str, MeterState] = {}
        out: list[Sealed | InvalidInput] = []
        for n, record in enumerate(records):
            get = record.get
            meter_id, ts, kwh, register = get("meter_id"), get("ts"), get("kwh"), get("register_kwh")
            region, category, account_id = get("region"), get("category"), get("account_id")
            r = last = meter = None
            if (type(meter_id) is str and type(ts) is str and type(region) is str and type(category) is str
                    and type(kwh) in _NUMBER_TYPES and type(register) in _NUMBER_TYPES
                    and (account_id is None
                         or type(account_id) is str and 0 < len(account_id := account_id.strip()) <= 256)
                    and get("label") is None and (parsed := times.get(ts)) is not None):
                meter_id, region, category = meter_id.strip(), region.strip(), category.strip()
                meter = meters.get(meter_id) or self._meter(meter_id)
                last = states.get(meter[0])
                if last is None and lookup is not None:
                    last = lookup(meter[0])
                epoch, utc = parsed
                try:
                    kwh, register = float(kwh), float(register)
                except OverflowError:
                    kwh = -1.0  # (not accepted here: check_reading decides)
                if (0 <= kwh <= max_kwh and 0 <= register < _INF and min_ts <= epoch <= latest and region in regions
                        and 0 < len(meter_id) <= 256 and 0 < len(region) <= 256 and 0 < len(category) <= 256
                        and (last is None or (epoch > last[0] and register >= last[1]))):
                    r = _new_tuple(Reading, (meter_id, utc, epoch, kwh, register, region, category, account_id, None))
            try:
                if r is None:  # anything unusual: the validator itself
                    if meter is None:
                        meter_id = get("meter_id")
                        if isinstance(meter_id, (str, int)) and not isinstance(meter_id, bool):
                            meter = meters.get(str(meter_id)) or self._meter(str(meter_id))
                    if meter is not None and last is None:
                        last = states.get(meter[0])
                        if last is None and lookup is not None:
                            last = lookup(meter[0])
                    try:
                        r = check_reading(record, policy=policy, now=now, last=last, times=times)
                    except InvalidInput:
                        if self._erased(record, meter):  # an erased subject's reading: never sealed, even in dlq
                            raise _ERASED from None
                        raise
                    meter_id, region, category, epoch, register = r[0], r[5], r[6], r[2], r[4]
                    meter = meters.get(meter_id) or self._meter(meter_id)
                if keys is not None:
                    try:
                        check_key(keys[n], meter_id)
                    except InvalidInput:
                        if self._erased(record, meter):  # (nor for a wrong message key)
                            raise _ERASED from None
                        raise
            except InvalidInput as exc:
                out.append(exc)
                continue
            ts, label = r[1], r[8]
            account = no_account if r[7] is None else accounts.get(r[7]) or self._account(r[7])
            if epoch <= meter[4] or epoch <= account[3]:
                out.append(_ERASED)
                continue
            place = places.get((region, category)) or self._place(region, category)
            day = int(epoch // 86400)
            dates = days.get(day) or self._dates(day)
            meter_tok, account_tok = meter[0], account[0]
            state = last if last is not None and last[0] >= epoch else _new_tuple(MeterState, (epoch, register))
            states[meter_tok] = state
            # the record id (``BlindIndex.reading_id``): HMAC from its key's pads, "reading|" already hashed in
            h = rid_inner.copy()
            h.update(f"{meter_id}|{ts}".encode())
            o = rid_outer.copy()
            o.update(h.digest())
            record_id = o.hexdigest()[:_TOKEN_HEX]
            rid = record_id.encode()
            body = b"".join((meter[1], _LENGTHS[len(ts)], ts.encode(), _DOUBLES.pack(r[3], register), place[0],
                             account[1], b"\x00" if label is None else b"\x02" + _avro_string(label)))
            if devices is not None and (device := devices[n]) is not None:
                body += _device_avro(device)
                v, kv = SIGNED_VERSION, signed_kind_version
            else:
                v, kv = version, kind_version
            aad = (f"meterseal/record/v1|{record_id}|reading|{v}|{region}|{category}|{meter_tok}|"
                   f"{account_tok or ''}|{dates[0]}|{dates[1]}|{dates[2]}").encode()
            try:
                if subject_key is None:
                    envelope = place[2].seal_record(body, aad, rid)
                elif account_tok is None:
                    envelope = place[2].seal_record_v3(body, aad, rid, subject_key(meter_tok, "meter"))
                else:
                    envelope = place[2].seal_record_v3(body, aad, rid, subject_key(account_tok, "account"))
            except SubjectErased:  # erased since this worker last read the fence (it does every 2 s)
                out.append(_ERASED)
                continue
            key_bytes = envelope[1:_KEY_ID_END]
            key_id = key_hex.get(key_bytes) or self._key_id(key_bytes)
            size = len(envelope)
            out.append(_new_tuple(Sealed, (meter[3], {
                "format": SEALED_FORMAT, "record_id": record_id, "kind": "reading", "schema_version": v,
                "key_id": key_id, "region": region, "category": category, "meter_tok": meter_tok,
                "account_tok": account_tok, "day_tok": dates[0], "month_tok": dates[1], "year_tok": dates[2],
                "envelope": envelope, "sealed_at_ms": sealed_at_ms}, state, r, b"".join((
                    _FORMAT_ID, rid, kv, _KEY_ID_LEN, key_id.encode(), place[1], meter[2], account[2],
                    dates[3], _LENGTHS[size] if size < 1024 else _zigzag(size), envelope, ms)))))
        return out

    def bill(self, data: bytes, source: Source) -> Sealed | Rejected:
        try:
            self._check_size(data)
            bill = check_bill(decode_raw(data, "bill"))
        except InvalidInput as exc:
            return self.reject(data, source, _ERASED if self._bill_erased(data) else exc)
        day = dt.date.fromisoformat(bill["date"]).toordinal() - _EPOCH_ORDINAL
        meter, account = self._meter(bill["meter_no"]), self._account(bill["account_id"] or None)
        if day * 86400 <= max(meter[4], account[3]):
            return self.reject(data, source, _ERASED)
        try:
            return self._seal("bill", self.index.record_id("bill", bill["bill_no"]), self._bill_version,
                              schemas.encode_body(schemas.get("bill"), bill), self.clock(), day, meter, account,
                              self._place(bill["region"], bill["category"]), bill["region"], bill["category"], None,
                              None)
        except SubjectErased:  # erased since this worker last read the fence
            return self.reject(data, source, _ERASED)

    def record(self, kind: str, record_id: str, body: bytes, *, meter_id: str, account_id: str | None,
               region: str | None, category: str | None, day: int, version: int | None = None) -> Sealed:
        """Seal a derived record of a meter (a per-meter rollup, ``streams.rollups``) exactly as its readings are
        sealed: the same ``_seal`` path, tokens, region DEK ring and (with envelope v3) subject key of the meter's
        account, else of the meter. ``body`` is the Avro body of schema ``kind``; ``day`` the day since 1970-01-01
        (UTC) the record is tokenized by. Its ``Sealed.body`` is empty (derived records go to the store, not a
        topic)."""
        return self._seal(kind, record_id, version or max(schemas.versions(kind)), body, self.clock(), day,
                          self._meter(meter_id), self._account(account_id), self._place(region, category), region,
                          category, None, None)

    # -- the one seal path -------------------------------------------------------------------------
    def _seal(self, kind: str, record_id: str, version: int, body: bytes, now: float, day: int,
              meter: tuple[str, bytes, bytes, bytes, float], account: tuple[str | None, bytes, bytes, float],
              place: tuple[bytes, bytes, DekRing], region: str | None, category: str | None,
              state: MeterState | None, reading: Reading | None) -> Sealed:
        """Seal one record's Avro ``body``: ``meter``, ``account`` and ``place`` are cache entries (``_meter``,
        ``_account``, ``_place``), ``day`` the record's day since 1970-01-01 (UTC)."""
        dates = self._days.get(day) or self._dates(day)
        meter_tok, account_tok = meter[0], account[0]
        aad = (f"meterseal/record/v1|{record_id}|{kind}|{version}|{region or ''}|{category or ''}|{meter_tok}|"
               f"{account_tok or ''}|{dates[0]}|{dates[1]}|{dates[2]}").encode()
        rid = record_id.encode()
        if self.subjects is None:
            envelope = place[2].seal_record(body, aad, rid)
        elif account_tok is None:
            envelope = place[2].seal_record_v3(body, aad, rid, self.subjects(meter_tok, "meter"))
        else:
            envelope = place[2].seal_record_v3(body, aad, rid, self.subjects(account_tok, "account"))
        key_bytes = envelope[1:_KEY_ID_END]
        key_id = self._key_hex.get(key_bytes) or self._key_id(key_bytes)
        sealed_at_ms = int(now * 1000)
        if sealed_at_ms != self._ms[0]:  # the varint of the sealing time, made once per millisecond
            self._ms = (sealed_at_ms, _zigzag(sealed_at_ms))
        record = {"format": SEALED_FORMAT, "record_id": record_id, "kind": kind, "schema_version": version,
                  "key_id": key_id, "region": region, "category": category, "meter_tok": meter_tok,
                  "account_tok": account_tok, "day_tok": dates[0], "month_tok": dates[1], "year_tok": dates[2],
                  "envelope": envelope, "sealed_at_ms": sealed_at_ms}
        n = len(envelope)
        kind_version = _KIND_VERSION.get((kind, version))  # None: a kind no sealed topic carries (``record``)
        encoded = b"" if kind_version is None else b"".join((
            _FORMAT_ID, rid, kind_version, _KEY_ID_LEN, key_id.encode(), place[1], meter[2], account[2], dates[3],
            _LENGTHS[n] if n < 1024 else _zigzag(n), envelope, self._ms[1]))
        return _new_tuple(Sealed, (meter[3], record, state, reading, encoded))

    # -- caches of tokens and their Avro encodings --------------------------------------------------
    def _key_id(self, key_bytes: bytes) -> str:
        if len(self._key_hex) >= 64:
            self._key_hex.clear()
        hit = self._key_hex[key_bytes] = key_bytes.hex()
        return hit

    def _meter(self, meter_id: str) -> tuple[str, bytes, bytes, bytes, float]:
        """(token, Avro of the id, Avro of the token, the token as the message key, erased until)."""
        hit = self._meters.get(meter_id)
        if hit is None:
            if len(self._meters) >= CACHE_SIZE:
                self._meters.clear()
            token, erased_until = self._token("meter", meter_id)
            hit = self._meters[meter_id] = (token, _avro_string(meter_id), _avro_string(token), token.encode(),
                                            erased_until)
        return hit

    def _account(self, account_id: str | None) -> tuple[str | None, bytes, bytes, float]:
        hit = self._accounts.get(account_id)
        if hit is None:
            if len(self._accounts) >= CACHE_SIZE:
                self._accounts.clear()
                self._accounts[None] = _NO_ACCOUNT
            token, erased_until = self._token("account", account_id)
            hit = self._accounts[account_id] = (token, _avro_optional(account_id), _avro_optional(token), erased_until)
        return hit

    def _token(self, kind: str, subject_id: str) -> tuple[str, float]:
        """A meter's or account's token of its current epoch, and until when earlier epochs were erased."""
        if self.epochs is None:
            return (self.index.meter if kind == "meter" else self.index.account)(subject_id), _NEVER
        epoch = self.epochs(kind, subject_id)
        return epoch.token, epoch.erased_until

    def erased_rejection(self, record: dict[str, Any]) -> InvalidInput | None:
        """The ``erased`` dead letter for a decoded reading of an erased subject timed before its erasure, else None:
        for a step before this one that refuses a reading itself (the device check), so that its dead letter keeps
        nothing of an erased customer's either."""
        meter_id = record.get("meter_id")
        known = isinstance(meter_id, (str, int)) and not isinstance(meter_id, bool) and str(meter_id).strip()
        return _ERASED if self._erased(record, self._meter(str(meter_id).strip()) if known else None) else None

    def _erased(self, record: dict[str, Any], meter: tuple | None) -> bool:
        """Whether a reading the validator refused belongs to an erased subject and is timed before its erasure: then
        its dead letter must not keep it either."""
        until = meter[4] if meter is not None else _NEVER
        account_id = record.get("account_id")
        if type(account_id) is str and 0 < len(account_id.strip()) <= 256:
            account_id = account_id.strip()
            until = max(until, (self._accounts.get(account_id) or self._account(account_id))[3])
        if until == _NEVER:
            return False
        try:
            return _parse_ts(record.get("ts")).timestamp() <= until
        except InvalidInput:
            return False

    def _bill_erased(self, data: bytes) -> bool:
        """Whether a bill the validator refused names an erased meter or account and is dated before its erasure (as
        ``_erased`` for readings): then its dead letter must not keep it either."""
        try:
            fields = {_BILL_BY_HEADER.get(k, k): v for k, v in decode_raw(data, "bill").items()}
            day = dt.date.fromisoformat(str(fields.get("date")).strip()).toordinal() - _EPOCH_ORDINAL
        except (InvalidInput, ValueError):
            return False
        until = _NEVER
        for name, cached in (("meter_no", self._meter), ("account_id", self._account)):
            value = fields.get(name)
            if isinstance(value, (str, int)) and not isinstance(value, bool) and 0 < len(str(value).strip()) <= 256:
                until = max(until, cached(str(value).strip())[-1])
        return until != _NEVER and day * 86400 <= until

    def forget(self, erased: Callable[[str], bool]) -> int:
        """Drop cached meters and accounts whose token ``erased(token)`` says was erased: their next reading asks
        ``epochs`` again and gets the next epoch. Returns how many."""
        gone = 0
        for cache in (self._meters, self._accounts):
            # (a copy first, and pop: the rollups' Sealer is used by the store thread while the worker forgets)
            for key in [k for k, v in list(cache.items()) if k is not None and erased(v[0])]:
                gone += cache.pop(key, None) is not None
        return gone

    def _dates(self, day: int) -> tuple[str, str, str, bytes]:
        hit = self._days.get(day)
        if hit is None:
            if len(self._days) >= CACHE_SIZE:
                self._days.clear()
            tokens = self.index.date_tokens(dt.date.fromordinal(_EPOCH_ORDINAL + day))
            hit = self._days[day] = (tokens.day, tokens.month, tokens.year,
                                     b"".join(_avro_string(t) for t in (tokens.day, tokens.month, tokens.year)))
        return hit

    def _place(self, region: str | None, category: str | None) -> tuple[bytes, bytes, DekRing]:
        """(Avro of region and category in a reading body, in a sealed record, the region's DEK ring)."""
        hit = self._places.get((region, category))
        if hit is None:
            if len(self._places) >= CACHE_SIZE:
                self._places.clear()
            ring = self.region_ring(region or "") if self.region_ring else self.ring
            in_reading = b"" if region is None or category is None else _avro_string(region) + _avro_string(category)
            hit = self._places[(region, category)] = (in_reading, _avro_optional(region) + _avro_optional(category),
                                                      ring)
        return hit

    # -- dead letters ------------------------------------------------------------------------------
    def reject(self, data: bytes, source: Source, exc: InvalidInput, *, decoded: dict[str, Any] | None = None,
               index: int | None = None) -> Rejected:
        """A dead letter of ``data`` (a whole message, or the reading at ``index`` of a batch message)."""
        # keyed id of (where, what): a redelivery maps to the same dead letter, a reused offset after a
        # broker restart does not
        where = source.id if index is None else f"{source.id}#{index}"
        dlq_id = self.index.record_id("dlq", where, hashlib.sha256(data).hexdigest())
        if exc.rule == "erased":
            data = b""  # an erased subject's reading: the dead letter says one came, and holds nothing of it
        record = {
            "format": DLQ_FORMAT, "dlq_id": dlq_id, "source_topic": source.topic,
            "source_partition": source.partition, "source_offset": source.offset, "reason": exc.reason,
            "rule": exc.rule, "key_id": "", "envelope": self.ring.seal(data, aad=dlq_aad(dlq_id)),
            "received_at_ms": int(self.clock() * 1000), "batch_index": index,
        }
        record["key_id"] = env.key_id_of(record["envelope"]).hex()
        return Rejected(where.encode(), record, decoded)

    def _check_size(self, data: bytes) -> None:
        if len(data) > self.max_message_bytes:
            raise InvalidInput("size", f"message of {len(data)} bytes exceeds {self.max_message_bytes}")


_DOUBLES = struct.Struct("<dd")
_NEVER = float("-inf")
_NO_ACCOUNT = (None, b"\x00", b"\x00", _NEVER)
_ERASED = InvalidInput("erased", "the subject's data was erased; readings timed before the erasure are not sealed again")
_new_tuple = tuple.__new__  # a NamedTuple made without its Python-level __new__ (hot path)
_TOKEN_HEX = 2 * TOKEN_BYTES
_NUMBER_TYPES = (float, int)
_INF = float("inf")
_BATCH_FINGERPRINT = schemas.get("reading_batch").fingerprint


def _is_batch(data: bytes) -> bool:
    """A head-end batch message: a JSON array, or Avro written with the ``reading_batch`` schema."""
    if data[:2] == schemas.MARKER:
        return data[2:10] == _BATCH_FINGERPRINT
    return data.lstrip()[:1] == b"["


def decode_batch(data: bytes) -> list[Any]:
    """The items of a JSON-array batch message (``InvalidInput`` rule ``decode`` if it is not one)."""
    try:
        items = _loads(data)
    except _JSONDecodeError:
        items = _json_loads(data)  # NaN, Infinity, deep nesting: json's verdict, as for single readings
    if not isinstance(items, list):
        raise InvalidInput("decode", "a batch message must be a JSON array")
    return items


def _json_item(item: Any, message: bytes) -> bytes:
    """The bytes a batch item's dead letter seals: the item as JSON (the whole message if it cannot be)."""
    try:
        return json.dumps(item).encode()
    except (ValueError, TypeError, RecursionError):
        return message


def _avro_reading(item: Any, message: bytes) -> bytes:
    try:
        return schemas.encode("reading", item)
    except schemas.SchemaError:
        return message


_KEY_ID_LEN = _zigzag(2 * env.KEY_ID_LEN)
# a SealedRecord's kind (enum) and schema version, which follow its format and record id
_KIND_VERSION = {(kind, v): _zigzag(i) + _zigzag(v) for i, kind in enumerate(schemas.get("sealed").fields[2]["type"]["symbols"])
                 for v in schemas.versions(kind)}
_FORMAT_ID = _zigzag(SEALED_FORMAT) + _zigzag(2 * TOKEN_BYTES)  # format, then the record id's length (a token)
_KEY_ID_END = 1 + env.KEY_ID_LEN


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
        self._key = env.FixedKey(DataKey(key_id, state_key))  # version-1 envelopes, one AES-GCM object
        self._aad_prefix, self._pack, self._unpack = aad_prefix, pack, unpack

    def encode(self, state: Any, meter_tok: str) -> bytes:
        return self._key.seal(self._pack(state), aad=self._aad_prefix + meter_tok.encode())

    def decode(self, blob: bytes | None, meter_tok: str) -> Any:
        if blob is None:
            return None
        return self._unpack(self._key.open(blob, aad=self._aad_prefix + meter_tok.encode()))


def derive_state_key(index_root: bytes) -> bytes:
    return _primitives.hkdf_sha256(index_root, info=b"meterseal/validator-state/v1")
