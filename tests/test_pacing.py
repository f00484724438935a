"""The pacer: strict spacing from the first request, the window counted on real send times,
cuts on 429, probes back up.

Exact, and without sleeping: each test runs on an event loop whose clock moves only when
every task waits for a timer, and then straight to that timer (the pacer and aiolimiter
both read that loop's clock), so a run of minutes takes milliseconds and every moment
asserted is the one the pacer computed.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

from dialer.pacing import (
    CUT_COOLDOWN,
    HOLD_SECONDS,
    PROBE_FRACTION,
    SPACING_SLACK,
    WINDOW_MARGIN,
    Pacer,
    Ticket,
)

T = TypeVar("T")


class _IdleJumps(selectors.DefaultSelector):
    """Never blocks: with nothing ready, the loop's clock jumps to its next timer."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ready = super().select(0)
        if not ready and timeout is not None and not self._loop._ready:  # type: ignore[attr-defined]
            # A nanosecond at least: a timer due "now" by float rounding must still come.
            self._loop.now += max(timeout, 1e-9)
        return ready


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self.now = 1000.0
        super().__init__(_IdleJumps(self))

    def time(self) -> float:
        return self.now


def run(main: Callable[[Callable[[], float]], Coroutine[Any, Any, T]]) -> T:
    """`main(clock)` on a virtual-time loop; `clock` is that loop's time."""
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(main(loop.time))
    finally:
        loop.close()


class FakeClock:
    """For the pacer's bookkeeping outside a wait: time moves when the test says."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def peak(stamps: list[float], width: float = 1.0) -> int:
    return max(sum(1 for t in stamps if s <= t < s + width) for s in stamps)


async def _send(pacer: Pacer, n: int, delay_first: float = 0.0) -> list[float]:
    """Send n requests; the first one's connection takes `delay_first` to come up."""
    stamps: list[float] = []
    pending: list[asyncio.Task[None]] = []
    for i in range(n):
        ticket = await pacer.wait()

        async def leave(ticket: Ticket = ticket, late: float = delay_first if i == 0 else 0) -> None:
            await asyncio.sleep(late)
            ticket.left()
            assert ticket.sent_at is not None
            stamps.append(ticket.sent_at)

        pending.append(asyncio.create_task(leave()))
    await asyncio.gather(*pending)
    return sorted(stamps)


def test_no_burst_at_start_and_never_more_than_the_rate_in_a_second() -> None:
    start, stamps = run(lambda clock: _timed(clock, lambda: _send(Pacer(40.0, clock=clock), 60)))
    spacing = 1 / (40 * SPACING_SLACK)
    # The very first requests are spaced too: no bucket full of tokens at start.
    assert stamps[0] == pytest.approx(start)
    for i in range(40):
        assert stamps[i] == pytest.approx(start + i * spacing)
    # The 41st waits for the first one's second (and the margin), not a moment more.
    assert stamps[40] == pytest.approx(stamps[0] + 1.0 + WINDOW_MARGIN)
    assert peak(stamps) == 40


async def _timed(clock: Callable[[], float], go: Callable[[], Coroutine[Any, Any, T]]) -> tuple[float, T]:
    start = clock()
    return start, await go()


def test_a_slow_first_connection_cannot_squeeze_the_window() -> None:
    # The first request leaves 80 ms after its slot (a new connection); the window counts
    # when it really left, so request 21 waits for a full second after that.
    start, stamps = run(lambda clock: _timed(clock, lambda: _send(Pacer(20.0, clock=clock), 30, 0.08)))
    assert peak(stamps) == 20
    first_left = start + 0.08
    assert first_left in stamps
    assert stamps[20] == pytest.approx(first_left + 1.0 + WINDOW_MARGIN)


def test_a_restart_keeps_the_window_of_the_run_before() -> None:
    async def go(clock: Callable[[], float]) -> tuple[float, float]:
        now = clock()
        pacer = Pacer(5.0, recent=[now - 0.1 * i for i in range(5)], clock=clock)
        ticket = await pacer.wait()
        ticket.left()
        assert ticket.sent_at is not None
        return now, ticket.sent_at

    now, first = run(go)
    # Five went out in the last 0.4 s before the restart: the sixth waits for their second.
    assert first == pytest.approx(now - 0.4 + 1.0 + WINDOW_MARGIN)


