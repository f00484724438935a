"""Issue 4 end to end: never ring anyone twice, never lose a row (journal, resume, cron).

The dialer runs as a real process against a real sandbox on loopback, and the
sandbox's `--record` is the witness: a placed call is a recorded `POST /v2/calls`
answered 200 (a dropped answer included: the call was placed). Runs are forked
from this process with the CLI already imported (a fresh `python -m dialer`
takes seconds to import pandas), so a test can kill, signal and restart the
dialer many times; a few tests start `python -m dialer` itself.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from dialer import cli
from dialer import report as report_module
from dialer.config import load_campaign
from dialer.errors import AuthError, LockedError
from dialer.run import RunOptions, RunResult, run_campaign, write_campaign_report
from dialer.sandbox import RunningSandbox, read_record
from dialer.store import CampaignLock, Journal
from tests.conftest import MakeSandbox, ended_at_once, posts, write_leads

KEY = "sk-resilience-test"
ALL_DAYS = '["mon", "tue", "wed", "thu", "fri", "sat", "sun"]'
AREAS = ("212", "415", "312")  # 555-0100..0199 are valid numbers in each


# -- leads, campaigns, records, reports --------------------------------------------------


def e164(i: int) -> str:
    """The i-th test number (0..299), as the dialer sends it."""
    return f"+1{AREAS[i // 100]}5550{100 + i % 100}"


def written(i: int) -> str:
    """The i-th test number as a person typed it in the spreadsheet."""
    return f"+1 {AREAS[i // 100]} 555 0{100 + i % 100}"


def lead_rows(indexes: range | list[int]) -> list[list[str]]:
    return [[f"Lead {i}", written(i), f"Company {i}"] for i in indexes]


BAD_ROWS = [["No Phone", "12", "Nowhere"], ["Twice", written(0), "Again"]]


def write_lead_rows(path: Path, rows: list[list[str]]) -> None:
    """Rows of (name, phone, company), under that header."""
    write_leads(path, [dict(zip(("Name", "Phone", "Company"), row, strict=True)) for row in rows])


def write_campaign(
    folder: Path,
    *,
    base_url: str = "http://127.0.0.1:9",
    mode: str = "call",
    rate: float = 40,
    concurrency: int = 8,
    max_attempts: int = 4,
    settle: float = 0.3,
    drain: float = 10.0,
    timeout: float = 10.0,
    pool: tuple[str, ...] = (),
) -> Path:
    """A campaign on folder/leads.csv that dials at any hour of any day."""
    if mode == "call":
        section = '[call]\nmodel_id = "model-resilience"\n'
    else:
        section = (
            '[chat]\nagent_id = "2a886b7d-d52d-4f8b-8ea0-19d3edc79214"\nchannel = "sms"\n'
            '[numbers]\npool = ["+14155550100"]\nstrategy = "round_robin"\n'
        )
    if pool:
        # round_robin: "local" would load phonenumbers' geocoder (seconds) for nothing here.
        section += f'[numbers]\npool = {list(pool)!r}\nstrategy = "round_robin"\n'.replace("'", '"')
    path = folder / "campaign.toml"
    path.write_text(
        f'name = "resilience"\nmode = "{mode}"\nleads = "leads.csv"\n'
        'report = "out/report.csv"\njournal = "out/journal.sqlite"\n'
        f'[api]\nbase_url = "{base_url}"\ntimeout_seconds = {timeout}\n'
        f"{section}"
        f"[limits]\nrate_per_second = {rate}\nconcurrency = {concurrency}\n"
        f"max_attempts = {max_attempts}\nsettle_after_seconds = {settle}\n"
        f"backoff_base_seconds = 0.01\nbackoff_max_seconds = 0.05\ndrain_seconds = {drain}\n"
        f'[hours]\nstart = "00:00"\nend = "24:00"\ndays = {ALL_DAYS}\n',
        encoding="utf-8",
    )
    return path


def recorded(record: Path | None) -> list[dict[str, Any]]:
    """Every request a sandbox recorded (`RunningSandbox.record`)."""
    assert record is not None
    return read_record(record)


def placed(record: Path | None, path: str = "/v2/calls") -> dict[str, list[str]]:
    """Recipient -> ids of the calls (or chats) placed for it, in order."""
    id_key = "call_id" if path == "/v2/calls" else "conversation_id"
    found: dict[str, list[str]] = defaultdict(list)
    for r in posts(record, path):
        if r["status"] == 200:
            recipient = r["body"]["phone" if path == "/v2/calls" else "to_number"]
            found[recipient].append(r["response"]["response"][id_key])
    return dict(found)


def read_report(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def journal_rows(folder: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(folder / "out" / "journal.sqlite")
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM leads ORDER BY id")]
    finally:
        conn.close()


# -- the dialer as a process ------------------------------------------------------------


@dataclass
class Dialer:
    """A `dialer` process forked from this one; its stdout and stderr go to files."""

    pid: int
    out: Path
    err: Path
    code: int | None = None

    def wait(self, timeout: float = 60.0) -> int:
        """The exit code (negative: killed by that signal)."""
        deadline = time.monotonic() + timeout
        while self.code is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.code = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"the dialer did not exit within {timeout}s: {self.stderr}")
            time.sleep(0.01)
        return self.code

    def send(self, signum: int) -> None:
        os.kill(self.pid, signum)

    @property
    def stdout(self) -> str:
        return self.out.read_text(encoding="utf-8", errors="replace")

    @property
    def stderr(self) -> str:
        return self.err.read_text(encoding="utf-8", errors="replace")


def _child(args: list[str], out: Path, err: Path, key: str) -> None:
    """Runs in the forked child: the CLI, then os._exit; never returns into pytest."""
    code = 1
    try:
        for fd, path in ((1, out), (2, err)):
            target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(target, fd)
            os.close(target)
        sys.stdout = open(1, "w", encoding="utf-8", buffering=1, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", encoding="utf-8", buffering=1, closefd=False)  # noqa: SIM115
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.environ["SYNTHFLOW_API_KEY"] = key
        try:
            cli.main(args, prog_name="dialer")
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


@pytest.fixture
def dialer(tmp_path: Path) -> Iterator[Callable[..., Dialer]]:
    """`start(*args, key=KEY) -> Dialer`: `dialer ARGS` in a process of its own."""
    started: list[Dialer] = []

    def start(*args: str, key: str = KEY) -> Dialer:
        n = len(started)
        out, err = tmp_path / f"dialer-{n}.out", tmp_path / f"dialer-{n}.err"
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            _child(list(args), out, err, key)
        process = Dialer(pid, out, err)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.code is None:
            try:
                process.send(signal.SIGKILL)
                process.wait(10)
            except (ProcessLookupError, ChildProcessError):
                pass


def assert_never_placed_and_pending(record: Path | None, folder: Path) -> None:
    """The invariant that keeps anyone from being rung twice, true at every moment.

    A lead whose call was placed is `sent` with that call's id, or `unknown` (to be
    looked up); never `pending` or `failed`, which a later run could dial again.
    """
    calls = placed(record)
    twice = {phone: ids for phone, ids in calls.items() if len(ids) > 1}
    assert not twice, f"rung more than once: {twice}"
    for row in journal_rows(folder):
        ids = calls.get(row["phone"])
        if ids and row["status"] not in ("duplicate", "invalid", "suppressed"):
            assert row["status"] in ("sent", "unknown"), row
            if row["status"] == "sent":
                assert row["call_id"] == ids[0], row


# -- 1. SIGKILL at random moments, many times ----------------------------------------


def test_sigkill_at_random_moments_never_rings_anyone_twice(
    tmp_path: Path, dialer: Callable[..., Dialer], sandbox_process: Callable[..., RunningSandbox]
) -> None:
    rng = random.Random(20240604)
    api = sandbox_process(latency_ms=50, drop_rate=0.1, seed=7)
    assert api.record is not None
    n = 60
    write_lead_rows(tmp_path / "leads.csv", lead_rows(range(n)) + BAD_ROWS)
    # 15/s: a run dials a few rows before it is killed (at most 4.5 in 0.3 s, however fast
    # the machine), so all the kills land mid-campaign.
    campaign = str(write_campaign(tmp_path, base_url=api.url, rate=15))

    kills = 0
    while kills < 12:
        process = dialer("run", campaign)
        time.sleep(rng.uniform(0.1, 0.5))
        process.send(signal.SIGKILL)
        code = process.wait()
        if code != -signal.SIGKILL:  # it finished first: nothing was left to kill
            assert code == 0, process.stderr
            break
        kills += 1
        if (tmp_path / "out" / "journal.sqlite").exists():
            assert_never_placed_and_pending(api.record, tmp_path)
    assert kills >= 10, f"only {kills} kills landed before the campaign was done"
    final = dialer("run", campaign)
    assert final.wait() == 0, final.stderr

    calls = placed(api.record)
    assert sorted(calls) == sorted(e164(i) for i in range(n))
    twice = {phone: ids for phone, ids in calls.items() if len(ids) != 1}
    assert not twice, f"rung more than once: {twice}"
    report = read_report(tmp_path / "out" / "report.csv")
    assert [r["Name"] for r in report] == [f"Lead {i}" for i in range(n)] + ["No Phone", "Twice"]
    for i, row in enumerate(report[:n]):
        assert row["dialer_status"] == "sent", row
        assert row["dialer_id"] == calls[e164(i)][0], row
    assert [r["dialer_status"] for r in report[n:]] == ["invalid", "duplicate"]
    assert any(r["dropped"] for r in posts(api.record)), "no answer was dropped: a weaker test"
    lookups = [r for r in recorded(api.record) if r["method"] == "GET" and "lead_phone_number" in r["query"]]
    assert lookups, "no row was ever settled by a look-up: a weaker test"


# -- in-process runs, and a scriptable API for the answers the sandbox cannot give -----


def run_here(
    campaign: Path,
    *,
    base_url: str | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    key: str = KEY,
    **flags: Any,
) -> RunResult:
    """`run_campaign` in this process, as `dialer run` calls it."""
    return run_campaign(
        load_campaign(campaign),
        RunOptions(api_key=key, base_url=base_url, transport=transport, **flags),
    )


# What a scripted POST gets: (HTTP status, whether the call is placed), or an exception.
Script = Callable[[str, int], "tuple[int, bool] | Exception"]


class FakeApi:
    """An httpx.MockTransport API: each POST answered by `script(phone, nth POST for it)`;
    GET /v2/calls answers from the calls placed so far (or with `lookup_status`)."""

    def __init__(self, script: Script, *, lookup_status: int = 200, error: str = "") -> None:
        self.script = script
        self.lookup_status = lookup_status
        self.error = error
        self.posts: list[tuple[float, str]] = []
        self.lookups: list[dict[str, str]] = []
        self.calls: dict[str, list[tuple[int, str]]] = defaultdict(list)  # phone -> (ms, id)
        self.transport = httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            phone = json.loads(request.content)["phone"]
            nth = sum(1 for _, p in self.posts if p == phone)
            self.posts.append((time.time(), phone))
            outcome = self.script(phone, nth)
            call_id = f"call-{phone}-{nth}"
            if isinstance(outcome, Exception):
                raise outcome
            status, place = outcome
            if place:
                self.calls[phone].append((int(time.time() * 1000), call_id))
            if status == 200:
                return httpx.Response(
                    200, json={"status": "success", "response": {"answer": "ok", "call_id": call_id}}
                )
            return httpx.Response(status, json={"detail": self.error or f"upstream said {status}"})
        params = dict(request.url.params)
        if "lead_phone_number" not in params:
            return self._poll(request, params)
        self.lookups.append(params)
        if self.lookup_status in (401, 403):
            return httpx.Response(self.lookup_status, json={"detail": "Invalid API key"})
        if self.lookup_status != 200:
            return httpx.Response(self.lookup_status, text="look-ups are down")
        since = int(params["from_date"])
        found = [
            {"call_id": cid, "phone_number_to": params["lead_phone_number"], "start_time": ms}
            for ms, cid in self.calls.get(params["lead_phone_number"], [])
            if ms >= since
        ]
        return httpx.Response(
            200,
            json={
                "status": "ok",
                "response": {
                    "pagination": {"total_records": len(found), "limit": 5, "offset": 0},
                    "calls": found,
                },
            },
        )

    def _poll(self, request: httpx.Request, params: dict[str, str]) -> httpx.Response:
        """The follower's poll (by id, or the agent's list): every call placed has ended."""
        placed = [(ms, cid, phone) for phone, calls in self.calls.items() for ms, cid in calls]
        if request.url.path != "/v2/calls":
            placed = [c for c in placed if request.url.path.endswith("/" + c[1])]
        listed = [
            {
                "call_id": cid,
                "phone_number_to": phone,
                "start_time": ms,
                "call_status": "completed",
                "status": "completed",
                "duration": 1,
            }
            for ms, cid, phone in sorted(placed, reverse=True)
        ]
        return httpx.Response(
            200,
            json={
                "status": "ok",
                "response": {"pagination": {"total_records": len(listed)}, "calls": listed},
            },
        )

    def posts_for(self, phone: str) -> int:
        return sum(1 for _, p in self.posts if p == phone)


def report_of(folder: Path) -> dict[str, dict[str, str]]:
    """Report rows by the lead's name."""
    return {row["Name"]: row for row in read_report(folder / "out" / "report.csv")}


