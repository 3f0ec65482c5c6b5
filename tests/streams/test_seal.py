import json

import pytest
from hypothesis import given, settings, strategies as st

import schemas
from streams.crypto import envelope
from streams.exceptions import InvalidEnvelope
from streams.seal import Rejected, Sealed, Source, StateCodec, dlq_aad, record_aad
from streams.unseal import open_record
from streams.validate import MeterState

from .test_validate import GOOD, SEED_ROW

SRC = Source("readings.raw", 2, 41)


def keys_of(made):
    return {k.key_id: k for k in made}


def test_reading_seals_and_opens(sealer, made_keys, index):
    out = sealer.reading(json.dumps(GOOD).encode(), SRC)
    assert isinstance(out, Sealed)
    rec = out.record
    assert rec["meter_tok"] == index.meter("m1") and out.key == rec["meter_tok"].encode()
    assert rec["day_tok"] == index.day("2024-03-01") and rec["record_id"] == index.record_id("reading", "m1", "2024-03-01T10:00:00+00:00")
    assert rec["key_id"] == made_keys[0].key_hex
    # the sealed record is a valid Avro record of the sealed schema
    assert schemas.decode("sealed", out.encode()) == rec
    plain = open_record(rec, keys_of(made_keys).__getitem__, index)
    assert plain["meter_id"] == "m1" and plain["kwh"] == 0.4


def test_no_personal_field_in_clear(sealer, made_keys):
    out = sealer.bill(json.dumps(SEED_ROW).encode(), Source("bills.raw", 0, 0))
    encoded = out.encode()
    for secret in ("Miraya Keer", "Chahal Street", "7849510324", "1503927654", "65849108", "194741"):
        assert secret.encode() not in encoded


def test_redelivery_gets_the_same_record_id(sealer):
    a = sealer.reading(json.dumps(GOOD).encode(), SRC)
    b = sealer.reading(json.dumps(GOOD).encode(), Source("readings.raw", 2, 99))
    assert a.record["record_id"] == b.record["record_id"] and a.record["envelope"] != b.record["envelope"]


@pytest.mark.parametrize("column, value", [("region", "south"), ("category", "Industrial"), ("kind", "bill"),
                                           ("day_tok", "0" * 32), ("schema_version", 1), ("record_id", "f" * 32)])
def test_relabelled_rows_fail_to_open(sealer, made_keys, index, column, value):
    rec = dict(sealer.reading(json.dumps(GOOD).encode(), SRC).record)
    rec[column] = value
    with pytest.raises(InvalidEnvelope):
        open_record(rec, keys_of(made_keys).__getitem__, index)


def test_envelope_moved_to_another_row_fails(sealer, made_keys, index):
    a = sealer.reading(json.dumps(GOOD).encode(), SRC).record
    b = sealer.reading(json.dumps({**GOOD, "meter_id": "m2"}).encode(), SRC).record
    with pytest.raises(InvalidEnvelope):
        open_record({**b, "envelope": a["envelope"]}, keys_of(made_keys).__getitem__, index)


def test_row_whose_ids_were_swapped_with_matching_aad_is_caught_by_the_index_check(sealer, made_keys, index):
    """Even a forger who rebuilt the AAD cannot, without the index key, make an opened record lie about its id."""
    a = sealer.reading(json.dumps(GOOD).encode(), SRC).record
    keys = keys_of(made_keys)
    dek = keys[bytes.fromhex(a["key_id"])]
    forged = {**a, "record_id": "0" * 32}
    body = envelope.open_with(keys, a["envelope"], aad=record_aad(a), record_id=a["record_id"])
    forged["envelope"] = envelope.seal_record(dek, forged["record_id"], body, aad=record_aad(forged))  # an insider
    open_record(forged, keys.__getitem__)  # opens without the index check...
    with pytest.raises(InvalidEnvelope):
        open_record(forged, keys.__getitem__, index)  # ...but not with it


def test_invalid_input_becomes_a_dead_letter_with_sealed_original(sealer, made_keys):
    bad = json.dumps({**GOOD, "kwh": -1}).encode()
    out = sealer.reading(bad, SRC)
    assert isinstance(out, Rejected)
    rec = out.record
    assert (rec["rule"], rec["reason"], rec["source_offset"]) == ("kwh", "must be >= 0", 41)
    assert bad not in out.encode() and b"m1" not in out.encode()
    assert envelope.open_with(keys_of(made_keys), rec["envelope"], aad=dlq_aad(rec["dlq_id"])) == bad
    assert schemas.decode("dead_letter", out.encode()) == rec


