"""agents.app.InOrder: a hole in a raw partition's offsets is read again, never skipped."""

import asyncio
from dataclasses import dataclass, field

from agents.app import InOrder


@dataclass(frozen=True)
class TP:
    topic: str
    partition: int


@dataclass(eq=False)
class Message:
    tp: TP
    offset: int
    refcount: int = 1

    def incref(self) -> None:
        self.refcount += 1


@dataclass(eq=False)
class Event:
    message: Message


@dataclass
class Consumer:
    seeks: list = field(default_factory=list)

    async def seek_wait(self, partitions) -> None:  # Faust's thread-safe seek (the one InOrder uses)
        self.seeks.extend(partitions.items())


def _run(order: InOrder, consumer: Consumer, offsets: list[int], tp=TP("readings.raw", 2)):
    events = [Event(Message(tp, o)) for o in offsets]
    admitted = [asyncio.run(order.admit(e, consumer)) for e in events]
    return [e.message.offset for e, ok in zip(events, admitted) if ok], [e.message.offset for e, ok in zip(events, admitted)
                                                                          if not ok and e.message.refcount == 2]


def test_a_dropped_offset_is_read_again_and_later_events_are_held_not_acked():
    order, consumer = InOrder(), Consumer()
    tp = TP("readings.raw", 2)
    # 16796 never arrives; events fetched before the seek keep coming (not always contiguous): all held, one seek
    admitted, held = _run(order, consumer, [16795, 16797, 16798, 16799, 16850])
    assert admitted == [16795] and held == [16797, 16798, 16799, 16850]
    assert consumer.seeks == [(tp, 16796)]
    # the re-read from 16796 on is processed in order
    admitted, held = _run(order, consumer, [16796, 16797, 16798, 16799, 16800])
    assert admitted == [16796, 16797, 16798, 16799, 16800] and held == []
    # a later hole is mended the same way
    admitted, held = _run(order, consumer, [16802])
    assert held == [16802] and consumer.seeks[-1] == (tp, 16801)


def test_a_re_read_that_skips_the_hole_again_is_asked_again():
    order, consumer = InOrder(), Consumer()
    tp = TP("readings.raw", 2)
    _run(order, consumer, [100, 102, 103])  # 101 dropped: seek to 101, 102 and 103 held
    admitted, held = _run(order, consumer, [102])  # the re-read drops 101 again: below the held ones
    assert held == [102] and consumer.seeks == [(tp, 101), (tp, 101)]
    admitted, held = _run(order, consumer, [103, 101, 102, 103])  # 103: rest of the failed re-read; then 101
    assert held == [103] and admitted == [101, 102, 103]


def test_a_real_gap_on_the_broker_is_accepted_after_a_few_re_reads():
    order, consumer = InOrder(max_rereads=3), Consumer()
    _run(order, consumer, [10, 12])  # offset 11 does not exist on the broker: every re-read starts at 12
    for _ in range(2):
        assert _run(order, consumer, [12]) == ([], [12])
    assert _run(order, consumer, [12, 13]) == ([12, 13], [])
    assert len(consumer.seeks) == 3


def test_partitions_are_independent_and_forgotten_on_revoke():
    order, consumer = InOrder(), Consumer()
    a, b = TP("readings.raw", 0), TP("readings.raw", 1)
    assert _run(order, consumer, [5, 6], a)[0] == [5, 6]
    assert _run(order, consumer, [100], b)[0] == [100]
    order.forget([a])
    assert _run(order, consumer, [50], a)[0] == [50]  # a new owner starts wherever it is told
    assert consumer.seeks == []


def test_the_first_event_after_an_assignment_is_checked_against_the_committed_offset():
    tp = TP("readings.sealed", 3)
    consumer = Consumer()
    consumer._committed_offset = {tp: 98}  # Faust's record of the group's committed offset: the next to read
    order = InOrder()
    admitted, held = _run(order, consumer, [99, 100], tp)  # 98 never reached the agent
    assert admitted == [] and held == [99, 100] and consumer.seeks == [(tp, 98)]
    admitted, held = _run(order, consumer, [98, 99, 100], tp)
    assert admitted == [98, 99, 100] and held == []
    # nothing committed yet (a new group): the first event is taken as the start
    fresh = InOrder()
    assert _run(fresh, Consumer(), [5, 6], TP("readings.sealed", 0)) == ([5, 6], [])


def test_a_seek_that_fails_leaves_the_events_held():
    class Revoked(Consumer):
        async def seek_wait(self, partitions) -> None:
            raise RuntimeError("partition is not assigned")

    admitted, held = _run(InOrder(), Revoked(), [10, 12])
    assert admitted == [10] and held == [12]  # held: never acked, so the next owner reads 11 and 12 again


@dataclass
class FaustConsumer(Consumer):
    """As Faust's consumer: committed offsets per partition, None (never 0) where nothing is committed."""

    _committed_offset: dict = field(default_factory=dict)


def test_a_new_partition_with_nothing_committed_must_start_at_offset_0():
    order, consumer = InOrder(), FaustConsumer()
    tp = TP("readings.sealed", 1)
    # a rebalance as a second worker joined: Faust delivered from offset 3 although the group had committed nothing
    admitted, held = _run(order, consumer, [3, 4], tp)
    assert admitted == [] and held == [3, 4] and consumer.seeks == [(tp, 0)]
    admitted, held = _run(order, consumer, [0, 1, 2, 3, 4], tp)
    assert admitted == [0, 1, 2, 3, 4] and held == []
    # where the group has committed, the first event is checked against that offset, as before
    other = TP("readings.sealed", 2)
    consumer._committed_offset[other] = 40
    assert _run(order, consumer, [40, 41], other) == ([40, 41], [])


def test_a_partition_whose_start_was_deleted_is_accepted_after_its_re_reads():
    order, consumer = InOrder(max_rereads=3), FaustConsumer()
    tp = TP("readings.raw", 0)
    # retention removed offsets 0..99: every re-read starts at 100 again; after max_rereads it goes on from there
    admitted, held = _run(order, consumer, [100], tp)
    assert admitted == [] and consumer.seeks == [(tp, 0)]
    admitted, held = _run(order, consumer, [100, 100, 100], tp)
    assert admitted == [100] and held == [100, 100]
    assert _run(order, consumer, [101, 102], tp) == ([101, 102], [])
