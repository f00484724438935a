"""Calls followed to their end, against `dialer simulate` with telephony on.

The witness is the sandbox's record: its accepted POSTs and its `call.ended` lines
say what every call did, `fate()` what it collected; the report must say the same.
In-process runs use calls of a fraction of a second (the outcomes, not the timings,
are asserted); the kill -9 test runs the dialer as a process.
"""

from __future__ import annotations

import csv
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dialer.config import load_campaign
from dialer.errors import FailingError
from dialer.run import Collect, RunOptions, RunResult, campaign_status, report_campaign, run_campaign
from dialer.sandbox import RunningSandbox, SandboxOptions, fate, read_events, read_record
from tests.conftest import MakeSandbox
from tests.test_resilience import Dialer, dialer  # noqa: F401 - the fixture

KEY = "test-key"
MODEL = "model-outcomes"
ALL_DAYS = '["mon", "tue", "wed", "thu", "fri", "sat", "sun"]'


def e164(i: int) -> str:
    return f"+1415555{i:04d}"


def write_campaign(folder: Path, leads: int, *, url: str, limits: str = "", poll: float = 0.05) -> Path:
    with (folder / "leads.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Name", "Phone"])
        writer.writerows([f"Lead {i}", e164(i)] for i in range(leads))
    path = folder / "campaign.toml"
    path.write_text(
        f'name = "outcomes"\nmode = "call"\nleads = "leads.csv"\nreport = "out/report.csv"\n'
        f'journal = "out/journal.sqlite"\n[api]\nbase_url = "{url}"\n[call]\nmodel_id = "{MODEL}"\n'
        f"[limits]\nrate_per_second = 50\nconcurrency = 8\nsettle_after_seconds = 0.2\n{limits}\n"
        f"[outcomes]\npoll_seconds = {poll}\n"
        f'[hours]\nstart = "00:00"\nend = "24:00"\ndays = {ALL_DAYS}\n',
        encoding="utf-8",
    )
    return path


def run_here(campaign: Path, url: str, **flags: Any) -> RunResult:
    return run_campaign(load_campaign(campaign), RunOptions(api_key=KEY, base_url=url, **flags))


def report(folder: Path) -> list[dict[str, str]]:
    with (folder / "out" / "report.csv").open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def accepted(record: Path) -> dict[str, tuple[str, float]]:
    """call_id -> (phone, time the sandbox accepted it)."""
    return {
        r["response"]["response"]["call_id"]: (r["body"]["phone"], r["time"])
        for r in read_record(record)
        if r["method"] == "POST" and r["path"] == "/v2/calls" and r["status"] == 200
    }


def most_live(record: Path) -> int:
    """The most calls live at any moment, from the record: accepted POSTs up, call.ended down."""
    moves = [(t, 1) for _, t in accepted(record).values()]
    moves += [(e["time"], -1) for e in read_events(record)]
    live = peak = 0
    for _, step in sorted(moves):  # at one moment, ends (-1) sort before placements
        live += step
        peak = max(peak, live)
    return peak


def concurrency_429s(record: Path) -> int:
    return sum(
        1
        for r in read_record(record)
        if r["method"] == "POST" and r["status"] == 429 and "Concurrency" in str(r["response"])
    )


def assert_report_says_what_the_record_says(
    folder: Path, api: RunningSandbox, options: SandboxOptions
) -> None:
    assert api.record is not None
    ended = {e["call_id"]: e for e in read_events(api.record)}
    calls = accepted(api.record)
    rows = report(folder)
    assert rows and all(r["dialer_status"] == "sent" for r in rows)
    for row in rows:
        call_id = row["dialer_id"]
        phone, _ = calls[call_id]
        assert phone == row["Phone"]
        assert row["dialer_call_status"] == ended[call_id]["status"], row
        assert float(row["dialer_duration"]) == pytest.approx(ended[call_id]["duration"]), row
        assert row["dialer_calls"] == "1"
        destiny = fate(options.seed, phone, 1, options)
        assert destiny.status == ended[call_id]["status"]
        for name, _values in options.collected:
            assert row[f"dialer_collected_{name}"] == (destiny.collected or {}).get(name, ""), row
        assert bool(row["dialer_recording_url"]) == destiny.answered, row


