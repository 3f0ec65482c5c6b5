import io

import fastavro
import pytest
from hypothesis import given, settings, strategies as st

import schemas

READING = {"meter_id": "m-1", "ts": "2024-01-01T00:15:00+00:00", "kwh": 0.25, "register_kwh": 10.5,
           "region": "north", "category": "Domestic"}


def test_every_schema_file_parses_and_has_a_unique_fingerprint():
    seen = {}
    for name in schemas.names():
        for version in schemas.versions(name):
            s = schemas.get(name, version)
            assert len(s.fingerprint) == 8
            assert s.fingerprint not in seen, f"{name} v{version} collides with {seen.get(s.fingerprint)}"
            seen[s.fingerprint] = (name, version)
    assert {"reading", "bill", "sealed", "dead_letter", "alert", "checkpoint", "wrapped_key"} <= set(schemas.names())


def test_bill_schema_covers_all_17_seed_columns(seed_csv):
    header = seed_csv.read_text().splitlines()[0].split(",")
    csv_attrs = [f["csv"] for f in schemas.get("bill").fields if "csv" in f]
    assert csv_attrs == header and len(header) == 17


def test_round_trip_under_newest_version():
    raw = schemas.encode("reading", {**READING, "account_id": "A-9", "label": None})
    assert schemas.decode("reading", raw) == {**READING, "account_id": "A-9", "label": None, "device": None}


def test_v1_records_read_under_v2_with_defaults():
    """Schema evolution: a producer still on v1 is read by a worker on v2."""
    v1 = schemas.encode("reading", READING, version=1)
    assert schemas.writer_of(v1).version == 1
    assert schemas.decode("reading", v1) == {**READING, "account_id": None, "label": None, "device": None}


def test_v1_reader_can_read_v2_bodies_by_resolution():
    """And backwards: v2 bodies resolve to the v1 reader schema, dropping the new fields."""
    body = schemas.encode_body(schemas.get("reading", 2), {**READING, "account_id": "x", "label": "spike"})
    assert schemas.decode_body(body, schemas.get("reading", 2), schemas.get("reading", 1)) == READING


def test_single_object_encoding_matches_the_avro_spec():
    raw = schemas.encode("reading", READING, version=1)
    parsed = schemas.get("reading", 1).parsed
    # fastavro's own reader of the spec's single-object encoding agrees with ours
    assert raw[:2] == b"\xc3\x01"
    assert fastavro.schemaless_reader(io.BytesIO(raw[10:]), parsed, parsed) == READING


@pytest.mark.parametrize("data", [b"", b"\xc3\x01", b"\xc3\x01" + bytes(8) + b"xx", b"{}"])
def test_garbage_is_a_schema_error(data):
    with pytest.raises(schemas.SchemaError):
        schemas.decode("reading", data)


def test_truncated_and_trailing_bodies_are_rejected():
    raw = schemas.encode("reading", READING)
    for cut in range(10, len(raw)):
        with pytest.raises(schemas.SchemaError):
            schemas.decode("reading", raw[:cut])
    with pytest.raises(schemas.SchemaError):
        schemas.decode("reading", raw + b"\x00")


def test_wrong_record_type_is_rejected():
    with pytest.raises(schemas.SchemaError, match="expected a bill"):
        schemas.decode("bill", schemas.encode("reading", READING))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_decoder_never_raises_anything_but_schema_error(tail):
    data = schemas.MARKER + schemas.get("reading").fingerprint + tail
    try:
        schemas.decode("reading", data)
    except schemas.SchemaError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.fixed_dictionaries({
    "meter_id": st.text(max_size=30), "ts": st.text(max_size=40),
    "kwh": st.floats(allow_nan=False), "register_kwh": st.floats(allow_nan=False),
    "region": st.text(max_size=10), "category": st.text(max_size=10),
    "account_id": st.none() | st.text(max_size=20), "label": st.none() | st.text(max_size=10),
    "device": st.none() | st.fixed_dictionaries({"alg": st.sampled_from(["ES256", "Ed25519"]), "kid": st.text(max_size=64),
                                                 "seq": st.integers(0, 2**63 - 1), "sig": st.binary(max_size=72),
                                                 "payload": st.binary(max_size=300)})}))
