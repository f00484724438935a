"""The pacer: strict spacing from the first request, cuts on 429, probes back up."""

from __future__ import annotations

import asyncio
import time

import pytest

from dialer.pacing import HEADROOM, Pacer


def test_no_burst_at_start_and_never_closer_than_one_over_rate() -> None:
    async def go() -> list[float]:
        pacer = Pacer(100.0)
        return [await pacer.wait() for _ in range(30)]

    stamps = asyncio.run(go())
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    # The very first gaps are paced too: no bucket full of tokens at start.
    assert min(gaps) >= 1 / 100 - 1e-4
    # Any 1-second window holds at most `rate` sends.
    assert all(sum(1 for t in stamps if s <= t < s + 1) <= 100 for s in stamps)


def test_concurrent_waiters_are_spaced_too() -> None:
    async def go() -> list[float]:
        pacer = Pacer(200.0)
        return sorted(await asyncio.gather(*(pacer.wait() for _ in range(20))))

    stamps = asyncio.run(go())
    assert min(b - a for a, b in zip(stamps, stamps[1:], strict=False)) >= 1 / 200 - 1e-4


def test_a_429_cuts_to_what_the_account_accepted() -> None:
    pacer = Pacer(60.0)
    now = time.monotonic()
    for i in range(20):
        pacer.accepted(now - 0.9 + i * 0.04)
    pacer.throttle(now, retry_after=None)
    assert pacer.rate == pytest.approx(20 * 0.95)
    # The other 429s of the same burst are the same signal: no second cut.
    pacer.throttle(now, retry_after=None)
    assert pacer.rate == pytest.approx(19.0)
    assert pacer.throttled == 2


def test_without_evidence_a_429_cuts_by_a_factor_and_never_below_the_floor() -> None:
    pacer = Pacer(10.0, min_rate=5.0)
    pacer.throttle(time.monotonic(), retry_after=None)
    assert pacer.rate == pytest.approx(7.0)
    pacer._last_cut -= 10
    pacer.throttle(time.monotonic(), retry_after=None)
    assert pacer.rate == pytest.approx(5.0)


def test_rate_probes_back_up_after_the_hold() -> None:
    pacer = Pacer(30.0)
    pacer.throttle(time.monotonic(), retry_after=None)
    cut = pacer.rate
    pacer._probe(pacer._last_probe + 10.0)
    assert cut < pacer.rate <= 30.0


def test_retry_after_holds_every_request_back() -> None:
    async def go() -> float:
        pacer = Pacer(1000.0)
        await pacer.wait()
        pacer.throttle(time.monotonic(), retry_after=0.2)
        start = time.monotonic()
        await pacer.wait()
        return time.monotonic() - start

    assert asyncio.run(go()) >= 0.2 - 1e-3


def test_headroom_is_small() -> None:
    assert 1.0 < HEADROOM <= 1.02