def test_every_row_says_how_its_call_ended_and_the_live_limit_holds(
    tmp_path: Path, sandbox: MakeSandbox
) -> None:
    options: dict[str, Any] = dict(
        api_key=KEY,
        seed=11,
        call_seconds="0.1:0.4",
        outcomes="completed=0.5,no-answer=0.2,busy=0.1,hangup_on_voicemail=0.2",
        collected=["interest=yes|no|maybe"],
        collected_shape="mixed",  # flat and keyed by the agent's id, both read
        max_live_calls=5,
    )
    api = sandbox(**options)
    campaign = write_campaign(tmp_path, 40, url=api.url, limits="max_live_calls = 5")

    result = run_here(campaign, api.url)

    assert result.exit_code == 0
    assert api.record is not None
    assert_report_says_what_the_record_says(tmp_path, api, SandboxOptions(**options))
    assert len(accepted(api.record)) == 40  # each lead called once
    assert most_live(api.record) <= 5
    assert concurrency_429s(api.record) == 0  # configured right: never refused
    assert result.calls is not None and result.calls.live == 0
    assert result.stats.most_live <= 5
    # Polling cost: batched listing, not one GET per call per poll.
    gets = [r for r in read_record(api.record) if r["method"] == "GET"]
    assert len(gets) <= 1.5 * 40, len(gets)
    assert result.stats.polls == len(gets)


def test_a_campaign_allowing_more_live_calls_than_the_account_loses_no_row(
    tmp_path: Path, sandbox: MakeSandbox
) -> None:
    api = sandbox(api_key=KEY, seed=5, call_seconds="0.2:0.4", max_live_calls=3)
    campaign = write_campaign(tmp_path, 24, url=api.url, limits="max_live_calls = 10")

    result = run_here(campaign, api.url)

    assert result.exit_code == 0
    assert api.record is not None
    rows = report(tmp_path)
    assert [r["dialer_status"] for r in rows] == ["sent"] * 24  # no failed row
    assert {r["dialer_call_status"] for r in rows} == {"completed"}
    assert concurrency_429s(api.record) >= 1  # the account's limit was met, and learnt
    assert result.stats.live_refusals == concurrency_429s(api.record)
    assert len(accepted(api.record)) == 24


def test_stop_when_failed_stops_a_campaign_whose_calls_all_fail(tmp_path: Path, sandbox: MakeSandbox) -> None:
    api = sandbox(api_key=KEY, seed=2, call_seconds="0.05:0.1", outcomes="failed=1")
    limits = "max_live_calls = 2\nstop_when_failed = { share = 0.5, of_last = 4 }"
    campaign = write_campaign(tmp_path, 60, url=api.url, limits=limits)

    with pytest.raises(FailingError) as stopped:
        run_here(campaign, api.url)

    assert str(stopped.value) == (
        "stopped: 4 of the last 4 calls failed (call ended failed (4));"
        " rows not yet dialed are left as they were"
    )
    assert api.record is not None
    placed = len(accepted(api.record))
    assert 4 <= placed <= 4 + 2 + 1  # the four, those live when they ended, one in flight
    rows = report(tmp_path)
    assert sum(r["dialer_status"] == "pending" for r in rows) == 60 - placed  # untried: as they were
    assert all(r["dialer_attempts"] == "0" for r in rows if r["dialer_status"] == "pending")


def test_no_wait_leaves_live_calls_and_report_collects_their_outcomes(
    tmp_path: Path, sandbox: MakeSandbox
) -> None:
    now = [time.time()]
    api = sandbox(api_key=KEY, seed=4, call_seconds="100:200", clock=lambda: now[0])
    campaign = write_campaign(tmp_path, 5, url=api.url)

    result = run_here(campaign, api.url, no_wait=True)

    assert result.exit_code == 75  # calls live: a later run, status or report collects them
    assert result.calls is not None and result.calls.live == 5
    assert {r["dialer_call_status"] for r in report(tmp_path)} <= {"", "ringing"}  # as last seen
    loaded = load_campaign(campaign)
    status = campaign_status(loaded, collect=Collect(KEY, api.url))
    assert status is not None and status.calls is not None
    assert status.calls.live == 5 and set(status.calls.by_status) == set()  # still ringing
    now[0] += 300  # every call has ended, by the sandbox's clock
    assert api.record is not None
    posts_before = sum(r["method"] == "POST" for r in read_record(api.record))

    report_campaign(loaded, tmp_path / "out" / "report.csv", Collect(KEY, api.url))

    rows = report(tmp_path)
    assert {r["dialer_call_status"] for r in rows} == {"completed"}
    assert sum(r["method"] == "POST" for r in read_record(api.record)) == posts_before  # no POST ever
    status = campaign_status(loaded, collect=Collect(KEY, api.url))
    assert status is not None and status.calls is not None
    assert (status.calls.live, status.calls.pick_up_rate) == (0, 1.0)


