"""Opening sealed records: the owner's side of ``streams.seal``.

``open_record`` opens one sealed record (a dict of its store columns), ``open_many`` a list of them and
``open_table`` an Arrow table of ``SEALED_COLUMNS`` as DuckDB returns it; with a ``BlindIndex`` each
plaintext is also checked against its row's record id and meter token. Every failure is the same
``InvalidEnvelope``: which check failed is not told.
"""

from __future__ import annotations

import io
from typing import Any, Callable

import fastavro

import schemas
from streams.crypto import _primitives
from streams.crypto import envelope as env
from streams.crypto import record_keys
from streams.crypto.envelope import DataKey
from streams.crypto.tokens import BlindIndex
from streams.exceptions import InvalidEnvelope
from streams.keys.subjects import MAX_EPOCHS
from streams.seal import record_aad


def open_record(record: dict[str, Any], keys: Callable[[bytes], DataKey], index: BlindIndex | None = None) -> dict[str, Any]:
    """The plaintext raw record inside a sealed record (raises ``InvalidEnvelope``).

    With ``index``, also checks that the plaintext's meter and time hash to the row's record id and
    tokens, so a row whose clear columns were edited does not open as if nothing happened.
    """
    body = env.open_with(keys, record["envelope"], aad=record_aad(record), record_id=record["record_id"],
                         subjects=subjects_of(keys, record))
    kind = record["kind"]
    writer = schemas.get(kind, record["schema_version"])
    plain = schemas.decode_body(body, writer, schemas.get(kind))
    if index is not None:
        expected, meter = _identity(kind, plain, index)
        if expected != record["record_id"] or not _is_meter_token(index, meter, record["meter_tok"]):
            raise InvalidEnvelope("envelope could not be opened")
    return plain


def _identity(kind: str, plain: dict[str, Any], index: BlindIndex) -> tuple[str, str]:
    """(the record id the plaintext hashes to, its meter id)."""
    if kind == "reading":
        return index.record_id("reading", plain["meter_id"], plain["ts"]), plain["meter_id"]
    if kind == "rollup":  # streams.rollups: a meter's hour or day, named by the emission that made it
        return (index.record_id("rollup", plain["period"], plain["meter_id"], plain["start"], plain["emission"]),
                plain["meter_id"])
    return index.record_id("bill", plain["bill_no"]), plain["meter_no"]


def record_key_of(keys: Any, record: dict[str, Any]) -> bytes:
    """The record key of a stored version-2 or -3 record, derived by a keyring that holds its DEK (and, for v3, its
    subject key): what a share hands a recipient instead of any DEK. ``InvalidEnvelope`` for v1 records, or when
    a key is missing (a v3 record whose subject was erased)."""
    box = record["envelope"]
    try:
        dek = keys(env.key_id_of(box))
        subject_id = env.subject_key_id_of(box)
        subject = None if subject_id is None else keys.subject_key(subject_token(record), subject_id)
        return env.record_key_for(box, dek, record["record_id"], subject)
    except (KeyError, AttributeError) as exc:
        raise InvalidEnvelope("envelope could not be opened") from exc


def subject_token(record: dict[str, Any]) -> str:
    """The token of a record's subject: its account's where it names one, else its meter's."""
    return record.get("account_tok") or record["meter_tok"]


def subjects_of(keys: Any, record: dict[str, Any]) -> Callable[[bytes], Any] | None:
    """``subjects(subject key id)`` for one record, from a keyring that holds subject keys (the owner's
    ``Keyring`` or a ``RegionKeyring``: ``subject_key(token, key_id)``); None if it holds none (then a v3
    envelope does not open)."""
    lookup = getattr(keys, "subject_key", None)
    if lookup is None:
        return None
    token = subject_token(record)
    return lambda key_id: lookup(token, key_id)


def _is_meter_token(index: BlindIndex, meter_id: str, token: str, epochs: int = MAX_EPOCHS) -> bool:
    """Whether ``token`` is the meter's token of some epoch (a meter erased and taken by a new occupant has later
    epochs' tokens; ``streams.keys.subjects``)."""
    return any(index.meter(meter_id, e) == token for e in range(epochs))


def shown(plain: dict[str, Any]) -> dict[str, Any]:
    """An opened record as people and JSON output see it. A reading's ``device`` (reading schema v3: the meter's
    signature, verified before sealing) becomes ``device_signed`` — False marks a reading that is *not*
    device-signed — with ``device_kid`` and ``device_seq``; the signature and the signed bytes themselves are in
    the device proof (``meterseal ledger prove --device``). Anything without ``device`` is returned as is."""
    if "device" not in plain:
        return plain
    device = plain["device"]
    out = {k: v for k, v in plain.items() if k != "device"}
    out["device_signed"] = device is not None
    out["device_kid"] = None if device is None else device["kid"]
    out["device_seq"] = None if device is None else device["seq"]
    return out


