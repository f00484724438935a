"""Pacing: never more than the configured rate in any 1-second window, and slower when the
account says so.

Three gates, passed in turn right before each request leaves:

1. the window: at most R requests (R = the configured rate, rounded down) in any
   window of W seconds (W = 1, or R / rate for a rate under one per second).
   It counts the moments requests really left (their last byte written, from
   httpx's trace hook), not the moments they were allowed to: the first
   requests of a run wait for a connection, and counting their slots instead
   would let later requests bunch up behind them at the far end;
2. the spacing: an aiolimiter bucket of capacity 1, so there is no burst at
   the start of a run, only requests spaced out at a hair above the rate
   (the window, not the spacing, is what holds the promise);
3. the adaptive gate: when the account's real limit turns out lower (429s
   without Retry-After), requests are spaced at the current, lower rate. On a
   429 the rate drops to what the account accepted in the second before (or
   by a factor when that is unclear), then probes back up a little every
   second without one: multiplicative decrease, additive-like increase, with
   a memory of where the limit was. Retry-After, when sent, holds every
   request back at least that long.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable

from aiolimiter import AsyncLimiter

# Slack on each window for the jitter between leaving here and arriving there.
WINDOW_MARGIN = 0.010
# The spacing gate runs a little faster than the rate, so oversleeping a few
# milliseconds now and then never drags the achieved rate below the window's.
SPACING_SLACK = 1.05
# After a cut, wait this long before probing up, and probe by this much per second.
HOLD_SECONDS = 2.0
PROBE_FRACTION = 0.02
# One cut per this many seconds: the 429s of one burst are one signal, not many.
CUT_COOLDOWN = 1.0

# Monotonic seconds. It must be the event loop's clock (asyncio's default loop and
# aiolimiter read time.monotonic through loop.time()), so that a test can drive both with
# one fake loop time and assert exact moments without sleeping.
Clock = Callable[[], float]


class Ticket:
    """One request's place in the window; `left()` says when it really went out."""

    __slots__ = ("_clock", "_known", "sent_at")

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self.sent_at: float | None = None
        self._clock = clock
        self._known: asyncio.Event | None = None

    def left(self, at: float | None = None) -> None:
        """The request's last bytes went out at monotonic time `at` (now if None)."""
        if self.sent_at is None:
            self.sent_at = self._clock() if at is None else at
            if self._known is not None:
                self._known.set()

    async def known(self) -> float:
        if self.sent_at is None:
            self._known = self._known or asyncio.Event()
            await self._known.wait()
        assert self.sent_at is not None
        return self.sent_at