# -- 2. each class of error --------------------------------------------------------------


def test_503s_are_retried_until_sent_and_each_attempt_is_counted(
    tmp_path: Path, sandbox: MakeSandbox
) -> None:
    api = sandbox(api_key=KEY, fail_rate=0.3, seed=3)
    n = 30
    write_lead_rows(tmp_path / "leads.csv", lead_rows(range(n)))
    campaign = write_campaign(tmp_path, base_url=api.url, max_attempts=12, rate=100)

    result = run_here(campaign)

    assert result.exit_code == 0
    attempts = Counter(r["body"]["phone"] for r in posts(api.record))
    calls = placed(api.record)
    report = report_of(tmp_path)
    for i in range(n):
        row = report[f"Lead {i}"]
        assert row["dialer_status"] == "sent", row
        assert calls[e164(i)] == [row["dialer_id"]]
        # Every POST was an attempt (a 503 places nothing), and the report counts each one.
        assert int(row["dialer_attempts"]) == attempts[e164(i)]
    assert any(int(row["dialer_attempts"]) > 1 for row in report.values())
    assert sum(1 for r in posts(api.record) if r["status"] == 503) == sum(attempts.values()) - n


def test_retry_after_on_a_503_is_honoured_as_the_least_wait(tmp_path: Path) -> None:
    seen: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(time.monotonic())
        if len(seen) == 1:
            return httpx.Response(503, headers={"Retry-After": "0.4"}, json={"detail": "busy"})
        return httpx.Response(200, json={"status": "success", "response": {"call_id": "c-1"}})

    write_lead_rows(tmp_path / "leads.csv", lead_rows([0]))
    # Backoff alone would wait at most 0.05 s: only Retry-After explains a longer pause.
    result = run_here(write_campaign(tmp_path), transport=httpx.MockTransport(ended_at_once(handler)))

    assert result.exit_code == 0
    assert len(seen) == 2 and seen[1] - seen[0] >= 0.4
    assert report_of(tmp_path)["Lead 0"]["dialer_attempts"] == "2"