def _fastavro_reader(kind: str, version: int) -> Callable[[bytes], dict[str, Any]]:
    pair = (schemas.get(kind, version).parsed, schemas.get(kind).parsed)
    return lambda body: fastavro.schemaless_reader(io.BytesIO(body), *pair)


def open_many(records: list[dict[str, Any]], keys: Callable[[bytes], DataKey],
              index: BlindIndex | None = None) -> list[dict[str, Any]]:
    """``open_record`` for many records (dicts of the sealed columns); ``open_table`` for an Arrow table."""
    boxes = [r["envelope"] for r in records]
    aads = [record_aad(r) for r in records]
    return _open_all(boxes, aads, [r["kind"] for r in records], [r["schema_version"] for r in records], keys,
                     index, [r["record_id"] for r in records], [r["meter_tok"] for r in records],
                     [subject_token(r) for r in records])


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

    meter_toks = column("meter_tok")
    subject_toks = [a or m for a, m in zip(column("account_tok"), meter_toks)]
    return _open_all(envelopes.to_pylist(), aads.to_pylist(), column("kind"), column("schema_version"), keys, index,
                     column("record_id"), meter_toks, subject_toks)


def _open_all(boxes: list[bytes | None], aads: list[bytes | None], kinds: list[str], versions: list[int],
              keys: Callable[[bytes], DataKey], index: BlindIndex | None, record_ids: list[str],
              meter_toks: list[str], subject_toks: list[str]) -> list[dict[str, Any]]:
    """The loop ``open_many`` and ``open_table`` share: one decoder per (kind, schema version); a version-1
    envelope is opened with one AES-GCM object per data key, a version-2 one under its record key, derived
    from its DEK and record id, a version-3 one under its record key derived from its DEK, its subject's key
    (``keys.subject_key(subject token, key id)``, the HKDF extract made once per pair) and its record id.
    ``aads`` are the clear columns' associated data (``record_aad``), without the envelope header. Raises
    ``InvalidEnvelope``."""
    header, nonce_end = env.HEADER_LEN, env.HEADER_LEN + _primitives.NONCE_LEN
    header2, nonce_end2 = env.HEADER_LEN_2, env.HEADER_LEN_2 + _primitives.NONCE_LEN
    header3, nonce_end3 = env.HEADER_LEN_3, env.HEADER_LEN_3 + _primitives.NONCE_LEN
    label, hmac_sha256, aes_gcm_open = record_keys.RECORD_KEY_LABEL, _primitives.hmac_sha256, _primitives.aes_gcm_open
    label3 = record_keys.RECORD_KEY_LABEL_3
    subject_key = getattr(keys, "subject_key", None)
    ciphers: dict[bytes, Any] = {}
    secrets: dict[bytes, bytes] = {}
    prks: dict[tuple[bytes, bytes], bytes] = {}  # (DEK id, subject key id) -> HKDF PRK
    decoders: dict[tuple[str, int], Callable[[bytes], dict[str, Any]]] = {}
    out = []
    for box, aad, kind, version, record_id, subject in zip(boxes, aads, kinds, versions, record_ids, subject_toks):
        if box is None or aad is None or record_id is None:
            raise InvalidEnvelope("envelope could not be opened")
        try:
            if box[0] == env.VERSION_3 and len(box) >= env.OVERHEAD_3:
                pair = (box[1:header], box[header:header + env.SUBJECT_KEY_ID_LEN])
                prk = prks.get(pair)
                if prk is None:
                    if subject_key is None:
                        raise KeyError("no subject keys")
                    secret = secrets.get(pair[0])
                    if secret is None:
                        secret = secrets[pair[0]] = keys(pair[0]).secret
                    prk = prks[pair] = record_keys.subject_prk(secret, subject_key(subject, pair[1]).secret)
                body = aes_gcm_open(hmac_sha256(prk, label3 + record_id.encode() + b"\x01"), box[header3:nonce_end3],
                                    box[nonce_end3:], box[:header3] + aad)
            elif box[0] == env.VERSION_2 and len(box) >= env.OVERHEAD_2:
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
        expected, meter = _identity(kind, plain, index)
        if expected != record_id or not _is_meter_token(index, meter, meter_tok):  # (BlindIndex caches tokens)
            raise InvalidEnvelope("envelope could not be opened")