class Pacer:
    """Hands out send slots; call `await wait()` immediately before each request."""

    def __init__(
        self,
        rate_per_second: float,
        min_rate: float = 0.2,
        recent: list[float] | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        """`recent`: monotonic times an earlier run may have sent at, so a restart keeps the window."""
        self._clock = clock
        self.configured = rate_per_second
        self.rate = rate_per_second
        self.min_rate = min(min_rate, rate_per_second)
        self.window_count = max(1, math.floor(rate_per_second + 1e-9))
        self.window_seconds = self.window_for(rate_per_second)
        self._spacing = AsyncLimiter(1, 1 / (rate_per_second * SPACING_SLACK))
        self._lock = asyncio.Lock()
        self._window: deque[Ticket] = deque(maxlen=self.window_count)
        for at in sorted(recent or [])[-self.window_count :]:
            earlier = Ticket(clock)
            earlier.left(at)
            self._window.append(earlier)
        self._next_slot = 0.0  # the adaptive gate's next slot (monotonic)
        self._paused_until = 0.0  # Retry-After
        self._last_cut = -1e9
        self._last_probe = 0.0
        self._accepted: deque[float] = deque()  # send times of requests the API took
        self.throttled = 0
        self.sent = 0

    @staticmethod
    def window_for(rate_per_second: float) -> float:
        """The window's width in seconds: 1, or the whole rate period below one a second."""
        return max(1.0, max(1, math.floor(rate_per_second + 1e-9)) / rate_per_second)

    async def wait(self) -> Ticket:
        """Wait for the next slot; the caller sends at once and calls `ticket.left()`."""
        async with self._lock:  # one waiter at a time: first come, first served
            while True:
                now = self._clock()
                self._probe(now)
                slot = max(now, self._paused_until)
                if self.rate < self.configured:
                    slot = max(slot, self._next_slot)
                if len(self._window) == self.window_count:
                    oldest = await self._window[0].known()
                    slot = max(slot, oldest + self.window_seconds + WINDOW_MARGIN)
                if slot <= self._clock():
                    break
                await asyncio.sleep(slot - self._clock())
            await self._spacing.acquire()
            ticket = Ticket(self._clock)
            self._window.append(ticket)
            # From the slot, not from when we woke: oversleeping must not slow the rate.
            self._next_slot = slot + 1 / self.rate
            self.sent += 1
            return ticket

    def accepted(self, ticket: Ticket) -> None:
        """The request of `ticket` was taken (not a 429)."""
        ticket.left()
        assert ticket.sent_at is not None
        self._accepted.append(ticket.sent_at)
        cutoff = self._clock() - 2.0
        while self._accepted and self._accepted[0] < cutoff:
            self._accepted.popleft()

    def throttle(self, ticket: Ticket, retry_after: float | None) -> None:
        """The request of `ticket` got a 429."""
        ticket.left()
        assert ticket.sent_at is not None
        sent_at = ticket.sent_at
        self.throttled += 1
        now = self._clock()
        if retry_after is not None:
            self._paused_until = max(self._paused_until, now + retry_after)
            return
        if now - self._last_cut < CUT_COOLDOWN:
            return
        self._last_cut = now
        # What the account took in the second before this request: its real limit, roughly.
        took = sum(1 for t in self._accepted if sent_at - 1.0 < t <= sent_at)
        estimate = took * 0.95
        cut = estimate if 0 < estimate < self.rate else self.rate * 0.7
        self.rate = max(self.min_rate, cut)
        self._last_probe = now + HOLD_SECONDS

    def _probe(self, now: float) -> None:
        if self.rate >= self.configured or now < self._last_probe + 1.0:
            return
        steps = int(now - self._last_probe)
        self.rate = min(self.configured, self.rate * (1 + PROBE_FRACTION) ** steps)
        self._last_probe += steps


# After a concurrency 429 the ceiling holds this long, then rises by one call per probe.
LIVE_PROBE_SECONDS = 30.0


class LiveCeiling:
    """The live-call ceiling: a slot from the accepted POST until the call's final status.

    `acquire()` before the POST waits while as many calls are live as the ceiling allows;
    `release()` when the POST was not accepted, or when follow.py saw the call end. A 429
    saying the account's concurrency limit was hit lowers the ceiling to the calls that
    were live without this one (never under one), then it probes back up by one call every
    LIVE_PROBE_SECONDS without such a 429: the live-call twin of the adaptive rate.
    `limit` None: no configured ceiling until the account's 429 shows one.
    """

    def __init__(self, limit: int | None, held: int = 0, clock: Clock = time.monotonic) -> None:
        """`held`: calls an earlier run left live; they hold their slots from the start."""
        self.configured = limit
        self.ceiling = limit
        self.held = held
        self.most_held = held
        self.refusals = 0
        self._clock = clock
        self._freed = asyncio.Condition()
        self._probe_at = math.inf
        # After a refusal, nothing is sent until a slot is freed or the probe is due: the
        # account may hold calls this run does not know of (another campaign's).
        self._blocked = False

    def _room(self) -> bool:
        self._probe(self._clock())
        if self._blocked:
            return False
        return self.ceiling is None or self.held < self.ceiling

    async def acquire(self) -> None:
        """Wait for a free slot and hold it."""
        async with self._freed:
            while not self._room():
                wait = self._probe_at - self._clock()
                try:
                    await asyncio.wait_for(self._freed.wait(), timeout=wait if math.isfinite(wait) else None)
                except TimeoutError:
                    continue
            self.take()

    def take(self) -> None:
        """Hold a slot without waiting (a call a look-up found already live)."""
        self.held += 1
        self.most_held = max(self.most_held, self.held)

    def release(self) -> None:
        """A slot held is free again; wakes the waiters."""
        self.held = max(0, self.held - 1)
        self._blocked = False
        asyncio.get_running_loop().create_task(self._wake())

    async def _wake(self) -> None:
        async with self._freed:
            self._freed.notify_all()

    def refused(self) -> None:
        """The account answered 429 for its concurrency limit (call after releasing that
        request's slot): the ceiling becomes the calls live now."""
        self.refusals += 1
        live = max(1, self.held)
        self.ceiling = live if self.ceiling is None else min(self.ceiling, live)
        self._blocked = True
        self._probe_at = self._clock() + LIVE_PROBE_SECONDS

    def _probe(self, now: float) -> None:
        if now < self._probe_at or self.ceiling is None:
            return
        steps = 1 + int((now - self._probe_at) / LIVE_PROBE_SECONDS)
        self.ceiling += steps
        self._blocked = False
        self._probe_at += steps * LIVE_PROBE_SECONDS
        if self.configured is not None and self.ceiling >= self.configured:
            self.ceiling = self.configured
            self._probe_at = math.inf
