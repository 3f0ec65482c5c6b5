"""Green Button ESPI: feeds validate against the shared XSDs with zero errors; the samples ingest; a round trip
readings -> store -> ESPI -> ingest -> store keeps every value to the Wh."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from streams.exceptions import ShareError
from streams.pipeline import Pipeline
from streams.store.query import Query, Reader
from streams.seal import Sealed, Source
from streams.settings import Settings
from streams.share.espi import DstRule, LocalTime, feed, parse_feed, raw_readings
from streams.store.segments import SegmentStore
from tests.conftest import DATA

GB = DATA / "vectors" / "greenbutton"
xmlschema = pytest.importorskip("xmlschema", reason="xmlschema is missing: pip install -e '.[test]'")


@pytest.fixture(scope="module")
def schema():
    return xmlschema.XMLSchema(str(GB / "espi.xsd"))


def errors(schema, data: bytes) -> list[str]:
    return [str(e) for e in schema.iter_errors(data.decode())]


def test_feeds_validate_with_zero_errors(schema):
    one = [{"meter_id": "M/1 ü", "ts": f"2024-03-01T{h:02d}:00:00+00:00", "kwh": h / 7} for h in range(1, 24)]
    two = one + [{"meter_id": "B", "ts": "2024-03-02T00:15:00Z", "kwh": 0.5}, {"meter_id": "B", "ts": "2024-03-02T00:30:00Z", "kwh": 0.25}]
    for rows in (one, two, one[:1]):
        data = feed(rows)
        assert errors(schema, data) == []
        back = parse_feed(data)
        assert sorted((r["meter_id"], r["wh"]) for r in back) == sorted((r["meter_id"], round(r["kwh"] * 1000)) for r in rows)


def test_the_sample_feeds_ingest(schema, policy):
    from streams.crypto.envelope import DekRing
    from streams.seal import Sealer
    from streams.crypto.tokens import BlindIndex

    sealer = Sealer(BlindIndex(bytes(32)), DekRing(10_000, 3600, lambda k: None), policy, clock=lambda: 1.8e9)
    sample = (GB / "Usage-Subscription-Feed-Anonymized.xml").read_bytes()
    assert len(errors(schema, sample)) == 1  # the nested ReadingType: tolerated on reading
    assert parse_feed(sample) == []  # a ReadingType and no interval data
    assert parse_feed((GB / "Authorization-Entry-Anonymized.xml").read_bytes()) == []
    rows = parse_feed((GB / "test_usage_data.xml").read_bytes(), meter_id="GB-1")
    assert len(rows) == 1340 and rows[0] == {"meter_id": "GB-1", "ts": "2012-03-01T00:15:00-05:00", "kwh": 0.282,
                                             "wh": 282, "interval_s": 900}
    # DST per LocalTimeParameters: the second Sunday of March 2012 at 02:00 local standard time
    assert [r["ts"] for r in rows if r["ts"].startswith("2012-03-11T01:45") or r["ts"].startswith("2012-03-11T03:00")] \
        == ["2012-03-11T01:45:00-05:00", "2012-03-11T03:00:00-04:00"]
    raws = raw_readings(rows, region="north")
    for i, raw in enumerate(raws):
        out = sealer.reading(json.dumps(raw).encode(), Source("readings.raw", 0, i))
        assert isinstance(out, Sealed), out.record.get("reason")
    assert raws[-1]["register_kwh"] == pytest.approx(sum(r["wh"] for r in rows) / 1000)


def test_dst_rules():
    assert DstRule.parse("360E2000").start_in(2024) == dt.datetime(2024, 3, 10, 2)  # 2nd Sunday of March
    assert DstRule.parse("B40E2000").start_in(2024) == dt.datetime(2024, 11, 3, 2)  # 1st Sunday of November
    eu = LocalTime(3600, 3600, DstRule.parse(f"{(3 << 28) | (7 << 25) | (7 << 17) | (1 << 12):08X}"),
                   DstRule.parse(f"{(10 << 28) | (7 << 25) | (7 << 17) | (2 << 12):08X}"))  # last Sundays: March, October
    assert eu.iso(int(dt.datetime(2024, 7, 1, tzinfo=dt.timezone.utc).timestamp())).endswith("+02:00")
    assert eu.iso(int(dt.datetime(2024, 12, 1, tzinfo=dt.timezone.utc).timestamp())).endswith("+01:00")


@pytest.mark.parametrize("data, message", [
    (b"<feed", "not a readable"),
    (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><feed xmlns="http://www.w3.org/2005/Atom">&a;</feed>',
     "not a readable"),
    (b"<html/>", "not an ESPI feed"),
])
def test_bad_feeds_fail_clearly(data, message):
    with pytest.raises(ShareError, match=message):
        parse_feed(data)


def test_round_trip_readings_store_espi_ingest_store_to_the_wh(schema, shared_store, tmp_path):
    data, keystore, keys, signer, readings, _ = shared_store
    reader = Reader(data / "store", keys)
    hits = reader.search(Query(meter="M-C", start=dt.date(2024, 3, 1), end=dt.date(2024, 3, 5)), kinds=["readings"])
    opened = reader.open_hits(hits)
    xml = feed(opened)
    assert errors(schema, xml) == []
    back = raw_readings(parse_feed(xml), region="south")
    # into a second store through the real sealing pipeline
    settings = Settings.from_env({}, data_dir=tmp_path)
    pipeline = Pipeline(settings, keys.index_key, keystore.owner_public, SegmentStore(settings.store_dir), signer)
    states: dict = {}
    msgs = [(0, i, pipeline.seal_reading(json.dumps(r).encode(), Source("readings.raw", 0, i), states).encode())
            for i, r in enumerate(back)]
    pipeline.store_batch("readings.sealed", msgs)
    again = Reader(tmp_path / "store", keys)
    stored = again.open_hits(again.search(Query(meter="M-C"), kinds=["readings"]))

    def wh(rows):
        return sorted((dt.datetime.fromisoformat(r["ts"]).timestamp(), round(r["kwh"] * 1000)) for r in rows)

    source = [r for r in readings if r["meter_id"] == "M-C"]
    assert len(stored) == len(source) == 120 and wh(stored) == wh(source)