def test_429s_slow_the_dialer_down_without_costing_attempts(tmp_path: Path, sandbox: MakeSandbox) -> None:
    api = sandbox(api_key=KEY, rate_limit=8, retry_after=0.2)
    n = 16
    write_lead_rows(tmp_path / "leads.csv", lead_rows(range(n)))
    result = run_here(write_campaign(tmp_path, base_url=api.url, rate=100, max_attempts=1))

    assert result.exit_code == 0
    assert any(r["status"] == 429 for r in posts(api.record))
    calls = placed(api.record)
    for i in range(n):
        row = report_of(tmp_path)[f"Lead {i}"]
        assert (row["dialer_status"], row["dialer_attempts"]) == ("sent", "1")
        assert calls[e164(i)] == [row["dialer_id"]]


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        pytest.param(400, {"detail": "phone: not a number"}, "HTTP 400: phone: not a number", id="400"),
        pytest.param(
            404,
            {"detail": {"status": "not_found", "description": "Agent not found"}},
            "HTTP 404: Agent not found",
            id="404-detail-object",
        ),
        pytest.param(
            422,
            {"error": "invalid", "message": "lead_timezone is wrong"},
            "HTTP 422: lead_timezone is wrong",
            id="422-error-message",
        ),
    ],
)
def test_a_refusal_is_failed_at_once_with_the_apis_message(
    tmp_path: Path, status: int, body: dict[str, Any], message: str
) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, json=body)

    write_lead_rows(tmp_path / "leads.csv", lead_rows(range(3)))
    result = run_here(write_campaign(tmp_path), transport=httpx.MockTransport(ended_at_once(handler)))

    assert result.exit_code == 0  # failed rows wait for --retry-failed, not for cron
    assert len(seen) == 3
    for row in report_of(tmp_path).values():
        assert (row["dialer_status"], row["dialer_attempts"]) == ("failed", "1")
        assert row["dialer_error"] == message


