"""The Avro schemas of meterseal, and the one codec that reads and writes them.

The ``.avsc`` files beside this module are the source of truth. Every message meterseal
writes to a topic uses Avro *single-object encoding* (Avro spec 1.10+): the two marker
bytes ``C3 01``, the 8-byte little-endian CRC-64-AVRO fingerprint of the writer schema,
then the schemaless body. A reader finds the writer schema by its fingerprint and
resolves it against the newest version it knows, so a field added with a default never
breaks an older record.

>>> from schemas import encode, decode
>>> raw = encode("reading", {"meter_id": "m1", "ts": "2024-01-01T00:15:00+00:00",
...                          "kwh": 0.25, "register_kwh": 10.0, "region": "north",
...                          "category": "Domestic"})
>>> raw[:2]
b'\\xc3\\x01'
>>> decode("reading", raw)["account_id"] is None   # read under the newest version (v2)
True
"""

from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import fastavro
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form

MARKER = b"\xc3\x01"


class SchemaError(ValueError):
    """Bytes that are not a record of the expected schema (or of any known version of it)."""


@dataclass(frozen=True)
class Schema:
    name: str
    version: int
    parsed: dict
    fingerprint: bytes  # 8 bytes, little-endian CRC-64-AVRO, as single-object encoding wants

    @property
    def fields(self) -> list[dict]:
        return self.parsed["fields"]


@lru_cache(maxsize=None)
def _all() -> dict[str, dict[int, Schema]]:
    found: dict[str, dict[int, Schema]] = {}
    for entry in resources.files(__name__).iterdir():
        if not entry.name.endswith(".avsc"):
            continue
        name, version_tag, _ = entry.name.split(".")
        version = int(version_tag.lstrip("v"))
        raw = json.loads(entry.read_text())
        parsed = parse_schema(raw, _write_hint=False, _force=True)
        canon = to_parsing_canonical_form(raw)
        fp = int(fingerprint(canon, "CRC-64-AVRO"), 16).to_bytes(8, "little")
        found.setdefault(name, {})[version] = Schema(name, version, parsed, fp)
    return found


def names() -> list[str]:
    """The schema names shipped: ``alert``, ``bill``, ``checkpoint``, ``reading``, ..."""
    return sorted(_all())


def get(name: str, version: int | None = None) -> Schema:
    """The schema ``name`` at ``version`` (default: the newest)."""
    try:
        versions = _all()[name]
        return versions[max(versions) if version is None else version]
    except KeyError:
        raise SchemaError(f"unknown schema {name!r} version {version}") from None


def versions(name: str) -> list[int]:
    return sorted(_all()[name])


def _by_fingerprint(fp: bytes) -> Schema | None:
    for versions_ in _all().values():
        for schema in versions_.values():
            if schema.fingerprint == fp:
                return schema
    return None


def encode_body(schema: Schema, record: dict[str, Any]) -> bytes:
    """Schemaless Avro body of ``record`` (no marker, no fingerprint)."""
    buf = io.BytesIO()
    try:
        fastavro.schemaless_writer(buf, schema.parsed, record, strict_allow_default=True)
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError, struct.error) as exc:
        raise SchemaError(f"record does not match schema {schema.name} v{schema.version}: {exc}") from exc
    return buf.getvalue()


def decode_body(body: bytes, writer: Schema, reader: Schema | None = None) -> dict[str, Any]:
    """Read a schemaless body written with ``writer``, resolved to ``reader`` (default: writer)."""
    buf = io.BytesIO(body)
    try:
        record = fastavro.schemaless_reader(buf, writer.parsed, (reader or writer).parsed)
    except Exception as exc:  # fastavro raises many types on garbage: EOFError, IndexError, UnicodeDecodeError ...
        raise SchemaError(f"not a valid {writer.name} v{writer.version} body: {type(exc).__name__}") from exc
    if buf.tell() != len(body):
        raise SchemaError(f"{len(body) - buf.tell()} trailing bytes after a {writer.name} body")
    return record


def encode(name: str, record: dict[str, Any], *, version: int | None = None) -> bytes:
    """Single-object encoding of ``record`` under schema ``name`` (newest version by default)."""
    schema = get(name, version)
    return MARKER + schema.fingerprint + encode_body(schema, record)


def writer_of(data: bytes) -> Schema:
    """The schema a single-object-encoded message was written with."""
    if len(data) < 10 or data[:2] != MARKER:
        raise SchemaError("not Avro single-object encoding (missing C3 01 marker)")
    schema = _by_fingerprint(data[2:10])
    if schema is None:
        raise SchemaError("Avro message written with a schema this version of meterseal does not know")
    return schema


def decode(name: str, data: bytes) -> dict[str, Any]:
    """Decode a single-object-encoded ``name`` record, resolved to the newest version of ``name``."""
    writer = writer_of(data)
    if writer.name != name:
        raise SchemaError(f"expected a {name} record, got {writer.name}")
    return decode_body(data[10:], writer, get(name))
