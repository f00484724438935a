"""Progress ticks on time, not on row outcomes: a run that waits (a backoff, a look-up's
grace) still logs `run.progress` every interval. On test_pacing's virtual-time loop."""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import httpx
from structlog.testing import capture_logs

from dialer.client import SynthflowClient
from dialer.dispatch import Dispatcher, DispatchOptions
from dialer.progress import LogProgress
from tests.conftest import ended_at_once
from tests.test_send import _setup

T = TypeVar("T")


class _Jumps(selectors.DefaultSelector):
    """As test_pacing's: with nothing ready, the clock jumps to the next timer; but while a
    thread works (the journal's slow-disk commits) it waits for the thread, really, or time
    would race timer after timer before the thread is back."""

    def __init__(self, loop: ThreadAwareLoop) -> None:
        super().__init__()
        self._loop = loop

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if self._loop.threads:
            return super().select(0.05)
        ready = super().select(0)
        if not ready and timeout is not None and not self._loop._ready:  # type: ignore[attr-defined]
            self._loop.now += max(timeout, 1e-9)
        return ready


class ThreadAwareLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self.now = 1000.0
        self.threads = 0
        super().__init__(_Jumps(self))

    def time(self) -> float:
        return self.now

    def run_in_executor(self, executor: Any, func: Callable[..., T], *args: Any) -> asyncio.Future[T]:  # type: ignore[override]
        future = super().run_in_executor(executor, func, *args)
        self.threads += 1

        def back(_: object) -> None:
            self.threads -= 1

        future.add_done_callback(back)
        return future


def on_virtual_time(main: Callable[[Callable[[], float]], Coroutine[Any, Any, T]]) -> T:
    loop = ThreadAwareLoop()
    try:
        return loop.run_until_complete(main(loop.time))
    finally:
        loop.close()


def test_progress_lines_come_every_interval_while_the_run_waits_on_a_backoff(tmp_path: Path) -> None:
    journal, campaign = _setup(tmp_path, 1)
    campaign = campaign.model_copy(update={"limits": campaign.limits.model_copy(update={"max_attempts": 3})})
    answers = iter(
        [httpx.Response(503, headers={"Retry-After": "24"}, json={"detail": "busy"})] * 2
        + [httpx.Response(200, json={"status": "ok", "response": {"call_id": "c-1"}})]
    )

    async def go(clock: Callable[[], float]) -> list[Any]:
        client = SynthflowClient(
            "http://sandbox.test",
            "k",
            connections=1,
            transport=httpx.MockTransport(ended_at_once(lambda _: next(answers))),
        )
        progress = LogProgress(every=10, clock=clock)
        with capture_logs() as logs:
            progress.start(1)
            await Dispatcher(campaign, journal, client, DispatchOptions(progress=progress), {}).run()
        await client.aclose()
        return [line for line in logs if line["event"] == "run.progress"]

    lines = on_virtual_time(go)
    # Two Retry-Afters of 24 s: requests at 0, 24 and 48 s, and a line every 10 s between,
    # although no row reaches an outcome before the end; and the last figures at the end.
    assert [(line["done"], line["requests"]) for line in lines] == [(0, 1), (0, 1), (0, 2), (0, 2), (1, 3)]
    assert journal.row(1).status == "sent"
