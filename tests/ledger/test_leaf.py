"""The leaf encoding: the inline ``encode`` writes the bytes of its definition (``_field`` per field of ``FIELDS``)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import leaf

values = st.one_of(st.none(), st.integers(-(2**70), 2**70), st.text(max_size=20), st.binary(max_size=40),
                   st.binary(max_size=8).map(bytearray), st.binary(max_size=8).map(memoryview))


def _by_definition(record: dict) -> bytes:
    return bytes([leaf.VERSION]) + b"".join(leaf._field(record.get(name)) for name in leaf.FIELDS)


@settings(max_examples=300, deadline=None)
@given(record=st.dictionaries(st.sampled_from([*leaf.FIELDS, "topic_offset"]), values))
def test_encode_writes_each_field_as_its_definition(record):
    assert leaf.encode(record) == _by_definition(record)


@pytest.mark.parametrize("value", [True, 1.5, ["x"]])
def test_a_value_without_a_leaf_encoding_is_refused(value):
    with pytest.raises(TypeError):
        leaf.encode({"record_id": "r", "meter_seq": value})
