"""The pacer: strict spacing from the first request, the window counted on real send times,
cuts on 429, probes back up."""

from __future__ import annotations

import asyncio
import time

import pytest

from dialer.pacing import WINDOW_MARGIN, Pacer, Ticket


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
    stamps = asyncio.run(_send(Pacer(40.0), 60))
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    # The very first requests are spaced too: no bucket full of tokens at start.
    assert min(gaps[:10]) > 0.5 / 40
    assert peak(stamps) <= 40


def test_a_slow_first_connection_cannot_squeeze_the_window() -> None:
    # The first request leaves 80 ms after its slot (a new connection); the window counts
    # when it really left, so request 21 waits for a full second after that.
    stamps = asyncio.run(_send(Pacer(20.0), 30, delay_first=0.08))
    assert peak(stamps) <= 20
    assert stamps[20] >= stamps[0] + 1.0 + WINDOW_MARGIN - 1e-6


def test_a_restart_keeps_the_window_of_the_run_before() -> None:
    async def go() -> tuple[float, float]:
        now = time.monotonic()
        pacer = Pacer(5.0, recent=[now - 0.1 * i for i in range(5)])
        ticket = await pacer.wait()
        ticket.left()
        assert ticket.sent_at is not None
        return now, ticket.sent_at

    now, first = asyncio.run(go())
    # Five went out in the last 0.4 s before the restart: the sixth waits for their second.
    assert first >= now - 0.4 + 1.0


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
    pacer = Pacer(60.0)
    now = time.monotonic()
    for i in range(20):
        pacer.accepted(_ticket(now - 0.9 + i * 0.04))
    pacer.throttle(_ticket(now), retry_after=None)
    assert pacer.rate == pytest.approx(20 * 0.95)
    # The other 429s of the same burst are the same signal: no second cut.
    pacer.throttle(_ticket(now), retry_after=None)
    assert pacer.rate == pytest.approx(19.0)
    assert pacer.throttled == 2


def test_without_evidence_a_429_cuts_by_a_factor_and_never_below_the_floor() -> None:
    pacer = Pacer(10.0, min_rate=5.0)
    pacer.throttle(_ticket(time.monotonic()), retry_after=None)
    assert pacer.rate == pytest.approx(7.0)
    pacer._last_cut -= 10
    pacer.throttle(_ticket(time.monotonic()), retry_after=None)
    assert pacer.rate == pytest.approx(5.0)


def test_rate_probes_back_up_after_the_hold() -> None:
    pacer = Pacer(30.0)
    pacer.throttle(_ticket(time.monotonic()), retry_after=None)
    cut = pacer.rate
    pacer._probe(pacer._last_probe + 10.0)
    assert cut < pacer.rate <= 30.0


def test_retry_after_holds_every_request_back() -> None:
    async def go() -> float:
        pacer = Pacer(1000.0)
        (await pacer.wait()).left()
        pacer.throttle(_ticket(time.monotonic()), retry_after=0.2)
        start = time.monotonic()
        (await pacer.wait()).left()
        return time.monotonic() - start

    assert asyncio.run(go()) >= 0.2 - 1e-3
