"""agents.rewind: after Faust's seek to committed offsets, partitions with no commit go back to their start
(the S3 scale-out test lost a killed worker's uncommitted partition without it: tests/test_scale_out.py)."""

import asyncio
from collections import defaultdict

from aiokafka import TopicPartition
from faust.transport.consumer import Consumer
from faust.types import TP

from agents import rewind


class Thread:
    def __init__(self, committed: dict, positions: dict) -> None:
        self.committed, self.positions, self.rewound = committed, positions, []

    async def seek_to_committed(self):  # aiokafka's: seeks only what has a commit
        for tp, offset in self.committed.items():
            if offset:
                self.positions[tp] = offset
        return dict(self.committed)

    async def seek_to_beginning(self, *tps):
        if not all(isinstance(tp, TopicPartition) for tp in tps):  # as aiokafka's own check
            raise TypeError("partitions must be TopicPartition instances")
        tps = [TP(tp.topic, tp.partition) for tp in tps]
        self.rewound.extend(tps)
        for tp in tps:
            self.positions[tp] = 0


class Stand:
    """The state Faust's ``Consumer.perform_seek`` reads and writes; aiokafka's side stands in."""

    def __init__(self, committed: dict, positions: dict) -> None:
        self._thread = Thread(committed, positions)
        self._read_offset = defaultdict(lambda: None)
        self._committed_offset = defaultdict(lambda: None)

    def assignment(self):
        return set(self._thread.committed)

    def _is_changelog_tp(self, tp) -> bool:
        return tp.topic.endswith("-changelog")

    async def seek_to_committed(self):
        return await self._thread.seek_to_committed()


def test_uncommitted_stream_partitions_are_rewound_committed_ones_left_at_their_commit():
    rewind.install()
    assert Consumer.perform_seek is rewind.perform_seek
    raw0, raw2, changelog = TP("readings.raw", 0), TP("readings.raw", 2), TP("meterseal-meter-state-changelog", 2)
    # raw/2: nothing committed, but the dropped records left the consumer at the partition's end (3,600)
    committed = {raw0: 1800, raw2: None, changelog: None}
    positions = {raw0: 1800, raw2: 3600, changelog: 40}
    consumer = Stand(committed, positions)
    asyncio.run(rewind.perform_seek(consumer))  # (Faust's own seek runs first, then the rewind)
    assert positions == {raw0: 1800, raw2: 0, changelog: 40}  # changelogs are the recovery's business
    assert consumer._thread.rewound == [raw2]
    assert consumer._read_offset[raw2] is None and consumer._committed_offset[raw0] == 1800


def test_nothing_to_rewind_when_every_partition_has_a_commit():
    rewind.install()
    raw = TP("readings.raw", 1)
    consumer = Stand({raw: 2400}, {raw: 2400})
    asyncio.run(rewind.perform_seek(consumer))  # (Faust's own seek runs first, then the rewind)
    assert consumer._thread.rewound == [] and consumer._thread.positions == {raw: 2400}
