"""Pacing: never faster than the configured rate, and slower when the account says so.

Two gates, passed in turn right before each request leaves:

1. the ceiling, an aiolimiter bucket of capacity 1 that drains at the
   configured rate. Capacity 1 means no burst at start or after a restart:
   requests leave at least 1/rate apart, so no 1-second window ever holds
   more than `rate_per_second` of them;
2. the adaptive gate, which spaces requests at the current rate when the
   account's real limit turned out lower (429s without Retry-After). On a
   429 it drops the rate to what the account accepted in the second before
   (or by a factor when that is unclear), then probes back up a little every
   second without one: multiplicative decrease, additive increase, with a
   memory of where the last 429 came. Retry-After, when sent, holds every
   request back at least that long.

A small headroom (1%) keeps the spacing a hair wider than 1/rate, so the
jitter of a busy machine cannot squeeze rate + 1 requests into a second at
the other end.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from aiolimiter import AsyncLimiter

HEADROOM = 1.01
# After a cut, wait this long before probing up, and probe by this much per second.
HOLD_SECONDS = 2.0
PROBE_FRACTION = 0.02
# One cut per this many seconds: the 429s of one burst are one signal, not many.
CUT_COOLDOWN = 1.0


class Pacer:
    """Hands out send slots; call `await wait()` immediately before each request."""

    def __init__(self, rate_per_second: float, min_rate: float = 0.2) -> None:
        self.configured = rate_per_second
        self.rate = rate_per_second
        self.min_rate = min(min_rate, rate_per_second)
        self._ceiling = AsyncLimiter(1, HEADROOM / rate_per_second)
        self._lock = asyncio.Lock()
        self._next_slot = 0.0        # monotonic time of the adaptive gate's next slot
        self._paused_until = 0.0     # Retry-After
        self._last_cut = -1e9
        self._last_probe = 0.0
        self._accepted: deque[float] = deque()  # send times of requests the API accepted
        self.throttled = 0
        self.sent = 0

    async def wait(self) -> float:
        """Wait for the next slot; returns the monotonic time the request may leave."""
        async with self._lock:  # one waiter at a time keeps the order first come, first served
            now = time.monotonic()
            self._probe(now)
            slot = max(now, self._paused_until)
            if self.rate < self.configured:
                slot = max(slot, self._next_slot)
            if slot > now:
                await asyncio.sleep(slot - now)
            await self._ceiling.acquire()
            sent_at = time.monotonic()
            self._next_slot = sent_at + HEADROOM / self.rate
            self.sent += 1
            return sent_at

    def accepted(self, sent_at: float) -> None:
        """The request sent at `sent_at` was taken (not a 429)."""
        self._accepted.append(sent_at)
        cutoff = time.monotonic() - 2.0
        while self._accepted and self._accepted[0] < cutoff:
            self._accepted.popleft()

    def throttle(self, sent_at: float, retry_after: float | None) -> None:
        """The request sent at `sent_at` got a 429."""
        self.throttled += 1
        now = time.monotonic()
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
