"""[redial]: a lead whose call ended a way the campaign names is called again after its
wait, up to max_calls calls in all, the decision journaled once with the call's end.

The witness is the sandbox's record (its accepted POSTs per phone), `fate()` predicts how
every call ends, so the exact allowance of calls per lead is known in advance.
"""

from __future__ import annotations

import csv
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from dialer.config import Redial, load_campaign
from dialer.errors import CampaignError
from dialer.run import RunOptions, RunResult, campaign_status, run_campaign
from dialer.sandbox import RunningSandbox, SandboxOptions, fate, read_events, read_record
from dialer.transitions import RedialPolicy, redial_after
from tests.conftest import MakeSandbox
from tests.test_resilience import Dialer, dialer  # noqa: F401 - the fixture

KEY = "test-key"
MODEL = "model-redial"
ALL_DAYS = '["mon", "tue", "wed", "thu", "fri", "sat", "sun"]'
# 11:00 in California (the leads' +1415 numbers): inside the federal window for hours.
START = datetime(2026, 6, 2, 18, 0, tzinfo=UTC)

POLICY = RedialPolicy({"no-answer": 90.0, "busy": 1800.0}, max_calls=3)


@pytest.mark.parametrize(
    ("status", "placed", "due"),
    [
        ("no-answer", 1, 1090.0),  # the first call unanswered: again after 90 s
        ("no-answer", 2, 1090.0),
        ("no-answer", 3, None),  # max_calls spent (the first call included)
        ("busy", 1, 2800.0),
        ("busy", 4, None),
        ("completed", 1, None),  # not named: never again
        ("hangup_on_voicemail", 1, None),  # not named by default
        ("left_voicemail", 1, None),
        ("", 1, None),
    ],
)
def test_the_redial_decision_from_a_table(status: str, placed: int, due: float | None) -> None:
    decided = redial_after(status, placed, 1000.0, POLICY)
    assert (decided.due if decided else None) == due
    if decided is not None:
        shown = f"{datetime.fromtimestamp(due or 0, UTC):%Y-%m-%dT%H:%M:%SZ}"
        assert decided.error == f"{status} at 1970-01-01T00:16:40Z; next call due {shown}"


def test_voicemail_statuses_are_told_apart_and_none_is_redialed_by_default() -> None:
    assert Redial().waits == {} and Redial().max_calls == 3
    both = RedialPolicy({"hangup_on_voicemail": 60.0})
    assert redial_after("hangup_on_voicemail", 1, 0.0, both) is not None
    assert redial_after("left_voicemail", 1, 0.0, both) is None


def write_campaign(folder: Path, leads: int, *, url: str, redial: str) -> Path:
    with (folder / "leads.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Name", "Phone"])
        writer.writerows([f"Lead {i}", f"+1415555{i:04d}"] for i in range(leads))
    path = folder / "campaign.toml"
    path.write_text(
        f'name = "redial"\nmode = "call"\nleads = "leads.csv"\nreport = "out/report.csv"\n'
        f'journal = "out/journal.sqlite"\n[api]\nbase_url = "{url}"\n[call]\nmodel_id = "{MODEL}"\n'
        "[limits]\nrate_per_second = 50\nconcurrency = 8\nsettle_after_seconds = 0.2\n"
        "[outcomes]\npoll_seconds = 0.05\n"
        f'[hours]\nstart = "00:00"\nend = "24:00"\ndays = {ALL_DAYS}\n[redial]\n{redial}\n',
        encoding="utf-8",
    )
    return path


def test_a_misspelt_status_in_redial_is_one_line_naming_it(tmp_path: Path) -> None:
    campaign = write_campaign(tmp_path, 1, url="http://127.0.0.1:9", redial='no_answer = "2h"')
    with pytest.raises(CampaignError) as refused:
        load_campaign(campaign)
    assert "no_answer" in str(refused.value) and "did you mean 'no-answer'" in str(refused.value)
    bad = write_campaign(tmp_path, 1, url="http://127.0.0.1:9", redial='busy = "soon"')
    with pytest.raises(CampaignError, match="busy"):
        load_campaign(bad)


def run_at(campaign: Path, url: str, now: datetime) -> RunResult:
    return run_campaign(load_campaign(campaign), RunOptions(api_key=KEY, base_url=url, clock=lambda: now))


def posts_per_phone(record: Path) -> Counter[str]:
    return Counter(
        r["body"]["phone"]
        for r in read_record(record)
        if r["method"] == "POST" and r["path"] == "/v2/calls" and r["status"] == 200
    )


