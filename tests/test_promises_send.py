"""Issue 10, the sending side: each promise end to end against the sandbox, its record the witness.

Clocks are injected (the calling-hours clock, an event loop's virtual time); nothing sleeps
to time a test.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from dialer.errors import ApiUnreachable
from dialer.run import RunOptions, campaign_status, run_campaign
from dialer.sandbox import read_record
from tests import test_resilience as resilience
from tests.conftest import posts, write_leads
from tests.test_campaign import ALL_DAY, KEY, campaign, numbered_leads


def test_a_restart_keeps_the_whole_rate_period_below_one_call_a_second(tmp_path: Path, sandbox: Any) -> None:
    server = sandbox()
    write_leads(tmp_path / "leads.csv", numbered_leads(2))
    config = campaign(
        tmp_path, f'mode = "call"\n[call]\nmodel_id = "m"\n[limits]\nrate_per_second = 0.1\n{ALL_DAY}'
    )
    run_campaign(config, RunOptions(api_key=KEY, base_url=server.url, limit=1))
    assert len(posts(server.record)) == 1
    # As if that request had left 7 s ago: one call per 10 s leaves 3 s to wait, not none.
    before = time.time() - 7
    stamp = datetime.fromtimestamp(before, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    with sqlite3.connect(config.journal_path) as db:
        db.execute("UPDATE leads SET intent_at = ?, updated_at = ? WHERE status = 'sent'", (before, stamp))
    run_campaign(config, RunOptions(api_key=KEY, base_url=server.url))
    second = posts(server.record)[1]
    assert second["time"] >= before + 10 - 0.05


class Answers(httpx.AsyncHTTPTransport):
    """The real transport to the sandbox, counting the answers that came back."""

    def __init__(self) -> None:
        super().__init__()
        self.answered = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        self.answered += 1
        return response


def test_hours_are_checked_after_the_lane_comes_so_a_slow_api_calls_nobody_after_closing(
    tmp_path: Path, sandbox: Any
) -> None:
    # One connection and a slow API: the second and third rows get their send slots at once,
    # then wait for the lane. The hours close (21:00 in New York) once the first answer is back.
    server = sandbox(latency_ms=400)
    write_leads(tmp_path / "leads.csv", numbered_leads(3))
    config = campaign(
        tmp_path, 'mode = "call"\n[call]\nmodel_id = "m"\n[limits]\nrate_per_second = 50\nconcurrency = 1\n'
    )
    transport = Answers()
    open_, closed = datetime(2026, 11, 24, 1, 59, tzinfo=UTC), datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
    result = run_campaign(
        config,
        RunOptions(
            api_key=KEY,
            base_url=server.url,
            transport=transport,
            clock=lambda: closed if transport.answered else open_,
        ),
    )
    assert [r["body"]["name"] for r in posts(server.record)] == ["Lead 0"]
    assert result.counts == {"sent": 1, "deferred": 2}


def requests_of(record: Path) -> list[dict[str, Any]]:
    """POSTs and look-ups (the follower's polls, which name no phone, left out)."""
    return [
        r
        for r in read_record(record)
        if r["path"] == "/v2/calls" and (r["method"] == "POST" or "lead_phone_number" in r["query"])
    ]


@pytest.mark.timeout(20)  # the code before the fix waited out the 30 s grace first
def test_a_lost_answer_is_looked_up_at_once_and_a_call_found_is_sent_at_once(
    tmp_path: Path, sandbox: Any
) -> None:
    server = sandbox(drop_rate=1.0)  # the call is placed, its answer lost
    write_leads(tmp_path / "leads.csv", numbered_leads(1))
    config = campaign(
        tmp_path, f'mode = "call"\n[call]\nmodel_id = "m"\n[limits]\nsettle_after_seconds = 30\n{ALL_DAY}'
    )
    result = run_campaign(config, RunOptions(api_key=KEY, base_url=server.url))
    post, lookup = requests_of(server.record)
    assert (post["method"], lookup["method"]) == ("POST", "GET")
    assert lookup["time"] - post["time"] < 5  # not after the grace
    assert result.counts == {"sent": 1}


def test_not_found_is_looked_up_again_after_the_grace_before_a_redial(tmp_path: Path, sandbox: Any) -> None:
    server = sandbox()
    write_leads(tmp_path / "leads.csv", numbered_leads(1))
    config = campaign(
        tmp_path, f'mode = "call"\n[call]\nmodel_id = "m"\n[limits]\nsettle_after_seconds = 1.5\n{ALL_DAY}'
    )
    run_campaign(config, RunOptions(api_key=KEY, base_url=server.url, limit=0))
    # As if an earlier run had died right after committing its intent, before the request left.
    intent_at = time.time()
    with sqlite3.connect(config.journal_path) as db:
        db.execute("UPDATE leads SET status = 'unknown', attempts = 1, intent_at = ?", (intent_at,))
    result = run_campaign(config, RunOptions(api_key=KEY, base_url=server.url))
    first, again, redial = requests_of(server.record)
    assert [first["method"], again["method"], redial["method"]] == ["GET", "GET", "POST"]
    assert first["time"] < intent_at + 1.5 <= again["time"] <= redial["time"]
    assert result.counts == {"sent": 1}


class Interrupts(Answers):
    """Sends this process a SIGINT once the first answer is back."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        if self.answered == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return response


def test_after_ctrl_c_the_summary_counts_what_status_shows(tmp_path: Path, sandbox: Any) -> None:
    server = sandbox(latency_ms=200)
    # Every other lead closed (midnight in Tokyo): deferred by the feeder while the open
    # ones wait for the one slow connection.
    leads = [
        {"Name": f"Lead {i}", "Phone": f"+1 212 555 {i:04d}", "Time Zone": "Asia/Tokyo" if i % 2 else ""}
        for i in range(40)
    ]
    write_leads(tmp_path / "leads.csv", leads)
    config = campaign(
        tmp_path, 'mode = "call"\n[call]\nmodel_id = "m"\n[limits]\nrate_per_second = 50\nconcurrency = 1\n'
    )
    monday = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)  # 10:00 in New York, midnight in Tokyo
    result = run_campaign(
        config,
        RunOptions(
            api_key=KEY,
            base_url=server.url,
            transport=Interrupts(),
            clock=lambda: monday,
            handle_signals=True,
        ),
    )
    assert result.stats.stopped_by == "SIGINT"
    status = campaign_status(config, clock=lambda: monday)
    assert status is not None
    # Every row started pending: what this run did is what the journal now holds.
    this_run = {k: v for k, v in result.stats.outcomes.items() if v}
    assert this_run == {k: v for k, v in status.counts.items() if k != "pending"}
    assert this_run["sent"] == len(posts(server.record))
    assert result.stats.requests == len(posts(server.record))


# -- an API that is down ---------------------------------------------------------------


def closed_port() -> str:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


@pytest.mark.parametrize("concurrency", [1, 8])
def test_an_api_that_cannot_be_reached_stops_the_run_with_every_row_left_to_dial(
    tmp_path: Path, sandbox: Any, concurrency: int
) -> None:
    resilience.write_lead_rows(tmp_path / "leads.csv", resilience.lead_rows(range(12)))
    config = resilience.write_campaign(
        tmp_path, base_url=closed_port(), max_attempts=3, concurrency=concurrency
    )
    with pytest.raises(ApiUnreachable, match="the API was unreachable") as stopped:
        resilience.run_here(config)
    assert stopped.value.exit_code == 75
    # Refused connections reached no API: no row failed, none has an attempt counted.
    for row in resilience.report_of(tmp_path).values():
        assert (row["dialer_status"], row["dialer_attempts"], row["dialer_error"]) == ("pending", "0", "")

    # Once the API is back, a later run dials each row exactly once.
    api = sandbox(api_key=resilience.KEY)
    assert resilience.run_here(config, base_url=api.url).exit_code == 0
    calls = resilience.placed(api.record)
    assert {phone: len(ids) for phone, ids in calls.items()} == {resilience.e164(i): 1 for i in range(12)}


def test_one_rows_flaky_connection_still_gives_up_after_max_attempts(tmp_path: Path) -> None:
    flaky = resilience.e164(0)

    def script(phone: str, nth: int) -> tuple[int, bool] | Exception:
        return httpx.ConnectError("connection refused") if phone == flaky else (200, True)

    api = resilience.FakeApi(script)
    resilience.write_lead_rows(tmp_path / "leads.csv", resilience.lead_rows(range(10)))
    config = resilience.write_campaign(tmp_path, max_attempts=3, concurrency=1, rate=200)
    result = resilience.run_here(config, transport=api.transport)
    assert result.exit_code == 0
    report = resilience.report_of(tmp_path)
    assert (report["Lead 0"]["dialer_status"], report["Lead 0"]["dialer_attempts"]) == ("failed", "3")
    assert report["Lead 0"]["dialer_error"].startswith(
        "gave up after 3 attempts: no connection: ConnectError"
    )
    assert {report[f"Lead {i}"]["dialer_status"] for i in range(1, 10)} == {"sent"}


def test_the_cli_says_in_one_line_that_the_api_was_unreachable_and_exits_75(tmp_path: Path) -> None:
    resilience.write_lead_rows(tmp_path / "leads.csv", resilience.lead_rows(range(6)))
    config = resilience.write_campaign(tmp_path, base_url=closed_port(), max_attempts=2)
    done = subprocess.run(
        [sys.executable, "-m", "dialer", "run", str(config)],
        capture_output=True,
        text=True,
        env={**os.environ, "SYNTHFLOW_API_KEY": resilience.KEY},
        timeout=120,
        check=False,
    )
    assert done.returncode == 75, done.stderr
    failures = [line for line in done.stderr.splitlines() if "unreachable" in line]
    assert len(failures) == 1 and "Traceback" not in done.stderr