def test_fractional_rates_use_a_longer_window() -> None:
    pacer = Pacer(0.5)
    assert (pacer.window_count, pacer.window_seconds) == (1, 2.0)
    pacer = Pacer(5.5)
    assert (pacer.window_count, pacer.window_seconds) == (5, 1.0)


def _ticket(at: float) -> Ticket:
    ticket = Ticket()
    ticket.left(at)
    return ticket


def test_a_429_cuts_to_what_the_account_accepted() -> None:
    clock = FakeClock()
    pacer = Pacer(60.0, clock=clock)
    for i in range(20):
        pacer.accepted(_ticket(clock.now - 0.9 + i * 0.04))
    pacer.throttle(_ticket(clock.now), retry_after=None)
    assert pacer.rate == pytest.approx(20 * 0.95)
    # The other 429s of the same burst are the same signal: no second cut.
    clock.now += CUT_COOLDOWN - 0.01
    pacer.throttle(_ticket(clock.now), retry_after=None)
    assert pacer.rate == pytest.approx(19.0)
    assert pacer.throttled == 2


def test_without_evidence_a_429_cuts_by_a_factor_and_never_below_the_floor() -> None:
    clock = FakeClock()
    pacer = Pacer(10.0, min_rate=5.0, clock=clock)
    pacer.throttle(_ticket(clock.now), retry_after=None)
    assert pacer.rate == pytest.approx(7.0)
    clock.now += CUT_COOLDOWN  # a new burst: a new cut, held at the floor
    pacer.throttle(_ticket(clock.now), retry_after=None)
    assert pacer.rate == pytest.approx(5.0)


def test_rate_probes_back_up_after_the_hold() -> None:
    async def go(clock: Callable[[], float]) -> list[float]:
        pacer = Pacer(30.0, clock=clock)
        pacer.throttle(_ticket(clock()), retry_after=None)
        rates = [pacer.rate]
        # Within the hold and its first second: no probe yet.
        await asyncio.sleep(HOLD_SECONDS + 0.99)
        (await pacer.wait()).left()
        rates.append(pacer.rate)
        # Ten whole seconds past the hold: ten probes.
        await asyncio.sleep(10.01 - 0.99)
        (await pacer.wait()).left()
        rates.append(pacer.rate)
        return rates

    cut, held, probed = run(go)
    assert cut == held == pytest.approx(30 * 0.7)
    assert probed == pytest.approx(30 * 0.7 * (1 + PROBE_FRACTION) ** 10)


def test_retry_after_holds_every_request_back() -> None:
    async def go(clock: Callable[[], float]) -> float:
        pacer = Pacer(1000.0, clock=clock)
        (await pacer.wait()).left()
        pacer.throttle(_ticket(clock()), retry_after=0.2)
        start = clock()
        (await pacer.wait()).left()
        return clock() - start

    assert run(go) == pytest.approx(0.2)


# -- the live-call ceiling ------------------------------------------------------------

from dialer.pacing import LIVE_PROBE_SECONDS, LiveCeiling  # noqa: E402


def test_the_live_ceiling_holds_slots_until_released_and_learns_the_accounts_limit() -> None:
    async def main(clock: Callable[[], float]) -> None:
        ceiling = LiveCeiling(4, held=1, clock=clock)  # one call left live by an earlier run
        for _ in range(3):
            await ceiling.acquire()
        assert ceiling.held == 4
        waiter = asyncio.create_task(ceiling.acquire())
        await asyncio.sleep(10)
        assert not waiter.done()  # the fifth waits, however long
        ceiling.release()  # a call ended
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert waiter.done() and ceiling.held == 4
        # The account says 429 "concurrency" with 3 live (this request's slot given back).
        ceiling.release()
        ceiling.refused()
        assert ceiling.ceiling == 3
        blocked = asyncio.create_task(ceiling.acquire())
        await asyncio.sleep(LIVE_PROBE_SECONDS - 1)
        assert not blocked.done()
        await asyncio.sleep(2)  # the probe: one call more
        assert blocked.done() and ceiling.ceiling == 4 and ceiling.held == 4
        await asyncio.sleep(10 * LIVE_PROBE_SECONDS)
        ceiling.release()
        await ceiling.acquire()
        assert ceiling.ceiling == 4  # never above the configured limit
        assert ceiling.most_held == 4

    run(main)