def allowance(options: SandboxOptions, phone: str, waits: dict[str, float], max_calls: int) -> int:
    """Calls the policy allows the lead, from how each of its calls will end."""
    calls = 1
    while calls < max_calls and fate(options.seed, phone, calls, options).status in waits:
        calls += 1
    return calls


def report(folder: Path) -> list[dict[str, str]]:
    with (folder / "out" / "report.csv").open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def test_each_outcome_is_redialed_after_its_delay_and_never_past_max_calls(
    tmp_path: Path, sandbox: MakeSandbox
) -> None:
    options: dict[str, Any] = dict(
        api_key=KEY, seed=4, outcomes="completed=0.3,no-answer=0.4,busy=0.2,hangup_on_voicemail=0.1"
    )
    api = sandbox(**options)
    assert api.record is not None
    campaign = write_campaign(
        tmp_path, 30, url=api.url, redial='no-answer = "90s"\nbusy = "30m"\nmax_calls = 3'
    )
    waits = {"no-answer": 90.0, "busy": 1800.0}
    phones = [f"+1415555{i:04d}" for i in range(30)]

    first = run_at(campaign, api.url, START)
    assert first.exit_code == 75  # redials wait: a later run (cron) has work
    assert sum(posts_per_phone(api.record).values()) == 30
    rows = {r["Phone"]: r for r in report(tmp_path)}
    unanswered = [p for p in phones if fate(4, p, 1, SandboxOptions(**options)).status in waits]
    assert unanswered
    for phone in unanswered:
        row = rows[phone]
        assert row["dialer_status"] == "deferred", row
        assert row["dialer_error"].startswith(f"{row['dialer_call_status']} at "), row
        assert "; next call due " in row["dialer_error"]
    status = campaign_status(load_campaign(campaign), clock=lambda: START)
    assert status is not None and status.due_now == 0  # nothing due before its wait
    assert status.next_due is not None and status.next_due > START

    # 60 s later: no wait is over, nobody is called.
    assert run_at(campaign, api.url, START + timedelta(seconds=60)).stats.requests == 0
    assert sum(posts_per_phone(api.record).values()) == 30
    # Every 31 minutes a cron run: every due redial is made, busy ones after their 30 min.
    now = START
    for _ in range(6):
        now += timedelta(minutes=31)
        run_at(campaign, api.url, now)
    placed = posts_per_phone(api.record)
    exact = {p: allowance(SandboxOptions(**options), p, waits, 3) for p in phones}
    assert placed == exact
    assert max(placed.values()) == 3 and sum(placed.values()) > 30
    final = {r["Phone"]: r for r in report(tmp_path)}
    assert all(r["dialer_status"] == "sent" for r in final.values())
    assert all(int(final[p]["dialer_calls"]) == exact[p] for p in phones)


def test_a_busy_redial_is_not_made_before_its_wait(tmp_path: Path, sandbox: MakeSandbox) -> None:
    api = sandbox(api_key=KEY, seed=1, outcomes="busy=1")
    assert api.record is not None
    campaign = write_campaign(tmp_path, 3, url=api.url, redial='busy = "30m"\nmax_calls = 2')
    run_at(campaign, api.url, START)
    assert run_at(campaign, api.url, START + timedelta(minutes=29)).stats.requests == 0
    run_at(campaign, api.url, START + timedelta(minutes=31))
    assert set(posts_per_phone(api.record).values()) == {2}
    run_at(campaign, api.url, START + timedelta(hours=5))
    assert set(posts_per_phone(api.record).values()) == {2}  # max_calls = 2: no third
    assert {r["dialer_status"] for r in report(tmp_path)} == {"sent"}


def _reap(running: Dialer) -> None:
    """Without blocking: the exit code, once the process has exited."""
    pid, status = os.waitpid(running.pid, os.WNOHANG)
    if pid:
        running.code = os.waitstatus_to_exitcode(status)


def _record_lines(record: Path) -> int:
    with record.open("rb") as handle:
        return sum(1 for _ in handle)


