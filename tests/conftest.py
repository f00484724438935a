"""Shared fixtures: real sandbox servers on loopback (a record file each in tmp_path), a real PostgreSQL."""

from __future__ import annotations

import csv
import os
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from dialer.sandbox import RunningSandbox, SandboxOptions, read_record, spawn_process, start_in_thread
from tests.pg import pg_server, pg_url
from tests.stores import store

# Helpers tests import from here (read_record re-exported too). The PostgreSQL fixtures:
# a throwaway server per session, a new database (or store) per test.
__all__ = ["pg_server", "pg_url", "posts", "read_record", "store", "write_leads"]

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


@pytest.fixture
def sandbox_process(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[MakeSandbox]:
    """`make(**SandboxOptions fields)`: a sandbox in a process of its own (its timestamps do not
    share the dialer's GIL), recording to tmp_path, keyed with the test module's `KEY` if it has one.
    """
    started: list[RunningSandbox] = []
    key = getattr(request.module, "KEY", None)

    def make(**options: Any) -> RunningSandbox:
        options.setdefault("record", tmp_path / f"sandbox-process-{len(started)}.jsonl")
        options.setdefault("api_key", key)
        running = spawn_process(SandboxOptions(**options))
        started.append(running)
        return running

    yield make
    for running in started:
        running.stop()


def write_leads(path: Path, rows: list[dict[str, str]]) -> Path:
    """A CSV leads file with the rows' keys as its header."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def posts(record: Path | None, path: str | None = None) -> list[dict[str, Any]]:
    """The POST lines of a sandbox's record (to `path` only, when given)."""
    assert record is not None
    return [r for r in read_record(record) if r["method"] == "POST" and (path is None or r["path"] == path)]


# Tests that start processes (a dialer, a sandbox process, a browser, a database) or time
# whole runs are marked `slow`: `pytest -m "not slow"` runs the rest in well under a minute.
SLOW_FIXTURES = {"sandbox_process", "dialer", "pg", "postgres", "browser"}
SLOW_MODULES = {
    "test_bench_smoke",
    "test_never_twice",
    "test_orphans",
    "test_page",
    "test_resilience",
    "test_upgrade",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = item.path.stem
        fixtures = set(getattr(item, "fixturenames", ()))
        if module in SLOW_MODULES or fixtures & SLOW_FIXTURES:
            item.add_marker(pytest.mark.slow)


def ended_at_once(handler: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A MockTransport handler for POSTs, made to answer the follower's polls too: every call
    it accepted shows `completed` on GET /v2/calls and GET /v2/calls/{id} (look-ups, which
    carry lead_phone_number, still go to `handler`)."""
    import json

    import httpx

    accepted: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        polled = request.method == "GET" and "lead_phone_number" not in request.url.params
        if not polled or not request.url.path.startswith("/v2/calls"):
            response: httpx.Response = handler(request)
            if request.method == "POST" and response.status_code == 200:
                call_id = json.loads(response.content or b"{}").get("response", {}).get("call_id")
                if isinstance(call_id, str):
                    accepted.append(call_id)
            return response
        wanted = request.url.path.rsplit("/", 1)[-1] if request.url.path != "/v2/calls" else None
        calls = [
            {"call_id": c, "status": "completed", "call_status": "completed", "duration": 1}
            for c in accepted
            if wanted is None or c == wanted
        ]
        body = {"status": "ok", "response": {"pagination": {"total_records": len(calls)}, "calls": calls}}
        return httpx.Response(200, json=body)

    return handle


def in_thread(run: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """`run()` started in a thread of its own: the thread, and a list that gets its result
    (or the exception it raised) when it ends."""
    results: list[Any] = []

    def target() -> None:
        try:
            results.append(run())
        except BaseException as exc:  # shown by the assertion, not lost in the thread
            results.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, results