def test_a_400_from_the_sandbox_is_failed_with_its_detail(tmp_path: Path, sandbox: MakeSandbox) -> None:
    api = sandbox(api_key=KEY)
    write_lead_rows(tmp_path / "leads.csv", lead_rows(range(2)))
    campaign = write_campaign(tmp_path, base_url=api.url, mode="chat")
    # The sandbox, like the API, wants a UUID here; the campaign file does not check it.
    campaign.write_text(campaign.read_text().replace("2a886b7d-d52d-4f8b-8ea0-19d3edc79214", "x1"))

    assert run_here(campaign).exit_code == 0
    for row in report_of(tmp_path).values():
        assert row["dialer_status"] == "failed"
        assert row["dialer_error"] == "HTTP 400: agent_id: 'x1' is not a UUID"
    assert len(posts(api.record, "/v2/chat/outbound")) == 2


def test_a_refused_key_stops_the_run_at_once_and_leaves_every_row_as_it_was(
    tmp_path: Path, dialer: Callable[..., Dialer], sandbox_process: Callable[..., RunningSandbox]
) -> None:
    api = sandbox_process(latency_ms=20)
    assert api.record is not None
    write_lead_rows(tmp_path / "leads.csv", lead_rows(range(40)))
    pool = ("+12125550100", "+14155550100")
    campaign = write_campaign(tmp_path, base_url=api.url, concurrency=4, pool=pool)

    process = dialer("run", str(campaign), key="sk-wrong")

    assert process.wait() == 1
    lines = [line for line in process.stderr.splitlines() if line.startswith("dialer:")]
    assert lines == [
        "dialer: the API refused the key (HTTP 401: Invalid API key); stopped, every row left as it was"
    ]
    refused = posts(api.record)
    assert refused and all(r["status"] == 401 for r in refused)
    assert len(refused) <= 4  # no more than were in flight when the first 401 came
    for row in journal_rows(tmp_path):
        assert (row["status"], row["attempts"], row["error"]) == ("pending", 0, ""), row
    conn = sqlite3.connect(tmp_path / "out" / "journal.sqlite")
    assert conn.execute("SELECT coalesce(sum(calls), 0) FROM number_usage").fetchone()[0] == 0
    conn.close()
    # The report is written even so: every row, none dialed.
    report = read_report(tmp_path / "out" / "report.csv")
    assert len(report) == 40 and {r["dialer_status"] for r in report} == {"pending"}


# A refused connection everywhere (the API down): tests/test_promises_send.py.


