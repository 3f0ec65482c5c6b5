"""Every malformed reading in the corpus becomes a dead letter with the expected rule and a reason,
its original bytes sealed inside; the sealer never raises on any of them."""

from __future__ import annotations

import json

import pytest

from streams.crypto import envelope
from streams.pipeline import MeterStates
from streams.seal import Rejected, Sealed, Source, StateCodec, dlq_aad

from ..corpus import BAD, CORPUS, GOOD, METER


def _run(sealer, entries):
    """Seal ``entries`` in order with per-meter state carried between them, as the worker does."""
    states = MeterStates(StateCodec(bytes(32)), {})
    out = []
    for offset, (_, key, value, _) in enumerate(entries):
        outcome = sealer.reading(value, Source("readings.raw", 0, offset), states.get, key=key)
        states.update(outcome)
        states.flush()
        out.append(outcome)
    return out


def test_corpus_covers_every_kind_the_issue_names():
    names = " ".join(name for name, *_ in BAD).lower()
    for kind in ("json", "truncated avro", "string", "nan", "infinity", "negative", "large", "future", "ancient",
                 "region", "duplicate", "rollback", "oversized", "missing key"):
        assert kind in names, kind


@pytest.mark.parametrize("entry", BAD, ids=[name for name, *_ in BAD])
def test_each_malformed_reading_is_a_dead_letter_with_its_rule(sealer, made_keys, entry):
    name, key, value, rule = entry
    outcome = _run(sealer, [*GOOD, entry])[-1]
    assert isinstance(outcome, Rejected), f"{name} was sealed"
    assert outcome.record["rule"] == rule, outcome.record["reason"]
    assert outcome.record["reason"]
    keys = {k.key_id: k for k in made_keys}
    assert envelope.open_with(keys.__getitem__, outcome.record["envelope"], aad=dlq_aad(outcome.record["dlq_id"])) == value


def test_the_whole_corpus_in_one_stream(sealer, index):
    outcomes = _run(sealer, CORPUS)
    rules = [o.record["rule"] if isinstance(o, Rejected) else None for o in outcomes]
    assert rules == [rule for *_, rule in CORPUS]
    sealed = [o for o in outcomes if isinstance(o, Sealed)]
    # the good reading and its exact redelivery: the same record, which the store keeps once
    assert len({o.record["record_id"] for o in sealed}) == 1
    assert sealed[0].record["meter_tok"] == index.meter(METER)


# --- fuzz: the decoders never raise, whatever the bytes --------------------------------------------

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

import schemas  # noqa: E402

from ..corpus import GOOD_READING, _avro  # noqa: E402

_VALID_AVRO = _avro()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0, len(_VALID_AVRO) - 1), st.integers(0, 255), st.integers(0, len(_VALID_AVRO)))
def test_mutated_avro_is_sealed_or_a_dead_letter(sealer, where, byte, cut):
    """A valid Avro reading with one byte changed, then cut short: never an exception."""
    data = bytearray(_VALID_AVRO)
    data[where] = byte
    outcome = sealer.reading(bytes(data[:cut] if cut > 10 else data), Source("readings.raw", 0, 0), key=b"CORPUS-0001")
    assert isinstance(outcome, (Sealed, Rejected))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kwh=st.floats(allow_nan=True, allow_infinity=True), register=st.floats(allow_nan=True, allow_infinity=True),
       meter=st.text(max_size=40), region=st.text(max_size=10), ts=st.text(max_size=40))
def test_avro_with_any_field_values_is_sealed_or_a_dead_letter(sealer, kwh, register, meter, region, ts):
    data = schemas.encode("reading", {**GOOD_READING, "account_id": None, "label": None, "meter_id": meter,
                                      "kwh": kwh, "register_kwh": register, "region": region, "ts": ts})
    outcome = sealer.reading(data, Source("readings.raw", 0, 0), key=meter.encode())
    assert isinstance(outcome, (Sealed, Rejected))
    if isinstance(outcome, Sealed):  # only a fully valid reading gets through
        assert outcome.reading.kwh == kwh and 0 <= kwh <= 10_000 and outcome.reading.meter_id == meter.strip()