def test_fast_reader_equals_fastavro(record):
    for version in schemas.versions("reading"):
        writer = schemas.get("reading", version)
        body = schemas.encode_body(writer, {k: v for k, v in record.items() if k in {f["name"] for f in writer.fields}})
        assert schemas.fast_reader("reading", version)(body) == schemas.decode_body(body, writer, schemas.get("reading"))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=80))
def test_fast_reader_raises_only_schema_error_on_garbage(body):
    try:
        schemas.fast_reader("reading", 2)(body)
    except schemas.SchemaError:
        pass


def test_fast_reader_reads_bills_like_fastavro():
    bill = {"name": "A", "address": "B", "account_id": "1", "phone_no": "2", "meter_no": "3", "date": "2023-03-04",
            "time": "10:00:00", "bill_no": "7", "max_demand": 1.5, "previous_unit": 10, "present_unit": 2**40,
            "billed_unit": -5, "due_date": "2023-03-20", "total_due": 9.25, "sanctioned_load": 2.0,
            "fixed_amount": 1.0, "category": "Domestic", "region": None}
    body = schemas.encode_body(schemas.get("bill"), bill)
    assert schemas.fast_reader("bill", 1)(body) == schemas.decode_body(body, schemas.get("bill")) == bill


def _fastavro_body(schema, record) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema.parsed, record, strict_allow_default=True)
    return buf.getvalue()


_SEALED = st.fixed_dictionaries({
    "format": st.integers(-2**31, 2**31 - 1), "record_id": st.text(max_size=50), "kind": st.sampled_from(["reading", "bill"]),
    "schema_version": st.integers(-2**31, 2**31 - 1), "key_id": st.text(max_size=40),
    "region": st.none() | st.text(max_size=10), "category": st.none() | st.text(max_size=10),
    "meter_tok": st.text(), "account_tok": st.none() | st.text(), "day_tok": st.text(), "month_tok": st.text(),
    "year_tok": st.text(), "envelope": st.binary(max_size=300), "sealed_at_ms": st.integers(-2**63, 2**63 - 1)})


@settings(max_examples=300, deadline=None)
@given(_SEALED, st.sets(st.sampled_from(["region", "category", "account_tok"])))
def test_fast_writer_writes_the_bytes_fastavro_writes(record, left_out):
    """encode_body's fast path (flat records) is byte-for-byte fastavro, also for fields left to their default."""
    record = {k: v for k, v in record.items() if k not in left_out}
    schema = schemas.get("sealed")
    assert schemas._fast_writer("sealed", 1) is not None  # the hot path really is the fast one
    assert schemas.encode_body(schema, record) == _fastavro_body(schema, record)


@pytest.mark.parametrize("change", [{"format": "1"}, {"sealed_at_ms": 1.5}, {"kind": "gas"}, {"envelope": "text"},
                                    {"record_id": None}, {"format": True}])
def test_fast_writer_leaves_odd_values_to_fastavro(change):
    """A value of another type takes fastavro's path: the same error (or the same bytes) as before."""
    record = {"format": 1, "record_id": "r", "kind": "reading", "schema_version": 1, "key_id": "k", "meter_tok": "m",
              "day_tok": "d", "month_tok": "m", "year_tok": "y", "envelope": b"e", "sealed_at_ms": 1, **change}
    schema = schemas.get("sealed")
    try:
        expected = _fastavro_body(schema, record)
    except Exception:  # noqa: BLE001 - whatever fastavro raises becomes a SchemaError
        with pytest.raises(schemas.SchemaError):
            schemas.encode_body(schema, record)
    else:
        assert schemas.encode_body(schema, record) == expected


def test_fast_writer_missing_required_field_is_a_schema_error():
    with pytest.raises(schemas.SchemaError):
        schemas.encode_body(schemas.get("sealed"), {"format": 1})


def test_the_batch_record_type_is_the_sealed_record():
    """sealed_batch.v1 carries SealedRecord inline: it must stay the newest sealed schema, field for field."""
    import json

    inline = schemas.get("sealed_batch").parsed["fields"][0]["type"]["items"]
    assert json.dumps(inline["fields"], sort_keys=True) == json.dumps(schemas.get("sealed").parsed["fields"], sort_keys=True)