def test_a_dropped_answer_is_settled_by_a_look_up_and_never_sent_twice(
    tmp_path: Path, sandbox: MakeSandbox
) -> None:
    api = sandbox(api_key=KEY, drop_rate=1.0)  # every call placed, every answer lost
    n = 6
    write_lead_rows(tmp_path / "leads.csv", lead_rows(range(n)))
    result = run_here(write_campaign(tmp_path, base_url=api.url, settle=0.2))

    assert result.exit_code == 0
    calls = placed(api.record)
    lookups = [r for r in recorded(api.record) if r["method"] == "GET" and "lead_phone_number" in r["query"]]
    assert sorted(r["query"]["lead_phone_number"] for r in lookups) == sorted(calls)
    for i in range(n):
        row = report_of(tmp_path)[f"Lead {i}"]
        assert calls[e164(i)] == [row["dialer_id"]]
        assert (row["dialer_status"], row["dialer_attempts"]) == ("sent", "1")


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(500, id="500"),
        pytest.param(502, id="502"),
        pytest.param(504, id="504"),
        pytest.param("read-timeout", id="read-timeout"),
        pytest.param("disconnected", id="server-disconnected"),
    ],
)
@pytest.mark.parametrize("was_placed", [False, True], ids=["not-placed", "placed"])
def test_an_ambiguous_answer_is_looked_up_before_anything_is_sent_again(
    tmp_path: Path, failure: int | str, was_placed: bool
) -> None:
    def script(phone: str, nth: int) -> tuple[int, bool] | Exception:
        if nth > 0:
            return 200, True
        if failure == "read-timeout":
            if was_placed:
                api.calls[phone].append((int(time.time() * 1000), f"call-{phone}-0"))
            return httpx.ReadTimeout("timed out")
        if failure == "disconnected":
            if was_placed:
                api.calls[phone].append((int(time.time() * 1000), f"call-{phone}-0"))
            return httpx.RemoteProtocolError("Server disconnected without sending a response.")
        assert isinstance(failure, int)
        return failure, was_placed

    api = FakeApi(script)
    write_lead_rows(tmp_path / "leads.csv", lead_rows(range(3)))
    started = time.time()
    result = run_here(write_campaign(tmp_path, settle=0.2), transport=api.transport)

    assert result.exit_code == 0
    # Looked up at once; a call not found is looked up again once the grace is over.
    assert len(api.lookups) == (3 if was_placed else 6)
    for lookup in api.lookups:  # from before the request left, so a placed call is found
        assert int(lookup["from_date"]) <= started * 1000
    for i in range(3):
        row = report_of(tmp_path)[f"Lead {i}"]
        assert row["dialer_status"] == "sent"
        if was_placed:  # found: the call stands, nobody is rung again
            assert api.posts_for(e164(i)) == 1
            assert (row["dialer_id"], row["dialer_attempts"]) == (f"call-{e164(i)}-0", "1")
        else:  # not found after the grace period: safe to dial again
            assert api.posts_for(e164(i)) == 2
            assert (row["dialer_id"], row["dialer_attempts"]) == (f"call-{e164(i)}-1", "2")
            assert len(api.calls[e164(i)]) == 1


def test_what_no_look_up_can_settle_stays_unknown_until_retry_unknown(tmp_path: Path) -> None:
    api = FakeApi(lambda phone, nth: (502, False) if nth == 0 else (200, True), lookup_status=500)
    write_lead_rows(tmp_path / "leads.csv", lead_rows(range(2)))
    campaign = write_campaign(tmp_path, settle=0.1)

    assert run_here(campaign, transport=api.transport).exit_code == 75
    for row in report_of(tmp_path).values():
        assert row["dialer_status"] == "unknown"
        assert row["dialer_error"].startswith("unsettled: look-up failed: HTTP 500")
    # Again: looked up again, still unsettled, never sent blindly.
    assert run_here(campaign, transport=api.transport).exit_code == 75
    assert len(api.posts) == 2 and len(api.lookups) == 4
    # --retry-unknown accepts the risk and sends them again.
    assert run_here(campaign, transport=api.transport, retry_unknown=True).exit_code == 0
    assert len(api.posts) == 4
    assert {r["dialer_status"] for r in report_of(tmp_path).values()} == {"sent"}


def test_a_refused_key_on_a_look_up_stops_the_run_too(tmp_path: Path) -> None:
    api = FakeApi(lambda phone, nth: (502, False), lookup_status=500)
    write_lead_rows(tmp_path / "leads.csv", lead_rows(range(2)))
    campaign = write_campaign(tmp_path, settle=0)
    assert run_here(campaign, transport=api.transport).exit_code == 75
    before = journal_rows(tmp_path)
    assert {row["status"] for row in before} == {"unknown"}

    # Only look-ups are due, and the key is refused: a cron job must hear of it (exit 1),
    # not see "rows remain" (75) night after night; and no row is touched.
    api.lookup_status = 401
    with pytest.raises(AuthError, match=r"refused the key \(HTTP 401: Invalid API key\)"):
        run_here(campaign, transport=api.transport, key="sk-revoked")
    assert journal_rows(tmp_path) == before
    assert len(api.posts) == 2


def test_the_cap_on_redials_after_unplaced_look_ups_holds_across_runs(tmp_path: Path) -> None:
    # Every POST answers 502 without placing a call; the first run's look-ups fail, so its
    # rows stay `unknown` with one unanswered request each.
    api = FakeApi(lambda phone, nth: (502, False), lookup_status=500)
    write_lead_rows(tmp_path / "leads.csv", lead_rows(range(2)))
    campaign = write_campaign(tmp_path, settle=0, max_attempts=1)
    assert run_here(campaign, transport=api.transport).exit_code == 75
    assert [row["unanswered"] for row in journal_rows(tmp_path)] == [1, 1]

    # The next run's look-ups find no call: one unanswered request was all max_attempts = 1
    # allows, counted by the journal, not from zero again. Nobody is dialed a second time.
    api.lookup_status = 200
    assert run_here(campaign, transport=api.transport).exit_code == 0
    assert len(api.posts) == 2
    for row in report_of(tmp_path).values():
        assert row["dialer_status"] == "failed"
        assert row["dialer_error"] == "no answer to 1 attempts, and no call was placed"


# -- 3. chat mode: no look-up exists ------------------------------------------------------


