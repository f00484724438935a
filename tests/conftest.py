"""Shared fixtures: real sandbox servers on loopback (a record file each in tmp_path), a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dialer.sandbox import RunningSandbox, SandboxOptions, read_record, start_in_thread
from tests.pg import pg_server, pg_url
from tests.stores import store

# read_record re-exported: `from tests.conftest import read_record` works too. The
# PostgreSQL fixtures: a throwaway server per session, a new database (or store) per test.
__all__ = ["pg_server", "pg_url", "read_record", "store"]

MakeSandbox = Callable[..., RunningSandbox]


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
