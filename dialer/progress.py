"""How a run shows its progress: a live bar on a terminal, log lines elsewhere (cron, JSON logs).

Apart from the CLI because both need the dispatcher and rich, which `dialer --version`,
`--help` and `status` must not wait to import.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import structlog
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from dialer.bookkeeping import Progress as RunProgress
from dialer.bookkeeping import RunStats

log = structlog.get_logger("dialer")


class Bar(RunProgress):
    """A live bar on a terminal: done/total, requests per second, ETA and counts per status."""

    every = 0.5

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("[bold]dialing"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}/s"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[counts]}"),
            console=console,
            transient=False,
        )
        self.task = self.progress.add_task("dial", total=None, rate="0.0", counts="")

    def start(self, total: int) -> None:
        self.progress.update(self.task, total=total)
        self.progress.start()

    def advance(self, status: str) -> None:
        self.progress.update(self.task, advance=1)

    def tick(self, stats: RunStats) -> None:
        counts = " ".join(f"{k}={v}" for k, v in sorted(stats.outcomes.items()) if v)
        self.progress.update(self.task, rate=f"{stats.rate:.1f}", counts=counts)

    def stop(self) -> None:
        self.progress.stop()


class LogProgress(RunProgress):
    """Without a terminal (cron), or with JSON logs: plain log lines instead of a bar.

    `run.started` with the rows due, then `run.progress` every `every` seconds, whether
    rows finish or the run waits (look-ups, backoffs): done/total, the requests made and
    their rate (requests per second: deferred rows are no requests), the ETA and counts
    per status, all from the run's one count (`RunStats`, which the summary reads too).
    """

    def __init__(self, every: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.every = every
        self.clock = clock
        self.total = 0
        self.began = 0.0

    def start(self, total: int) -> None:
        self.total = total
        self.began = self.clock()
        log.info("run.started", due=total)

    def tick(self, stats: RunStats) -> None:
        elapsed = self.clock() - self.began
        done = sum(stats.outcomes.values())
        fields: dict[str, Any] = {
            "done": done,
            "total": self.total,
            "requests": stats.requests,
            "rate": round(stats.requests / elapsed, 2) if elapsed > 0 else 0.0,
        }
        left = max(self.total - done, 0)
        if done and left and elapsed > 0:
            fields["eta_seconds"] = round(left * elapsed / done)
        log.info("run.progress", **fields, **{str(k): v for k, v in stats.outcomes.items() if v})
