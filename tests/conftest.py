"""Shared fixtures: real sandbox servers on loopback, each with a record file in tmp_path."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from dialer.sandbox import RunningSandbox, SandboxOptions, read_record, start_in_thread

__all__ = ["read_record"]  # re-exported: `from tests.conftest import read_record` works too

MakeSandbox = Callable[..., RunningSandbox]

# The dialer's default clock (bookkeeping.utc_now) at 20:00 UTC today, this process and
# every `dialer` it starts: a time of day inside the law's window for every US zone (15:00
# in New York, 10:00 in Honolulu), so a test that does not inject a clock does not depend
# on the hour it runs at. The date stays today's. Tests of hours inject their own clocks.
_started = datetime.now(UTC)
os.environ.setdefault(
    "DIALER_TEST_CLOCK_SHIFT_SECONDS",
    repr((_started.replace(hour=20, minute=0, second=0, microsecond=0) - _started).total_seconds()),
)


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[MakeSandbox]:
    """A factory `make(**SandboxOptions fields) -> RunningSandbox`, stopped at teardown.

    Each sandbox records to its own file in tmp_path unless `record=` is given;
    `running.record` is that path.
    """
    started: list[RunningSandbox] = []

    def make(**options: Any) -> RunningSandbox:
        options.setdefault("record", tmp_path / f"sandbox-{len(started)}.jsonl")
        running = start_in_thread(SandboxOptions(**options))
        started.append(running)
        return running

    yield make
    for running in started:
        running.stop()
