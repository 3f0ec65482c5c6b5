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
    write = _fast_writer(schema.name, schema.version)
    if write is not None:
        try:
            return write(record)
        except _NotFast:
            pass  # a value the fast writer does not take as is: fastavro writes it or says what is wrong
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


# --- a fast path for the flat record bodies the store opens in bulk ---------------------------------

_DOUBLE = struct.Struct("<d")


def _long(buf: bytes, pos: int) -> tuple[int, int]:
    """A zig-zag varint at ``pos``: (value, next position)."""
    shift = result = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


@lru_cache(maxsize=None)
def fast_reader(writer_name: str, writer_version: int, reader_version: int | None = None):
    """A decoder of schemaless bodies written with one schema version and read as another, for flat
    records of strings, numbers and nullable fields (the reading and bill schemas); None when the
    schema needs fastavro. The result equals ``decode_body``'s, about 3x faster.

    >>> read = fast_reader("reading", 1, 2)
    >>> body = encode_body(get("reading", 1), {"meter_id": "m1", "ts": "t", "kwh": 0.5, "register_kwh": 2.0,
    ...                                       "region": "north", "category": "Domestic"})
    >>> read(body) == decode_body(body, get("reading", 1), get("reading", 2))
    True
    """
    writer, reader = get(writer_name, writer_version), get(writer_name, reader_version)
    if not all(_readable(f["type"]) for f in writer.fields):
        return None  # anything else: fastavro
    reader_names = [f["name"] for f in reader.fields]
    written = {f["name"] for f in writer.fields}
    defaults = {}
    for f in reader.fields:
        if f["name"] not in written:
            if "default" not in f:
                return None
            defaults[f["name"]] = f["default"]
    return _compile_reader(writer, [f["type"] for f in writer.fields], [f["name"] for f in writer.fields],
                           reader_names, defaults)


_STRING = """\
{i}b = buf[pos]
{i}if b < 0x80 and not b & 1:  # one-byte non-negative length, the usual case
{i}    end = pos + 1 + (b >> 1)
{i}    pos += 1
{i}else:
{i}    n, pos = _long(buf, pos)
{i}    if n < 0:
{i}        raise ValueError("negative string length")
{i}    end = pos + n
{i}if end > size:
{i}    raise ValueError("string runs past the end")
{i}{v} = buf[pos:end].decode()
{i}pos = end
"""
_LONG = """\
{i}b = buf[pos]
{i}if b < 0x80:
{i}    {v}, pos = (b >> 1) ^ -(b & 1), pos + 1
{i}else:
{i}    {v}, pos = _long(buf, pos)
"""
_DOUBLE_CODE = """\
{i}{v} = _unpack_double(buf, pos)[0]
{i}pos += 8
"""
_BYTES = _STRING.replace("buf[pos:end].decode()", "buf[pos:end]")
_PRIMITIVE_CODE = {"string": _STRING, "bytes": _BYTES, "long": _LONG, "int": _LONG, "double": _DOUBLE_CODE}


def _readable(avro_type: Any) -> bool:
    """A field type the compiled reader handles: a primitive of ``_PRIMITIVE_CODE``, or it or null, or a record of
    primitives or null (reading v3's ``device``)."""
    if isinstance(avro_type, str):
        return avro_type in _PRIMITIVE_CODE
    if isinstance(avro_type, list) and len(avro_type) == 2 and "null" in avro_type:
        (inner,) = [t for t in avro_type if t != "null"]
        return (isinstance(inner, str) and _readable(inner)) or (
            isinstance(inner, dict) and inner.get("type") == "record"
            and all(isinstance(f["type"], str) and _readable(f["type"]) for f in inner["fields"]))
    return False


def _field_code(avro_type: Any, v: str, indent: str) -> str:
    if isinstance(avro_type, str):
        return _PRIMITIVE_CODE[avro_type].format(i=indent, v=v)
    (inner,) = [t for t in avro_type if t != "null"]
    null = avro_type.index("null") * 2  # a union branch index is a zigzag varint: 0 -> 0x00, 1 -> 0x02
    if isinstance(inner, dict):  # a record of primitives: its fields in turn, then the dict
        names = [f["name"] for f in inner["fields"]]
        value = "".join(_field_code(f["type"], f"{v}_{j}", indent + "    ") for j, f in enumerate(inner["fields"]))
        value += f"{indent}    {v} = {{" + ", ".join(f"{n!r}: {v}_{j}" for j, n in enumerate(names)) + "}\n"
    else:
        value = _field_code(inner, v, indent + "    ")
    return (f"{indent}b = buf[pos]\n{indent}pos += 1\n{indent}if b == {null}:\n{indent}    {v} = None\n"
            f"{indent}elif b == {2 - null}:\n" + value
            + f"{indent}else:\n{indent}    raise ValueError('bad union branch')\n")