def test_oversized_messages_are_dead_letters(sealer):
    out = sealer.reading(b"{" + b" " * 70_000 + b"}", SRC)
    assert isinstance(out, Rejected) and out.record["rule"] == "size"


def test_state_is_looked_up_by_meter_token(sealer, index):
    asked = []
    sealer.reading(json.dumps(GOOD).encode(), SRC, lambda tok: asked.append(tok))
    assert asked == [index.meter("m1")]


def test_state_codec_round_trip_and_binding():
    codec = StateCodec(bytes(32))
    blob = codec.encode(MeterState(1.5, 2.5), "tok-a")
    assert codec.decode(blob, "tok-a") == MeterState(1.5, 2.5)
    assert codec.decode(None, "tok-a") is None
    with pytest.raises(InvalidEnvelope):
        codec.decode(blob, "tok-b")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_sealer_never_raises_on_data(sealer_bytes):
    from streams.crypto.envelope import DekRing
    from streams.seal import Sealer
    from streams.crypto.tokens import BlindIndex
    from streams.validate import Policy

    s = Sealer(BlindIndex(bytes(32)), DekRing(10**6, 1e9, lambda k: None), Policy(frozenset({"north"})))
    assert isinstance(s.reading(sealer_bytes, SRC), (Sealed, Rejected))
    assert isinstance(s.bill(sealer_bytes, SRC), (Sealed, Rejected))


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["meter_id", "ts", "kwh", "register_kwh", "region", "category", "x"]),
                       st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=30))))
def test_sealer_never_raises_on_json_shaped_data(record):
    from streams.crypto.envelope import DekRing
    from streams.seal import Sealer
    from streams.crypto.tokens import BlindIndex
    from streams.validate import Policy

    s = Sealer(BlindIndex(bytes(32)), DekRing(10**6, 1e9, lambda k: None), Policy(frozenset({"north"})))
    assert isinstance(s.reading(json.dumps(record).encode(), SRC), (Sealed, Rejected))


def test_open_many_equals_open_record_and_fails_closed(sealer, made_keys, index):
    from streams.unseal import open_many

    recs = [sealer.reading(json.dumps({**GOOD, "ts": f"2024-03-01T10:{i:02d}:00Z", "register_kwh": 12.5 + i}).encode(),
                           SRC).record for i in range(20)]
    keys = keys_of(made_keys).__getitem__
    assert open_many(recs, keys, index) == [open_record(r, keys, index) for r in recs]
    bad = dict(recs[3], region="south")
    with pytest.raises(InvalidEnvelope):
        open_many(recs[:3] + [bad], keys, index)
    with pytest.raises(InvalidEnvelope):
        open_many(recs, lambda k: (_ for _ in ()).throw(KeyError(k)))


def test_batch_messages_split_by_count_and_size_and_read_back_in_order():
    from streams.sealed_batch import batch_messages, sealed_records

    recs = [{"format": 1, "record_id": f"r{i}", "kind": "reading", "schema_version": 2, "key_id": "k",
             "meter_tok": "m", "day_tok": "d", "month_tok": "mo", "year_tok": "y", "envelope": b"x" * 1000,
             "sealed_at_ms": i} for i in range(10)]
    by_size = batch_messages(recs, max_bytes=3 * 1200)
    assert [len(sealed_records(m)) for m in by_size] == [3, 3, 3, 1]
    assert [r["record_id"] for m in by_size for r in sealed_records(m)] == [f"r{i}" for i in range(10)]
    assert [len(sealed_records(m)) for m in batch_messages(recs, max_records=4)] == [4, 4, 2]
    assert batch_messages([]) == []


def test_a_single_sealed_record_still_reads_and_anything_else_is_a_schema_error():
    import pytest

    import schemas
    from streams.sealed_batch import sealed_records

    rec = {"format": 1, "record_id": "r", "kind": "bill", "schema_version": 1, "key_id": "k", "meter_tok": "m",
           "day_tok": "d", "month_tok": "mo", "year_tok": "y", "envelope": b"x", "sealed_at_ms": 0}
    assert [r["record_id"] for r in sealed_records(schemas.encode("sealed", rec))] == ["r"]
    with pytest.raises(schemas.SchemaError):
        sealed_records(schemas.encode("sealed", rec)[:-3])
    with pytest.raises(schemas.SchemaError):
        sealed_records(b"not avro")