@pytest.fixture(scope="module")
def sink_pipeline(tmp_path_factory):
    from streams.keys.owner import OwnerKeyPair
    from streams.pipeline import Pipeline
    from streams.settings import Settings
    from streams.store.segments import SegmentStore

    root = tmp_path_factory.mktemp("sink")
    return Pipeline(Settings(data_dir=root), bytes(32), OwnerKeyPair.generate().public_key, SegmentStore(root / "store"))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(st.binary(max_size=120), min_size=1, max_size=5))
def test_the_store_sink_turns_any_bytes_into_dead_letters(sink_pipeline, values):
    """What the sink agents read off the sealed topics: garbage becomes a dead letter, never a crash or a row."""
    written, rejected = sink_pipeline.store_batch("readings.sealed", [(0, i, v) for i, v in enumerate(values)])
    assert written == 0 and len(rejected) == len(values)
    assert all(r.record["rule"] == "sink" for r in rejected)


# --- head-end batch messages ------------------------------------------------------------------------

from ..corpus import BATCHES  # noqa: E402


def _run_batch(sealer, key, value):
    states = MeterStates(StateCodec(bytes(32)), {})
    out = []
    for outcome in sealer.message(value, Source("readings.raw", 1, 40), states.get, key=key):
        states.update(outcome)
        out.append(outcome)
    return out


@pytest.mark.parametrize("entry", BATCHES, ids=[name for name, *_ in BATCHES])
def test_each_batch_message_seals_its_good_readings_and_dead_letters_each_bad_one(sealer, made_keys, entry):
    name, key, value, dead, sealed = entry
    outcomes = _run_batch(sealer, key, value)
    rejected = [o for o in outcomes if isinstance(o, Rejected)]
    assert [(o.record["batch_index"], o.record["rule"]) for o in rejected] == dead, [o.record["reason"] for o in rejected]
    assert sum(isinstance(o, Sealed) for o in outcomes) == sealed
    keys = {k.key_id: k for k in made_keys}
    for o in rejected:
        assert o.record["reason"]
        opened = envelope.open_with(keys.__getitem__, o.record["envelope"], aad=dlq_aad(o.record["dlq_id"]))
        if o.record["batch_index"] is None:
            assert opened == value  # the whole message
        else:
            assert len(opened) < len(value)  # that reading alone
    assert len({o.record["dlq_id"] for o in rejected}) == len(rejected)  # one dead letter each, never merged


def test_a_batch_checks_each_meter_against_its_own_earlier_readings(sealer):
    """Per-meter state carries from reading to reading inside one batch: a rollback in the batch is caught."""
    from ..corpus import COLLECTOR, _array, _reading

    outcomes = _run_batch(sealer, COLLECTOR.encode(), _array([_reading(1), _reading(2, register_kwh=10.0),
                                                              _reading(3), _reading(3, register_kwh=999.0)]))
    assert [o.record.get("rule") if isinstance(o, Rejected) else "sealed" for o in outcomes] == [
        "sealed", "register", "sealed", "duplicate"]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(items=st.lists(st.one_of(st.fixed_dictionaries({"meter_id": st.text(max_size=8), "ts": st.text(max_size=25),
                                                      "kwh": st.floats(), "register_kwh": st.floats()}),
                               st.integers(), st.none(), st.lists(st.integers(), max_size=3)), max_size=8))
def test_any_batch_is_sealed_or_dead_lettered_reading_by_reading(sealer, items):
    value = json.dumps(items).encode()
    outcomes = _run_batch(sealer, b"HE-1", value)
    assert all(isinstance(o, (Sealed, Rejected)) for o in outcomes)
    assert len(outcomes) == (len(items) or 1)  # one outcome per reading, or one dead letter for an empty batch