def _compile_reader(writer: Schema, types: list[Any], names: list[str], reader_names: list[str],
                    defaults: dict[str, Any]):
    """The decoder as straight-line Python made once per (writer, reader) pair: no loop, no call per field
    (the unseal path spends most of its time here). Generated only from the schemas' own field types."""
    body = "".join(_field_code(t, f"v{i}", "        ") for i, t in enumerate(types))
    index = {name: i for i, name in enumerate(names)}
    fields = ", ".join(f"{name!r}: v{index[name]}" if name in index else f"{name!r}: {defaults[name]!r}"
                       for name in reader_names)
    source = (
        "def decode(buf):\n"
        "    size = len(buf)\n"
        "    pos = 0\n"
        "    try:\n" + body +
        "    except (IndexError, ValueError, UnicodeDecodeError, struct.error) as exc:\n"
        "        raise SchemaError(f'not a valid ' + label + f' body: {type(exc).__name__}') from None\n"
        "    if pos != size:\n"
        "        raise SchemaError(f'{size - pos} trailing bytes after a ' + name + ' body')\n"
        f"    return {{{fields}}}\n")
    scope = {"_long": _long, "_unpack_double": _DOUBLE.unpack_from, "struct": struct, "SchemaError": SchemaError,
             "label": f"{writer.name} v{writer.version}", "name": writer.name}
    exec(compile(source, f"<fast_reader {writer.name} v{writer.version}>", "exec"), scope)  # noqa: S102
    return scope["decode"]


# --- a fast writer for flat records (the hot path of the seal agent) ------------------------------


class _NotFast(Exception):
    """A value the fast writer leaves to fastavro (another type, a missing field, an unknown symbol)."""


def _zigzag(n: int) -> bytes:
    n = (n << 1) ^ (n >> 63)
    if n < 0x80:
        return _BYTE[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_BYTE = [bytes([i]) for i in range(256)]


def _write_long(v: Any) -> bytes:
    if type(v) is not int or not -(1 << 63) <= v < (1 << 63):
        raise _NotFast
    return _zigzag(v)


def _write_int(v: Any) -> bytes:
    if type(v) is not int or not -(1 << 31) <= v < (1 << 31):
        raise _NotFast
    return _zigzag(v)


def _write_string(v: Any) -> bytes:
    if type(v) is not str:
        raise _NotFast
    data = v.encode("utf-8")
    return _zigzag(len(data)) + data


def _write_bytes(v: Any) -> bytes:
    if type(v) is not bytes:
        raise _NotFast
    return _zigzag(len(v)) + v


def _write_double(v: Any) -> bytes:
    if type(v) is not float:
        raise _NotFast
    return _DOUBLE.pack(v)


_PRIMITIVE_WRITERS = {"string": _write_string, "bytes": _write_bytes, "double": _write_double, "long": _write_long,
                      "int": _write_int}


def _field_writer(avro_type: Any):
    if isinstance(avro_type, str):
        return _PRIMITIVE_WRITERS.get(avro_type)
    if isinstance(avro_type, dict) and avro_type.get("type") == "enum":
        index = {symbol: _zigzag(i) for i, symbol in enumerate(avro_type["symbols"])}

        def write_enum(v: Any) -> bytes:
            try:
                return index[v]
            except (KeyError, TypeError):
                raise _NotFast from None
        return write_enum
    if isinstance(avro_type, list) and len(avro_type) == 2 and "null" in avro_type:
        (inner,) = [t for t in avro_type if t != "null"]
        write_inner = _field_writer(inner)
        if write_inner is None:
            return None
        null, value = _zigzag(avro_type.index("null")), _zigzag(1 - avro_type.index("null"))
        return lambda v: null if v is None else value + write_inner(v)
    return None


@lru_cache(maxsize=None)
def _fast_writer(name: str, version: int):
    """The encoder ``encode_body`` uses for flat records of strings, bytes, numbers, enums and nullable
    fields (every schema here but the nested ones); None when the schema needs fastavro. Its bytes equal
    fastavro's (a hypothesis test checks); any value it does not take as is goes to fastavro."""
    steps, missing = [], object()
    for f in get(name, version).fields:
        write = _field_writer(f["type"])
        if write is None:
            return None
        steps.append((f["name"], write, f.get("default", missing)))  # a field left out takes its default

    def encode(record: dict[str, Any]) -> bytes:
        values = [record.get(name, default) for name, _, default in steps]
        if missing in values:  # a field without a default is missing: fastavro says so
            raise _NotFast
        return b"".join([step[1](v) for step, v in zip(steps, values)])
    return encode
