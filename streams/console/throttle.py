"""Login throttling without races, and a bound on how many Argon2 checks run at once.

``Throttle.reserve(name, address)`` decides and records in one step under a lock: an attempt counts as a
failure from the moment it is let through until its password proved right, so twenty concurrent tries for
one name are twenty reservations, not twenty checks of a count nobody has raised yet.

The lockout (OWASP ASVS V2.2.1; the README's "Security model" says why this design):

- ``limit`` failures for a **name** within ``window_s`` lock the name — but not for an address that has no
  failure for that name in the window: such an address still gets one try, after ``locked_delay_s``. A
  stranger typing wrong passwords cannot lock the owner out of its account; a guesser gets ``limit`` tries,
  then one (slowed) try per fresh address.
- an address with a failure for a locked name waits until the window passes (429 with ``Retry-After``);
- ``address_limit`` failures from one **address** over all names lock the address (password spraying).

``PasswordGate`` lets at most ``size`` password checks run at once (each Argon2id check takes 64 MiB), so
concurrent logins cost at most ``size`` x 64 MiB of memory; the others wait their turn, up to ``wait_s``.

>>> now = [0.0]
>>> t = Throttle(limit=2, window_s=60, locked_delay_s=1.0, clock=lambda: now[0])
>>> t.reserve("ana", "1.2.3.4").failed(); t.reserve("ana", "1.2.3.4").failed()
>>> t.reserve("ana", "1.2.3.4").wait, t.reserve("ana", "5.6.7.8").delay, t.reserve("bob", "1.2.3.4").delay
(60.0, 1.0, 0.0)
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

MAX_KEYS = 100_000  # names and addresses tracked at once; past it, expired entries are swept


@dataclass
class Ticket:
    """One attempt let through (``wait`` 0) or refused (``wait`` > 0 seconds: 429 with ``Retry-After``).
    ``delay``: seconds to wait before checking the password (a locked name, tried from a fresh address)."""

    throttle: "Throttle | None"
    keys: tuple[str, ...] = ()
    serial: int = 0
    wait: float = 0.0
    delay: float = 0.0
    _done: bool = field(default=False, repr=False)

    @property
    def refused(self) -> bool:
        return self.wait > 0

    def failed(self) -> None:
        """The password was wrong: the reservation stays as a failure."""
        self._done = True

    def succeeded(self) -> None:
        """The password was right: the attempt is not a failure, and this address's failures for the name go."""
        if not self._done and self.throttle is not None:
            self.throttle._release(self, clear_pair=True)
        self._done = True

    def cancel(self) -> None:
        """The password was never checked (the server was too busy): the attempt does not count."""
        if not self._done and self.throttle is not None:
            self.throttle._release(self, clear_pair=False)
        self._done = True


class Throttle:
    def __init__(self, *, limit: int = 5, window_s: float = 300.0, address_limit: int = 50,
                 locked_delay_s: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window_s, self.address_limit = limit, window_s, address_limit
        self.locked_delay_s, self.clock = locked_delay_s, clock
        self._fails: dict[str, deque[tuple[float, int]]] = {}
        self._lock = threading.Lock()
        self._serial = itertools.count(1)

    def _recent(self, key: str, now: float) -> deque[tuple[float, int]]:
        times = self._fails.get(key)
        if times is None:
            return deque()
        while times and now - times[0][0] >= self.window_s:
            times.popleft()
        if not times:
            del self._fails[key]
        return times

    def _wait(self, times: deque[tuple[float, int]], limit: int, now: float) -> float:
        return times[-limit][0] + self.window_s - now

    def reserve(self, name: str, address: str) -> Ticket:
        """Let one attempt for ``name`` from ``address`` through (recorded as a failure until it succeeds), or
        refuse it with the seconds to wait. Atomic: concurrent attempts see each other."""
        now = self.clock()
        keys = ("n:" + name, "p:" + name + "\0" + address, "a:" + address)
        with self._lock:
            if len(self._fails) > MAX_KEYS:
                for key in list(self._fails):
                    self._recent(key, now)
            by_name, by_pair, by_address = (self._recent(k, now) for k in keys)
            wait, delay = 0.0, 0.0
            if len(by_address) >= self.address_limit:
                wait = self._wait(by_address, self.address_limit, now)
            if len(by_pair) >= self.limit:
                wait = max(wait, self._wait(by_pair, self.limit, now))
            if len(by_name) >= self.limit:  # the name is locked ...
                if by_pair:  # ... for an address that failed for it
                    wait = max(wait, by_pair[-1][0] + self.window_s - now)
                else:  # ... a fresh address may try once, slowed down
                    delay = self.locked_delay_s
            if wait > 0:
                return Ticket(None, wait=wait)
            serial = next(self._serial)
            for key in keys:
                self._fails.setdefault(key, deque(maxlen=max(self.limit, self.address_limit))).append((now, serial))
        return Ticket(self, keys, serial, delay=delay)

    def _release(self, ticket: Ticket, *, clear_pair: bool) -> None:
        with self._lock:
            for key in ticket.keys:
                times = self._fails.get(key)
                if times is None:
                    continue
                kept = [t for t in times if t[1] != ticket.serial and not (clear_pair and key.startswith("p:"))]
                times.clear()
                times.extend(kept)
                if not times:
                    del self._fails[key]

    def blocked(self, name: str, address: str) -> float:
        """Seconds until ``name`` from ``address`` may try again (0: now); records nothing."""
        now = self.clock()
        keys = ("n:" + name, "p:" + name + "\0" + address, "a:" + address)
        with self._lock:
            by_name, by_pair, by_address = (self._recent(k, now) for k in keys)
            wait = 0.0
            if len(by_address) >= self.address_limit:
                wait = self._wait(by_address, self.address_limit, now)
            if len(by_pair) >= self.limit:
                wait = max(wait, self._wait(by_pair, self.limit, now))
            if len(by_name) >= self.limit and by_pair:
                wait = max(wait, by_pair[-1][0] + self.window_s - now)
            return max(wait, 0.0)


class GateBusy(Exception):
    """No password check slot came free within the gate's wait: 503 with ``Retry-After``."""


class PasswordGate:
    """At most ``size`` password checks at once (``async with gate:``), whatever event loop asks; ``peak`` is the
    most that ever ran together (the tests read it)."""

    def __init__(self, size: int = 2, *, wait_s: float = 20.0, poll_s: float = 0.02) -> None:
        if size < 1:
            raise ValueError("a password gate needs at least one slot")
        self.size, self.wait_s, self.poll_s = size, wait_s, poll_s
        self.running = 0
        self.peak = 0
        self._lock = threading.Lock()

    def _try(self) -> bool:
        with self._lock:
            if self.running >= self.size:
                return False
            self.running += 1
            self.peak = max(self.peak, self.running)
            return True

    async def __aenter__(self) -> "PasswordGate":
        deadline = time.monotonic() + self.wait_s
        while not self._try():
            if time.monotonic() >= deadline:
                raise GateBusy()
            await asyncio.sleep(self.poll_s)
        return self

    async def __aexit__(self, *exc: object) -> None:
        with self._lock:
            self.running -= 1