@pytest.mark.slow
def test_kill_9_in_a_loop_during_redials_makes_no_extra_call(
    tmp_path: Path,
    dialer: Callable[..., Dialer],  # noqa: F811
    sandbox_process: Callable[..., RunningSandbox],
) -> None:
    """Runs killed at random moments (placing, following, deciding a redial), started again
    like cron: the record shows each lead called exactly the policy's allowance, never a
    call before its wait was over."""
    options: dict[str, Any] = dict(
        api_key=KEY, seed=21, call_seconds="0.1:0.4", outcomes="completed=0.3,no-answer=0.5,busy=0.2"
    )
    api = sandbox_process(**options)
    assert api.record is not None
    waits = {"no-answer": 1.0, "busy": 2.0}
    campaign = write_campaign(
        tmp_path, 16, url=api.url, redial='no-answer = "1s"\nbusy = "2s"\nmax_calls = 3'
    )
    text = campaign.read_text().replace("poll_seconds = 0.05", "poll_seconds = 0.1")
    campaign.write_text(text)
    chance = random.Random(5)
    kills = 0
    for _ in range(80):
        before = _record_lines(api.record)
        running = dialer("run", str(campaign), key=KEY)
        grows = chance.randint(1, 12)  # killed after that many more lines in the record
        deadline = time.monotonic() + 30
        while running.code is None:
            if chance.random() < 0.6 and _record_lines(api.record) >= before + grows:
                running.send(signal.SIGKILL)
                kills += 1
            _reap(running)
            assert time.monotonic() < deadline, running.stderr
            time.sleep(0.01)
        code = running.wait()
        assert code in (0, 75, -signal.SIGKILL), running.stderr
        if code == 0:
            break
        time.sleep(0.2)  # the redials' waits are real seconds here
    else:
        raise AssertionError("the campaign never finished")
    assert kills >= 3, "too few kills for the test to mean anything"

    sandbox_options = SandboxOptions(**options)
    phones = [f"+1415555{i:04d}" for i in range(16)]
    placed = posts_per_phone(api.record)
    assert placed == {p: allowance(sandbox_options, p, waits, 3) for p in phones}
    # Never a call before the wait of the one before it was over (from its end, as recorded).
    posted: dict[str, list[float]] = {}
    for line in read_record(api.record):
        if line["method"] == "POST" and line["path"] == "/v2/calls" and line["status"] == 200:
            posted.setdefault(line["body"]["phone"], []).append(line["time"])
    ended: dict[str, list[tuple[float, str]]] = {}
    for event in read_events(api.record):
        ended.setdefault(event["phone"], []).append((event["time"], event["status"]))
    for phone, times in posted.items():
        ends = sorted(ended.get(phone, []))
        for later, (end_time, end_status) in zip(times[1:], ends, strict=False):
            assert later >= end_time + waits[end_status], (phone, times, ends)


def test_status_and_the_summary_show_the_pick_up_rate_by_attempt_and_when_redials_are_due(
    tmp_path: Path, sandbox: MakeSandbox
) -> None:
    options: dict[str, Any] = dict(api_key=KEY, seed=4, outcomes="completed=0.5,no-answer=0.5")
    api = sandbox(**options)
    campaign = write_campaign(tmp_path, 20, url=api.url, redial='no-answer = "90s"')
    first = run_at(campaign, api.url, START)
    sandbox_options = SandboxOptions(**options)
    phones = [f"+1415555{i:04d}" for i in range(20)]
    firsts = [fate(4, p, 1, sandbox_options).status for p in phones]
    assert first.calls is not None
    assert first.calls.by_attempt == {1: (firsts.count("completed"), 20)}
    assert first.calls.redials_waiting == firsts.count("no-answer")
    assert first.calls.next_redial is not None and first.calls.next_redial >= START.timestamp() + 90
    status = campaign_status(load_campaign(campaign), clock=lambda: START)
    assert status is not None and status.calls is not None
    assert status.calls.redials_waiting == firsts.count("no-answer")

    later = START + timedelta(minutes=2)
    second = run_at(campaign, api.url, later)
    again = [p for p, s in zip(phones, firsts, strict=True) if s == "no-answer"]
    seconds = [fate(4, p, 2, sandbox_options).status for p in again]
    assert second.calls is not None
    assert second.calls.by_attempt[2] == (seconds.count("completed"), len(again))
    assert second.calls.pick_up_rate_of(2) == seconds.count("completed") / len(again)
    assert second.calls.redials_waiting == seconds.count("no-answer")


def test_the_cli_status_prints_the_rate_per_attempt_and_the_next_redial(
    tmp_path: Path, sandbox: MakeSandbox
) -> None:
    from click.testing import CliRunner

    from dialer.cli import main

    api = sandbox(api_key=KEY, seed=4, outcomes="completed=0.5,no-answer=0.5")
    campaign = write_campaign(tmp_path, 20, url=api.url, redial='no-answer = "90s"')
    run_at(campaign, api.url, START)
    run_at(campaign, api.url, START + timedelta(minutes=2))
    shown = CliRunner().invoke(main, ["status", str(campaign)], env={"SYNTHFLOW_API_KEY": KEY})
    assert shown.exit_code == 0, shown.output
    assert "pick-up rate by attempt: first call " in shown.output
    assert ", second " in shown.output