def test_chat_drops_stay_unknown_and_are_sent_again_only_with_retry_unknown(
    tmp_path: Path, sandbox: MakeSandbox
) -> None:
    chats = "/v2/chat/outbound"
    lossy = sandbox(api_key=KEY, drop_rate=1.0)
    write_lead_rows(tmp_path / "leads.csv", lead_rows(range(4)))
    campaign = write_campaign(tmp_path, mode="chat")

    assert run_here(campaign, base_url=lossy.url).exit_code == 75
    assert len(posts(lossy.record, chats)) == 4
    for row in report_of(tmp_path).values():
        assert row["dialer_status"] == "unknown"
        assert row["dialer_error"].startswith("no answer")

    healthy = sandbox(api_key=KEY)
    assert run_here(campaign, base_url=healthy.url).exit_code == 75
    assert posts(healthy.record, chats) == []
    assert {r["dialer_status"] for r in report_of(tmp_path).values()} == {"unknown"}

    assert run_here(campaign, base_url=healthy.url, retry_unknown=True).exit_code == 0
    sent = placed(healthy.record, chats)
    assert {phone: len(ids) for phone, ids in sent.items()} == {e164(i): 1 for i in range(4)}
    for i in range(4):
        row = report_of(tmp_path)[f"Lead {i}"]
        assert (row["dialer_status"], row["dialer_id"]) == ("sent", sent[e164(i)][0])


# -- 4. a second run continues; --retry-failed ---------------------------------------------


def test_sent_rows_are_never_sent_again_and_retry_failed_requeues_only_failed(
    tmp_path: Path, sandbox: MakeSandbox
) -> None:
    refused = {e164(i) for i in (1, 4)}
    api = FakeApi(
        lambda phone, nth: (400, False) if phone in refused else (200, True), error="Try again later"
    )
    write_lead_rows(tmp_path / "leads.csv", lead_rows(range(6)))
    campaign = write_campaign(tmp_path)
    assert run_here(campaign, transport=api.transport).exit_code == 0
    first = report_of(tmp_path)
    assert [first[f"Lead {i}"]["dialer_status"] for i in range(6)] == [
        "sent",
        "failed",
        "sent",
        "sent",
        "failed",
        "sent",
    ]

    later = sandbox(api_key=KEY)
    assert run_here(campaign, base_url=later.url).exit_code == 0
    assert posts(later.record) == []  # sent rows are settled; failed ones wait for the flag

    assert run_here(campaign, base_url=later.url, retry_failed=True).exit_code == 0
    assert sorted(placed(later.record)) == sorted(refused)
    again = report_of(tmp_path)
    for i in range(6):
        row = again[f"Lead {i}"]
        assert row["dialer_status"] == "sent"
        if e164(i) not in refused:
            assert row == first[f"Lead {i}"]  # untouched: same id, attempts, time
        else:
            assert row["dialer_attempts"] == "2"

    assert run_here(campaign, base_url=later.url, retry_failed=True).exit_code == 0
    assert len(posts(later.record)) == 2


def test_the_journal_alone_is_enough_to_continue(tmp_path: Path, sandbox: MakeSandbox) -> None:
    api = sandbox(api_key=KEY)
    write_lead_rows(tmp_path / "leads.csv", lead_rows(range(5)) + BAD_ROWS)
    campaign = write_campaign(tmp_path, base_url=api.url)
    assert run_here(campaign, limit=2).exit_code == 75  # rows remain for a later run
    (tmp_path / "leads.csv").unlink()

    assert run_here(campaign).exit_code == 0
    assert {phone: len(ids) for phone, ids in placed(api.record).items()} == {e164(i): 1 for i in range(5)}
    report = read_report(tmp_path / "out" / "report.csv")
    assert [(r["Name"], r["dialer_status"]) for r in report] == [
        *((f"Lead {i}", "sent") for i in range(5)),
        ("No Phone", "invalid"),
        ("Twice", "duplicate"),
    ]


# -- 5. the lock ------------------------------------------------------------------------------


def test_a_second_run_beside_a_running_one_exits_75_at_once_and_sends_nothing(
    tmp_path: Path, sandbox: MakeSandbox
) -> None:
    api = sandbox(api_key=KEY)
    write_lead_rows(tmp_path / "leads.csv", lead_rows(range(3)))
    campaign = write_campaign(tmp_path, base_url=api.url)
    journal = tmp_path / "out" / "journal.sqlite"

    with CampaignLock(journal):
        done = subprocess.run(
            [sys.executable, "-m", "dialer", "run", str(campaign)],
            env={**os.environ, "SYNTHFLOW_API_KEY": KEY},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 75, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"dialer: {journal}: another run of this campaign is in progress; nothing sent"
    )
    assert recorded(api.record) == []
    assert journal.stat().st_size == 0  # not even imported: the lock comes first


