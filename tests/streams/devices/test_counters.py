"""The device_seq window: late readings and redeliveries pass, replays do not (and the window packs exactly)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.devices.counters import PACKED_LEN, WINDOW, Window, advance, pack, unpack
from streams.exceptions import InvalidInput


def _payload(seq: int) -> bytes:
    return f"reading {seq}".encode()


def test_a_shuffled_redelivered_stream_within_the_window_is_all_accepted_and_each_seq_only_once():
    rng = random.Random(5)
    seqs = list(range(1000))
    # re-ordered by at most WINDOW - 1 places (a killed bridge's share arriving late), each sent up to three times
    order = sorted(seqs, key=lambda s: s + rng.uniform(0, WINDOW - 1))
    sent = [s for s in order for _ in range(rng.randint(1, 3))]
    window, accepted = None, []
    for seq in sent:
        after = advance(window, seq, _payload(seq))
        if after is not window:
            accepted.append(seq)
        window = after
    assert sorted(accepted) == seqs  # every reading once; redeliveries change nothing


def test_replays_are_refused():
    window = None
    for seq in range(300):
        window = advance(window, seq, _payload(seq))
    with pytest.raises(InvalidInput, match="more than 128 below") as old:
        advance(window, 299 - WINDOW, _payload(299 - WINDOW))  # too old to tell from a replay
    with pytest.raises(InvalidInput, match="already used") as reused:
        advance(window, 250, b"another reading under a used counter")
    assert old.value.rule == reused.value.rule == "replay"
    assert advance(window, 299 - WINDOW + 1, _payload(299 - WINDOW + 1)) is window  # oldest in the window: seen


@pytest.mark.parametrize("seq", [-1, 1.0, "3", True, None, 2**63])
def test_a_bad_counter_is_a_schema_error(seq):
    with pytest.raises(InvalidInput) as caught:
        advance(None, seq, b"x")
    assert caught.value.rule == "schema"


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 5000), min_size=1, max_size=60))
def test_pack_round_trips(seqs):
    window = None
    for seq in seqs:
        try:
            window = advance(window, seq, _payload(seq))
        except InvalidInput:
            pass
    data = pack(window)
    assert len(data) == PACKED_LEN and unpack(data) == window


def test_a_jump_past_the_window_forgets_everything_below():
    window = advance(advance(None, 1, b"a"), 1 + 10 * WINDOW, b"b")
    assert window == Window(1 + 10 * WINDOW, 1, window.marks) and window.marks[2:] == bytes(2 * (WINDOW - 1))