def test_a_call_that_never_ends_is_given_up_after_the_time_out(tmp_path: Path, sandbox: MakeSandbox) -> None:
    api = sandbox(api_key=KEY, seed=1, call_seconds="0.05", outcomes="stuck=1")
    campaign = write_campaign(tmp_path, 2, url=api.url)
    text = campaign.read_text().replace("[outcomes]\n", '[outcomes]\ngive_up_after = "1s"\n')
    campaign.write_text(text)

    result = run_here(campaign, api.url)

    assert result.exit_code == 0
    rows = report(tmp_path)
    assert [r["dialer_call_status"] for r in rows] == ["in-progress", "in-progress"]
    assert all(
        r["dialer_error"] == "the call never ended: last seen 'in-progress' 1s after it was placed"
        for r in rows
    )
    assert result.calls is not None and result.calls.timed_out == 2 and result.calls.pick_up_rate is None


@pytest.mark.slow
def test_outcomes_are_collected_after_a_kill_9_with_calls_live(
    tmp_path: Path,
    dialer: Callable[..., Dialer],  # noqa: F811
    sandbox_process: Callable[..., RunningSandbox],
) -> None:
    api = sandbox_process(api_key=KEY, seed=9, call_seconds="1.5:2.5", outcomes="completed=0.7,busy=0.3")
    assert api.record is not None
    campaign = str(write_campaign(tmp_path, 6, url=api.url, poll=0.2))

    first = dialer("run", campaign, key=KEY)
    deadline = time.monotonic() + 30
    while len(accepted(api.record)) < 6:  # every call placed, none ended yet
        assert time.monotonic() < deadline, first.stderr
        time.sleep(0.02)
    first.send(signal.SIGKILL)
    assert first.wait() == -signal.SIGKILL
    assert not read_events(api.record), "calls ended before the kill: a weaker test"

    again = dialer("run", campaign, key=KEY)
    assert again.wait(60) == 0, again.stderr

    calls = accepted(api.record)
    assert len(calls) == 6  # nothing placed twice
    ended = {e["call_id"]: e["status"] for e in read_events(api.record)}
    rows = report(tmp_path)
    assert {r["dialer_id"] for r in rows} == set(calls)
    assert all(r["dialer_call_status"] == ended[r["dialer_id"]] for r in rows), rows


def test_chats_are_not_waited_for_and_the_report_carries_their_chat_status(
    tmp_path: Path, sandbox: MakeSandbox
) -> None:
    api = sandbox(api_key=KEY, chat_seconds="0")
    campaign = write_campaign(tmp_path, 3, url=api.url)
    text = campaign.read_text().replace('mode = "call"', 'mode = "chat"')
    text = text.replace(
        f'[call]\nmodel_id = "{MODEL}"\n',
        '[chat]\nagent_id = "2a886b7d-d52d-4f8b-8ea0-19d3edc79214"\nchannel = "sms"\n'
        '[numbers]\npool = ["+14155550100"]\nstrategy = "round_robin"\n',
    )
    campaign.write_text(text)

    result = run_here(campaign, api.url)

    assert result.exit_code == 0 and result.calls is None  # nothing followed, nothing waited for
    assert api.record is not None
    assert not [r for r in read_record(api.record) if r["method"] == "GET"]
    assert {r["dialer_call_status"] for r in report(tmp_path)} == {""}
    report_campaign(load_campaign(campaign), tmp_path / "out" / "report.csv", Collect(KEY, api.url))
    rows = report(tmp_path)
    assert [(r["dialer_call_status"], r["dialer_calls"]) for r in rows] == [("completed", "1")] * 3