def test_a_lock_left_by_a_killed_process_never_blocks(tmp_path: Path, sandbox: MakeSandbox) -> None:
    write_lead_rows(tmp_path / "leads.csv", lead_rows(range(3)))
    lock = CampaignLock(tmp_path / "out" / "journal.sqlite")
    ready, told = os.pipe()
    holder = os.fork()
    if holder == 0:  # pragma: no cover - the child: take the lock, say so, wait to be killed
        try:
            lock.acquire()
            os.write(told, b"held")
            time.sleep(60)
        finally:
            os._exit(0)
    os.close(told)
    api = sandbox(api_key=KEY)
    campaign = write_campaign(tmp_path, base_url=api.url)
    try:
        assert os.read(ready, 4) == b"held"
        with pytest.raises(LockedError):
            run_here(campaign)
    finally:
        os.kill(holder, signal.SIGKILL)
        os.waitpid(holder, 0)
        os.close(ready)
    assert lock.path.exists()  # the file stays behind; the flock died with its holder
    assert run_here(campaign).exit_code == 0
    assert len(placed(api.record)) == 3


# -- 6. SIGTERM and SIGINT ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"]
)
def test_a_signal_stops_the_run_saves_everything_and_a_rerun_finishes(
    tmp_path: Path,
    dialer: Callable[..., Dialer],
    sandbox_process: Callable[..., RunningSandbox],
    signum: int,
    code: int,
) -> None:
    api = sandbox_process(latency_ms=200, drop_rate=0.15, seed=5)
    assert api.record is not None
    n = 30
    write_lead_rows(tmp_path / "leads.csv", lead_rows(range(n)))
    campaign = str(write_campaign(tmp_path, base_url=api.url, rate=10, concurrency=4, settle=0.2))

    process = dialer("run", campaign)
    deadline = time.monotonic() + 30
    while len(recorded(api.record)) < 5:  # dialing, so the handlers are in place
        assert time.monotonic() < deadline and process.code is None, process.stderr
        time.sleep(0.02)
    process.send(signum)

    assert process.wait() == code, process.stderr
    name = signal.Signals(signum).name
    assert f"stopped by {name}; state saved, run again to continue" in process.stdout
    report = read_report(tmp_path / "out" / "report.csv")
    assert [r["Name"] for r in report] == [f"Lead {i}" for i in range(n)]
    assert_never_placed_and_pending(api.record, tmp_path)
    statuses = Counter(row["status"] for row in journal_rows(tmp_path))
    assert set(statuses) <= {"sent", "pending", "unknown"} and statuses["pending"] > 0

    # The rerun may go faster: the journal, not the campaign file, holds the state.
    write_campaign(tmp_path, base_url=api.url, rate=100, concurrency=16, settle=0.2)
    rerun = dialer("run", campaign)
    assert rerun.wait() == 0, rerun.stderr
    calls = placed(api.record)
    assert {phone: len(ids) for phone, ids in calls.items()} == {e164(i): 1 for i in range(n)}
    for i, row in enumerate(read_report(tmp_path / "out" / "report.csv")):
        assert (row["dialer_status"], row["dialer_id"]) == ("sent", calls[e164(i)][0])


def test_the_drain_is_bounded_and_what_it_cut_off_is_looked_up_next_time(
    tmp_path: Path, dialer: Callable[..., Dialer], sandbox_process: Callable[..., RunningSandbox]
) -> None:
    api = sandbox_process(latency_ms=1500)  # every answer comes long after the call is placed
    assert api.record is not None
    write_lead_rows(tmp_path / "leads.csv", lead_rows(range(3)))
    campaign = str(write_campaign(tmp_path, base_url=api.url, rate=100, drain=0.2, settle=0.1))

    process = dialer("run", campaign)
    deadline = time.monotonic() + 30
    while len(posts(api.record)) < 3:
        assert time.monotonic() < deadline and process.code is None, process.stderr
        time.sleep(0.02)
    process.send(signal.SIGTERM)
    assert process.wait() == 143, process.stderr
    # Cut off in flight: maybe placed (they were), so `unknown`, never `pending`.
    assert [row["status"] for row in journal_rows(tmp_path)] == ["unknown"] * 3
    assert_never_placed_and_pending(api.record, tmp_path)

    rerun = dialer("run", campaign)
    assert rerun.wait() == 0, rerun.stderr
    calls = placed(api.record)
    assert len(posts(api.record)) == 3
    for i, row in enumerate(read_report(tmp_path / "out" / "report.csv")):
        assert (row["dialer_status"], row["dialer_id"]) == ("sent", calls[e164(i)][0])


def test_a_stop_takes_no_new_row_and_sends_nothing_more(tmp_path: Path) -> None:
    """Rows waiting for a pacing slot when the signal comes are put back, not sent."""
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(json.loads(request.content)["phone"])
        if len(sent) == 1:
            os.kill(os.getpid(), signal.SIGTERM)  # handled by the run's event loop
        return httpx.Response(200, json={"status": "success", "response": {"call_id": f"c{len(sent)}"}})

    def unhandled(signum: int, frame: Any) -> None:
        raise AssertionError("the run did not handle SIGTERM")

    write_lead_rows(tmp_path / "leads.csv", lead_rows(range(6)))
    # One slot a second: three rows hold their intents and wait when the signal comes.
    campaign = write_campaign(tmp_path, rate=1, concurrency=4)
    previous = signal.signal(signal.SIGTERM, unhandled)  # pytest survives a regression
    try:
        result = run_here(
            campaign, transport=httpx.MockTransport(ended_at_once(handler)), handle_signals=True
        )
    finally:
        signal.signal(signal.SIGTERM, previous)

    assert result.exit_code == 143
    assert sent == [e164(0)]
    rows = report_of(tmp_path)
    assert rows["Lead 0"]["dialer_status"] == "sent"
    for i in range(1, 6):  # back as they were: nothing was sent for them
        assert (rows[f"Lead {i}"]["dialer_status"], rows[f"Lead {i}"]["dialer_attempts"]) == ("pending", "0")


