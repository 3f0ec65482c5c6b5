"""PUBACKs in the order the PUBLISHes came, each only once Kafka has the message. Pure; thread-safe.

MQTT asks a receiver to acknowledge QoS 1 messages in the order it received them (MQTT 5 §4.6); Kafka confirms
deliveries in any order (several partitions, retries). ``InOrderAcks`` holds each received message until Kafka
confirmed it *and* everything received before it, then releases the packet ids to acknowledge. After a
reconnect the broker sends the unacknowledged messages again with their packet ids, so ``reset`` forgets the
old connection's tickets: acknowledging them on the new connection could acknowledge another message that
reused the id before it reached Kafka.

>>> acks = InOrderAcks(clock=lambda: 0.0)
>>> a, b = acks.received(7), acks.received(8)
>>> acks.delivered(b), acks.delivered(a)
([], [7, 8])
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable, NamedTuple


class Ticket(NamedTuple):
    connection: int
    n: int


class InOrderAcks:
    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._connection = 0
        self._next = 0
        self._pending: deque[list] = deque()  # [n, packet id, received at, delivered?], in receive order

    def received(self, mid: int) -> Ticket:
        with self._lock:
            ticket = Ticket(self._connection, self._next)
            self._pending.append([self._next, mid, self._clock(), False])
            self._next += 1
            return ticket

    def delivered(self, ticket: Ticket) -> list[int]:
        """Kafka has the message of ``ticket``: the packet ids now to acknowledge, in order (maybe none)."""
        with self._lock:
            if ticket.connection != self._connection or not self._pending:
                return []  # a ticket of a closed connection: the broker sends that message again
            self._pending[ticket.n - self._pending[0][0]][3] = True
            out = []
            while self._pending and self._pending[0][3]:
                out.append(self._pending.popleft()[1])
            return out

    def reset(self) -> int:
        """A new connection: forget every unacknowledged message (the broker redelivers them); returns how many."""
        with self._lock:
            dropped = len(self._pending)
            self._pending.clear()
            self._connection += 1
            self._next = 0
            return dropped

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def oldest_s(self) -> float:
        """Seconds the oldest unacknowledged message has waited (0 when none does): the bridge's lag."""
        with self._lock:
            return self._clock() - self._pending[0][2] if self._pending else 0.0
