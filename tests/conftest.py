"""Shared fixtures: real sandbox servers on loopback, each with a record file in tmp_path."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dialer.sandbox import RunningSandbox, SandboxOptions, read_record, start_in_thread

__all__ = ["read_record"]  # re-exported: `from tests.conftest import read_record` works too

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


# The throwaway PostgreSQL server (session-scoped) and a fresh database per test.
from tests.pg import pg_server, pg_url  # noqa: E402
from tests.stores import store  # noqa: E402

__all__ += ["pg_server", "pg_url", "store"]
