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

log = structlog.get_logger("dialer")


class Bar(RunProgress):
    """A live bar on a terminal: done/total, rate, ETA and counts per status."""

    def __init__(self, console: Console) -> None:
        self.counts: dict[str, int] = {}
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
        self.counts[status] = self.counts.get(status, 0) + 1
        task = self.progress.tasks[0]
        rate = task.completed / task.elapsed if task.elapsed else 0.0
        counts = " ".join(f"{k}={v}" for k, v in sorted(self.counts.items()))
        self.progress.update(self.task, advance=1, rate=f"{rate:.1f}", counts=counts)

    def stop(self) -> None:
        self.progress.stop()


class LogProgress(RunProgress):
    """Without a terminal (cron), or with JSON logs: plain log lines instead of a bar.

    `run.started` with the rows due, then `run.progress` every `every` seconds: done/total,
    the rate, the ETA and counts per status.
    """

    def __init__(self, every: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.every = every
        self.clock = clock
        self.done = 0
        self.total = 0
        self.began = self.last = 0.0
        self.counts: dict[str, int] = {}

    def start(self, total: int) -> None:
        self.total = total
        self.began = self.last = self.clock()
        log.info("run.started", due=total)

    def advance(self, status: str) -> None:
        self.done += 1
        self.counts[status] = self.counts.get(status, 0) + 1
        now = self.clock()
        if now - self.last < self.every:
            return
        self.last = now
        rate = self.done / (now - self.began) if now > self.began else 0.0
        left = max(self.total - self.done, 0)
        fields: dict[str, Any] = {"done": self.done, "total": self.total, "rate": round(rate, 2)}
        if rate and left:
            fields["eta_seconds"] = round(left / rate)
        log.info("run.progress", **fields, **self.counts)