# -- 7. the report is replaced atomically ------------------------------------------------------


def test_dialer_report_replaces_the_file_and_keeps_it_whole_when_writing_fails(
    tmp_path: Path,
    sandbox: MakeSandbox,
    dialer: Callable[..., Dialer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    api = sandbox(api_key=KEY)
    write_lead_rows(tmp_path / "leads.csv", lead_rows(range(5)) + BAD_ROWS)
    campaign = write_campaign(tmp_path, base_url=api.url)
    assert run_here(campaign).exit_code == 0
    api.stop()  # no thread of this process may hold a lock when the dialer is forked
    path = tmp_path / "out" / "report.csv"
    before = path.read_bytes()
    inode = path.stat().st_ino

    process = dialer("report", str(campaign))
    assert process.wait() == 0, process.stderr
    assert f"report: {path} (7 rows)" in process.stdout
    assert path.stat().st_ino != inode  # a new file renamed over the old one
    assert path.read_bytes() == before

    # A write that fails halfway leaves the last report as it was, and no temp file.
    def half_then_fail(file: Any, headers: Any, rows: Any, *_: Any) -> int:
        file.write("Name,Phone\r\nhalf a report")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report_module, "_write_csv", half_then_fail)
    failing = load_campaign(campaign)
    journal = Journal(failing.journal_path, failing.name)
    # One line naming the file and what to do (issue 10), not an internal error.
    with pytest.raises(report_module.ReportError, match="No space left"):
        write_campaign_report(journal, path)
    journal.close()
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir() if "report" in p.name) == ["report.csv"]


def test_a_reader_never_sees_half_a_report(tmp_path: Path, sandbox: MakeSandbox) -> None:
    api = sandbox(api_key=KEY)
    write_lead_rows(tmp_path / "leads.csv", lead_rows(range(100)))
    campaign = write_campaign(tmp_path, base_url=api.url, rate=1000, concurrency=20)
    assert run_here(campaign).exit_code == 0
    path = tmp_path / "out" / "report.csv"
    loaded = load_campaign(campaign)
    stop = threading.Event()
    seen: list[int] = []

    def reader() -> None:
        while not stop.is_set():
            data = path.read_bytes()
            seen.append(data.count(b"\r\n") if data.endswith(b"\r\n") else -1)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        journal = Journal(loaded.journal_path, loaded.name)
        for _ in range(30):
            write_campaign_report(journal, path)
        journal.close()
    finally:
        stop.set()
        thread.join()
    assert seen and set(seen) == {101}


# -- 8. the leads file changes between runs ------------------------------------------------------


def test_a_changed_leads_file_dials_only_new_rows_and_says_what_changed(
    tmp_path: Path, dialer: Callable[..., Dialer], sandbox_process: Callable[..., RunningSandbox]
) -> None:
    api = sandbox_process()
    assert api.record is not None
    leads = tmp_path / "leads.csv"
    write_lead_rows(leads, lead_rows(range(10)))
    campaign = str(write_campaign(tmp_path, base_url=api.url))
    first = dialer("run", campaign)
    assert first.wait() == 0, first.stderr
    ids = {row["Name"]: row["dialer_id"] for row in read_report(tmp_path / "out" / "report.csv")}

    # Reordered, row 3 gone, row 5's company corrected, three new rows, one of them
    # with the number of a row already called.
    rows = lead_rows(range(10))[::-1]
    rows = [r for r in rows if r[0] != "Lead 3"]
    rows = [[r[0], r[1], "Fixed Co"] if r[0] == "Lead 5" else r for r in rows]
    rows[4:4] = lead_rows([10, 11])
    rows.append(["Lead 7 again", written(7), "Other"])
    write_lead_rows(leads, rows)
    second = dialer("run", campaign)
    assert second.wait() == 0, second.stderr

    assert (
        "leads file changed: 3 new rows added, 9 matched to earlier rows,"
        " 1 rows no longer in the file (kept in the journal)"
    ) in " ".join(second.stdout.split())
    calls = placed(api.record)
    assert {phone: len(c) for phone, c in calls.items()} == {e164(i): 1 for i in range(12)}
    report = read_report(tmp_path / "out" / "report.csv")
    assert [r["Name"] for r in report] == [r[0] for r in rows]
    by_name = {r["Name"]: r for r in report}
    for i in (0, 1, 2, 4, 5, 6, 7, 8, 9):  # kept their history, not dialed again
        assert (by_name[f"Lead {i}"]["dialer_status"], by_name[f"Lead {i}"]["dialer_id"]) == (
            "sent",
            ids[f"Lead {i}"],
        )
    assert by_name["Lead 5"]["Company"] == "Fixed Co"
    for i in (10, 11):
        assert (by_name[f"Lead {i}"]["dialer_status"], by_name[f"Lead {i}"]["dialer_id"]) == (
            "sent",
            calls[e164(i)][0],
        )
    assert by_name["Lead 7 again"]["dialer_status"] == "duplicate"
