"""The command line as a user meets it: help, output, exit codes, logs, secrets, bad input.

Exit codes and stderr are checked on real processes (`python -m dialer`), so a traceback
or a stray line cannot hide; the rest runs in-process through click's CliRunner. Every
campaign dials all day, every day, unless a test is about calling hours.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import openpyxl
import pytest
import structlog
from click.testing import CliRunner, Result
from structlog.testing import capture_logs

from dialer import cli
from dialer.bookkeeping import RunStats
from dialer.progress import LogProgress
from dialer.run import iso
from dialer.sandbox import SandboxOptions, start_in_thread
from tests.conftest import ended_at_once, posts, read_record, write_leads

KEY = "sk-test-SECRET-123456"
KEY_VARIABLE = "SYNTHFLOW_API_KEY"
DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
PROC_TIMEOUT = 120  # seconds; generous, for a loaded 2-core machine

LEADS = [
    {"Name": "Ann Lee", "Phone": "+14155550123", "Timezone": "", "Company": "Acme"},
    {"Name": "Bob Ray", "Phone": "(212) 555-0124", "Timezone": "America/New_York", "Company": "Beta"},
    {"Name": "Cid Moe", "Phone": "13125550125", "Timezone": "", "Company": "Gamma"},
    {"Name": "Dee Fox", "Phone": "415.555.0126", "Timezone": "", "Company": "Delta"},
    {"Name": "Eve Kim", "Phone": "+1 212 555 0127", "Timezone": "", "Company": "Eps"},
    {"Name": "Fay Orr", "Phone": "12", "Timezone": "", "Company": "Zeta"},
    {"Name": "Gus Poe", "Phone": "+14155550123", "Timezone": "", "Company": "Eta"},
]
DIALABLE = ["+14155550123", "+12125550124", "+13125550125", "+14155550126", "+12125550127"]


# -- helpers ---------------------------------------------------------------------------


def write_campaign(
    folder: Path,
    *,
    base_url: str = "http://127.0.0.1:9",
    leads: str = "leads.csv",
    days: list[str] | None = None,
    call: str = 'model_id = "model-1"',
    extra: str = "",
    limits: dict[str, float] | None = None,
    name: str = "campaign.toml",
) -> Path:
    """A call campaign; round_robin spares the geocoder, which "local" loads (seconds)."""
    folder.mkdir(parents=True, exist_ok=True)
    # No backoff waits, so retry-heavy runs stay quick.
    settings: dict[str, float] = {
        "rate_per_second": 200,
        "concurrency": 4,
        "max_attempts": 10,
        "backoff_base_seconds": 0,
        "backoff_max_seconds": 0,
        **(limits or {}),
    }
    path = folder / name
    path.write_text(
        f'name = "t"\nmode = "call"\nleads = "{leads}"\n{extra}\n'
        f'[api]\nbase_url = "{base_url}"\n'
        f"[call]\n{call}\n"
        '[numbers]\npool = ["+14155550100", "+12125550100"]\nstrategy = "round_robin"\n'
        "[limits]\n"
        + "".join(f"{k} = {v}\n" for k, v in settings.items())
        + f'[hours]\nstart = "00:00"\nend = "24:00"\ndays = {json.dumps(days or DAYS)}\n',
        encoding="utf-8",
    )
    return path


def dialer(*args: str, key: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m dialer ARGS` in a process of its own, with `key` as the only API key."""
    env = {k: v for k, v in os.environ.items() if k != KEY_VARIABLE}
    if key is not None:
        env[KEY_VARIABLE] = key
    env["COLUMNS"] = "200"
    return subprocess.run(
        [sys.executable, "-m", "dialer", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=PROC_TIMEOUT,
        check=False,
    )


def invoke(*args: str, key: str | None = None) -> Result:
    """The CLI in this process; `key=None` unsets SYNTHFLOW_API_KEY."""
    return CliRunner(env={KEY_VARIABLE: key, "COLUMNS": "200"}).invoke(
        cli.main, list(args), catch_exceptions=False, prog_name="dialer"
    )


def requests_made(record: Path) -> int:
    return len(read_record(record)) if record.exists() else 0


def report_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def json_bodies(text: str) -> list[Any]:
    """Every JSON value printed one after another in `text`."""
    decoder = json.JSONDecoder()
    found: list[Any] = []
    at = 0
    while True:
        start = text.find("{", at)
        if start < 0:
            return found
        value, at = decoder.raw_decode(text, start)
        found.append(value)


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """In-process runs configure structlog globally; later tests get the defaults back."""
    yield
    cli._session.fmt, cli._session.secret = "console", None
    structlog.contextvars.clear_contextvars()
    structlog.reset_defaults()


# -- help --------------------------------------------------------------------------------


HELP = {
    "run": (
        "Import the leads",
        [
            "--base-url",
            "--sandbox",
            "--leads",
            "--report",
            "--limit",
            "--retry-failed",
            "--retry-unknown",
            "--log-format",
        ],
    ),
    "validate": ("Sends nothing", ["--leads", "--log-format"]),
    "status": ("Counts per dialer_status", ["--log-format"]),
    "report": ("Write the per-row report", ["--out", "--log-format"]),
    "simulate": (
        "Synthflow-compatible",
        [
            "--port",
            "--api-key",
            "--record",
            "--rate-limit",
            "--fail-rate",
            "--drop-rate",
            "--latency-ms",
            "--seed",
        ],
    ),
}


@pytest.mark.parametrize("command", sorted(HELP))
def test_each_command_has_help_with_an_example(command: str) -> None:
    result = invoke(command, "--help")
    assert result.exit_code == 0
    text, flags = HELP[command]
    assert result.stdout.startswith(f"Usage: dialer {command} [OPTIONS]")
    assert text in result.stdout
    assert "Example" in result.stdout
    assert re.search(rf"^\s+dialer {command}\b", result.stdout, re.MULTILINE), "no example line"
    for flag in flags:
        assert flag in result.stdout, flag


def test_top_level_help_lists_every_command_with_examples_and_the_key() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    assert result.stdout.startswith("Usage: dialer [OPTIONS] COMMAND [ARGS]...")
    for command in HELP:
        assert re.search(rf"^  {command}\s+\S", result.stdout, re.MULTILINE), command
    for command in ("validate", "run", "status", "report"):
        assert re.search(rf"^\s+dialer {command} campaigns/demo.toml", result.stdout, re.MULTILINE)
    assert KEY_VARIABLE in result.stdout
    assert invoke("-h").stdout == result.stdout


# -- validate ---------------------------------------------------------------------------


def test_validate_shows_mapping_counts_reasons_and_three_bodies_and_sends_nothing(
    tmp_path: Path, sandbox: Any
) -> None:
    server = sandbox(api_key=KEY)
    write_leads(tmp_path / "leads.csv", LEADS)
    campaign = write_campaign(tmp_path, base_url=server.url)

    result = invoke("validate", str(campaign), key=KEY)

    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    out = result.stdout
    lines = out.splitlines()
    assert lines[0] == f"leads: {tmp_path / 'leads.csv'}"
    assert lines[1:7] == [
        "columns:",
        "  phone      Phone",
        "  name       Name",
        "  timezone   Timezone",
        "  email      (none)",
        "  variables  Company",
    ]
    assert lines[7:11] == ["rows:", "  pending    5", "  invalid    1", "  duplicate  1"]
    assert "not dialed, by reason:" in lines
    reasons = lines[lines.index("not dialed, by reason:") + 1 : lines.index("first rows not dialed:")]
    assert sorted(r.split(":")[0].split()[-1] for r in reasons) == ["duplicate", "invalid"]
    assert all(r.startswith("        1  ") for r in reasons)
    problems = [line for line in lines if line.startswith("  row ")]
    assert problems[0].startswith("  row 7: invalid: ") and "'12'" in problems[0]
    assert problems[1].startswith("  row 8: duplicate: ") and "row 2" in problems[1]
    assert "due now: 5; next due: all due now" in lines
    assert "example request bodies (POST /v2/calls):" in lines
    bodies = json_bodies(out[out.index("example request bodies") :])
    assert [b["phone"] for b in bodies] == DIALABLE[:3]
    assert bodies[0] == {
        "model_id": "model-1",
        "phone": "+14155550123",
        "name": "Ann Lee",
        "from_phone_number": "+14155550100",
        "custom_variables": [{"key": "Company", "value": "Acme"}],
        "lead_timezone": "America/Los_Angeles",
    }
    assert bodies[1]["lead_timezone"] == "America/New_York"
    assert requests_made(server.record) == 0
    assert not (tmp_path / "out").exists(), "validate wrote a journal or a report"


def test_validate_prints_cell_values_literally(tmp_path: Path) -> None:
    # Text that rich would read as markup ("[/]" would even crash it) or as an emoji.
    write_leads(
        tmp_path / "leads.csv",
        [
            {"Name": "[bold]Ann", "Phone": "+14155550123", "[Note]": ":smile:"},
            {"Name": "Bob", "Phone": "[/]", "[Note]": "x"},
        ],
    )
    campaign = write_campaign(tmp_path)

    result = invoke("validate", str(campaign))

    assert result.exit_code == 0, result.output
    assert "  variables  [Note]" in result.stdout.splitlines()
    assert any(
        line.startswith("  row 3: invalid: ") and "'[/]'" in line for line in result.stdout.splitlines()
    )
    assert json_bodies(result.stdout[result.stdout.index("example") :])[0]["custom_variables"] == [
        {"key": "[Note]", "value": ":smile:"}
    ]
    assert '"name": "[bold]Ann"' in result.stdout


# -- run, status, report ---------------------------------------------------------------------


def test_status_before_and_after_a_run(tmp_path: Path, sandbox: Any) -> None:
    server = sandbox(api_key=KEY)
    write_leads(tmp_path / "leads.csv", LEADS)
    campaign = write_campaign(tmp_path, base_url=server.url)

    before = invoke("status", str(campaign))
    assert before.exit_code == 0, before.output
    assert before.stdout == f"t: not started (no journal at {tmp_path / 'out' / 't.sqlite'})\n"

    ran = invoke("run", str(campaign), key=KEY)
    assert ran.exit_code == 0, ran.output
    assert len(posts(server.record)) == 5
    made = requests_made(server.record)  # the POSTs, and the polls that saw the calls end

    after = invoke("status", str(campaign))
    assert after.exit_code == 0, after.output
    assert after.stdout.splitlines() == [
        f"campaign t ({tmp_path / 'out' / 't.sqlite'})",
        "  sent       5",
        "  invalid    1",
        "  duplicate  1",
        "  total      7",
        "calls ended: completed 5",
        "pick-up rate: 100%; live calls: 0",
        "due now: 0",
        "next due: never (no rows waiting for their hours)",
    ]
    assert requests_made(server.record) == made, "status made a request"  # no call live: no poll


def test_run_summary_per_status_per_caller_id_time_and_rate(tmp_path: Path, sandbox: Any) -> None:
    server = sandbox(api_key=KEY)
    write_leads(tmp_path / "leads.csv", LEADS)
    campaign = write_campaign(tmp_path, base_url=server.url)

    result = invoke("run", str(campaign), key=KEY)

    assert result.exit_code == 0, result.output
    rows = {
        line.split("│")[0].strip(): [c.strip() for c in line.split("│")[1:]]
        for line in result.stdout.splitlines()
        if "│" in line
    }
    assert rows["sent"] == ["5", "5"]  # rows in the journal, this run
    assert rows["invalid"] == ["1", "0"]
    assert rows["duplicate"] == ["1", "0"]
    assert rows["+14155550100"] == ["3"]  # round robin over the pool
    assert rows["+12125550100"] == ["2"]
    assert re.search(
        # A rate over 5 requests says nothing about the account.
        r"^time taken \d+\.\ds \(dialing \d+\.\ds\); 5 requests, too few to measure a rate"
        r" \(limit 200/s\); 0 answered 429; 0 look-ups$",
        result.stdout,
        re.MULTILINE,
    ), result.stdout
    assert f"report: {tmp_path / 'out' / 't.report.csv'}" in result.stdout.splitlines()


def test_report_csv_and_xlsx_keep_phones_as_written_and_as_text(tmp_path: Path, sandbox: Any) -> None:
    server = sandbox(api_key=KEY)
    write_leads(tmp_path / "leads.csv", LEADS)
    campaign = write_campaign(tmp_path, base_url=server.url)
    assert invoke("run", str(campaign), key=KEY).exit_code == 0
    made = requests_made(server.record)  # the POSTs, and the polls that saw the calls end

    as_csv = invoke("report", str(campaign), "--out", str(tmp_path / "x.csv"))
    assert as_csv.exit_code == 0, as_csv.output
    assert as_csv.stdout == f"report: {tmp_path / 'x.csv'} (7 rows)\n"
    rows = report_rows(tmp_path / "x.csv")
    assert [r["Phone"] for r in rows] == [lead["Phone"] for lead in LEADS]
    assert [r["dialer_status"] for r in rows] == ["sent"] * 5 + ["invalid", "duplicate"]

    as_xlsx = invoke("report", str(campaign), "--out", str(tmp_path / "x.xlsx"))
    assert as_xlsx.exit_code == 0, as_xlsx.output
    assert as_xlsx.stdout == f"report: {tmp_path / 'x.xlsx'} (7 rows)\n"
    book = openpyxl.load_workbook(tmp_path / "x.xlsx", read_only=True)  # holds the file open
    table = list(book.worksheets[0].iter_rows())
    book.close()
    headers = [c.value for c in table[0]]
    phone = headers.index("Phone")
    cells = [row[phone] for row in table[1:]]
    assert [c.value for c in cells] == [lead["Phone"] for lead in LEADS]
    assert {c.data_type for c in cells} == {"s"}  # "13125550125" stays text, not a number
    assert [row[headers.index("dialer_status")].value for row in table[1:]][:5] == ["sent"] * 5
    assert requests_made(server.record) == made, "report made a request"


def test_report_before_any_run_says_so(tmp_path: Path) -> None:
    write_leads(tmp_path / "leads.csv", LEADS)
    campaign = write_campaign(tmp_path)
    result = invoke("report", str(campaign))
    assert result.exit_code == 2
    assert result.stderr == (
        f"dialer: {tmp_path / 'out' / 't.sqlite'}: no journal yet; run the campaign first\n"
    )


def test_closed_hours_validate_run_and_status_tell_when_rows_become_due(tmp_path: Path, sandbox: Any) -> None:
    # Every lead is in UTC and may be called only on the day after tomorrow: the moment
    # it opens is the same even if midnight passes while the test runs.
    server = sandbox(api_key=KEY)
    # US numbers: the federal window (08:00-21:00 in the lead's zone) opens at 08:00 that day.
    opens = (datetime.now(UTC) + timedelta(days=2)).replace(hour=8, minute=0, second=0, microsecond=0)
    write_leads(
        tmp_path / "leads.csv",
        [{"Name": f"L{i}", "Phone": f"+1415555{i:04d}", "Timezone": "UTC"} for i in range(130, 134)],
    )
    campaign = write_campaign(tmp_path, base_url=server.url, days=[DAYS[opens.weekday()]])

    checked = invoke("validate", str(campaign))
    assert checked.exit_code == 0, checked.output
    assert f"due now: 0; next due: {iso(opens)}" in checked.stdout.splitlines()

    ran = invoke("run", str(campaign), key=KEY)
    assert ran.exit_code == 75, ran.output  # rows remain for a later run
    assert f"next rows due: {iso(opens)}" in ran.stdout.splitlines()

    status = invoke("status", str(campaign))
    assert status.exit_code == 0
    assert status.stdout.splitlines()[1:] == [
        "  deferred   4",
        "  total      4",
        "due now: 0",
        f"next due: {iso(opens)}",
    ]
    assert requests_made(server.record) == 0


# -- bad input: exit 2, one line, nothing sent --------------------------------------------------


@dataclass
class Case:
    args: list[str]
    wanted: list[str]  # each must appear in the one line
    key: str | None = KEY
    json_log: bool = False


def _bad_input_cases(root: Path, base_url: str) -> dict[str, Case]:
    def folder(name: str, leads: bytes | None = None, **campaign: Any) -> Path:
        where = root / name
        where.mkdir()
        if leads is not None:
            (where / "leads.csv").write_bytes(leads)
        return write_campaign(where, base_url=base_url, **campaign)

    good = b"Name,Phone\nAnn,+14155550123\n"
    syntax = folder("syntax", good)
    syntax.write_text('name = "t\nmode = "call"\n')
    mode = folder("mode", good)
    mode.write_text(mode.read_text().replace('mode = "call"', 'mode = "fax"'))
    cases = {
        "campaign-missing": Case(
            ["run", str(root / "nope.toml")], [f"{root / 'nope.toml'}: campaign file not found"]
        ),
        "toml-syntax": Case(["run", str(syntax)], [str(syntax), "TOML syntax error", "line 1"]),
        "unknown-mode": Case(["run", str(mode)], [f"{mode}: mode: input should be 'call' or 'chat'"]),
        "negative-rate": Case(
            ["run", str(folder("rate", good, limits={"rate_per_second": -1}))],
            ["[limits] rate_per_second: input should be greater than 0"],
        ),
        "missing-model-id": Case(
            ["run", str(folder("model", good, call='prompt = "hi"'))],
            ["campaign.toml: [call] model_id: is missing"],
        ),
        "leads-missing": Case(
            ["run", str(folder("noleads"))], [f"{root / 'noleads' / 'leads.csv'}: ", "not found"]
        ),
        "leads-empty": Case(
            ["run", str(folder("empty", b""))], [f"{root / 'empty' / 'leads.csv'}: ", "empty"]
        ),
        "leads-binary": Case(
            ["run", str(folder("binary", bytes(range(256)) * 8))],
            [f"{root / 'binary' / 'leads.csv'}: ", "binary"],
        ),
        "column-missing": Case(
            ["run", str(folder("column", good, extra='[columns]\nphone = "Mobile"'))],
            [f"{root / 'column' / 'leads.csv'}: ", '"Mobile"', "columns.phone", "not found"],
        ),
        "validate-column-missing": Case(
            ["validate", str(root / "column" / "campaign.toml")],
            [f"{root / 'column' / 'leads.csv'}: ", '"Mobile"', "not found"],
        ),
        "bad-base-url": Case(
            ["run", str(folder("url", good)), "--base-url", "localhost:8787"],
            ["--base-url 'localhost:8787': must be an http(s) URL"],
        ),
        "no-key": Case(
            ["run", str(folder("nokey", good))],
            [
                f"{KEY_VARIABLE} is not set: export {KEY_VARIABLE}=<your key>",
                f"{KEY_VARIABLE}=<your key> in {root / 'nokey' / '.env'}",
            ],
            key=None,
        ),
        "no-key-json": Case(
            ["run", str(root / "nokey" / "campaign.toml"), "--log-format", "json"],
            [f"{KEY_VARIABLE} is not set"],
            key=None,
            json_log=True,
        ),
        "toml-syntax-json": Case(
            ["run", str(syntax), "--log-format", "json"], ["TOML syntax error"], json_log=True
        ),
    }
    return cases


@dataclass
class BadInputs:
    cases: dict[str, Case]
    done: dict[str, subprocess.CompletedProcess[str]]  # the cases run as real processes
    root: Path


# Every case runs in-process; these also as real processes (a few seconds each), one per
# family, so nothing the interpreter itself prints (a traceback, a warning) can hide.
IN_A_PROCESS = ["toml-syntax", "column-missing", "no-key"]


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BadInputs]:
    """The bad inputs' files, one sandbox they all point at, and the process runs, two at a time."""
    root = tmp_path_factory.mktemp("bad")
    server = start_in_thread(SandboxOptions(api_key=KEY, record=root / "record.jsonl"))
    try:
        cases = _bad_input_cases(root, server.url)
        with ThreadPoolExecutor(2) as pool:
            futures = {
                name: pool.submit(dialer, *cases[name].args, key=cases[name].key, cwd=root)
                for name in IN_A_PROCESS
            }
            done = {name: future.result() for name, future in futures.items()}
        yield BadInputs(cases, done, root)
    finally:
        server.stop()


BAD_INPUTS = [
    "campaign-missing",
    "toml-syntax",
    "unknown-mode",
    "negative-rate",
    "missing-model-id",
    "leads-missing",
    "leads-empty",
    "leads-binary",
    "column-missing",
    "validate-column-missing",
    "bad-base-url",
    "no-key",
    "no-key-json",
    "toml-syntax-json",
]


def _the_one_line(case: Case, code: int, stdout: str, stderr: str) -> str:
    """Exit 2, nothing on stdout, one line on stderr; that line's message."""
    assert code == 2, stderr
    assert "Traceback" not in stderr
    assert stdout == ""
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    if not case.json_log:
        assert lines[0].startswith("dialer: ")
        return lines[0]
    event = json.loads(lines[0])
    assert (event["event"], event["exit_code"], event["level"]) == ("run.failed", 2, "error")
    return str(event["error"])


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bad_input_exits_2_with_one_line_and_sends_nothing(bad_inputs: BadInputs, name: str) -> None:
    case = bad_inputs.cases[name]
    result = CliRunner(env={KEY_VARIABLE: case.key}).invoke(cli.main, case.args, prog_name="dialer")
    line = _the_one_line(case, result.exit_code, result.stdout, result.stderr)
    for wanted in case.wanted:
        assert wanted in line
    assert requests_made(bad_inputs.root / "record.jsonl") == 0


@pytest.mark.parametrize("name", IN_A_PROCESS)
def test_bad_input_in_a_process_exits_2_with_one_line_and_sends_nothing(
    bad_inputs: BadInputs, name: str
) -> None:
    case, done = bad_inputs.cases[name], bad_inputs.done[name]
    line = _the_one_line(case, done.returncode, done.stdout, done.stderr)
    for wanted in case.wanted:
        assert wanted in line
    assert requests_made(bad_inputs.root / "record.jsonl") == 0


def test_every_bad_input_case_is_checked(tmp_path: Path) -> None:
    assert sorted(_bad_input_cases(tmp_path, "http://127.0.0.1:9")) == sorted(BAD_INPUTS)
    assert set(IN_A_PROCESS) <= set(BAD_INPUTS)


def test_status_after_a_failed_first_import_says_no_rows_yet(tmp_path: Path) -> None:
    # `run` on a missing leads file leaves an empty journal behind.
    campaign = write_campaign(tmp_path)
    assert invoke("run", str(campaign), key=KEY).exit_code == 2
    result = invoke("status", str(campaign))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1] == "no rows yet: the first `dialer run` imports the leads file"


def test_validate_names_a_bad_campaign_key_in_one_line(tmp_path: Path) -> None:
    write_leads(tmp_path / "leads.csv", LEADS)
    campaign = write_campaign(tmp_path, limits={"concurrency": 0})
    result = CliRunner().invoke(cli.main, ["validate", str(campaign)])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == (
        f"dialer: {campaign}: [limits] concurrency: input should be greater than or equal to 1\n"
    )


# -- the API key -------------------------------------------------------------------------------


def test_a_dotenv_beside_the_campaign_supplies_the_key(
    tmp_path: Path, sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = sandbox(api_key=KEY)  # any other key is answered 401
    folder = tmp_path / "campaign"
    folder.mkdir()
    write_leads(folder / "leads.csv", LEADS[:2])
    campaign = write_campaign(folder, base_url=server.url)
    (folder / ".env").write_text(f"# the dialer's key\n{KEY_VARIABLE}={KEY}\n")
    monkeypatch.chdir(tmp_path)  # not the campaign's folder

    result = invoke("run", str(campaign), key=None)

    assert result.exit_code == 0, result.output
    assert [p["status"] for p in posts(server.record)] == [200, 200]


def test_a_refused_key_exits_1_without_showing_it(tmp_path: Path, sandbox: Any) -> None:
    server = sandbox(api_key=KEY)
    write_leads(tmp_path / "leads.csv", LEADS)
    campaign = write_campaign(tmp_path, base_url=server.url)
    wrong = "sk-test-WRONG-987654"

    result = invoke("run", str(campaign), key=wrong)

    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.splitlines()[-1] == (
        "dialer: the API refused the key (HTTP 401: Invalid API key); stopped, every row left as it was"
    )
    assert wrong not in result.output
    assert {p["status"] for p in posts(server.record)} == {401}
    for path in (tmp_path / "out").iterdir():
        assert wrong.encode() not in path.read_bytes(), path


@dataclass
class JsonRun:
    done: subprocess.CompletedProcess[str]
    events: list[dict[str, Any]]
    folder: Path
    record: Path


@pytest.fixture(scope="module")
def json_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JsonRun]:
    """One verbose run with JSON logs against a sandbox that answers 503 to a third of POSTs."""
    folder = tmp_path_factory.mktemp("json")
    server = start_in_thread(
        SandboxOptions(api_key=KEY, record=folder / "record.jsonl", fail_rate=0.35, seed=7)
    )
    try:
        leads = [
            {"Name": f"Lead {i}", "Phone": f"+1 (415) 555-{i:04d}", "Company": f"Co {i}"}
            for i in range(100, 130)
        ]
        write_leads(folder / "leads.csv", leads)
        campaign = write_campaign(folder, base_url=server.url)
        done = dialer("run", str(campaign), "--log-format", "json", "-v", key=KEY)
    finally:
        server.stop()
    yield JsonRun(done, _json_lines(done.stderr), folder, folder / "record.jsonl")


def _json_lines(stderr: str) -> list[dict[str, Any]]:
    events = []
    for line in stderr.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            events.append({"not JSON": line})
    return events


def test_json_logs_are_one_object_per_line_with_campaign_row_and_attempt(json_run: JsonRun) -> None:
    done, events = json_run.done, json_run.events
    assert done.returncode == 0, done.stderr
    assert [e for e in events if not isinstance(e.get("event"), str)] == []
    names = [e["event"] for e in events]
    assert names[:2] == ["leads.imported", "run.started"]
    assert names[-1] == "run.finished"
    assert events[-1]["exit_code"] == 0
    assert events[-1]["this_run"] == {"sent": 30}

    leads = [e for e in events if e["event"].startswith("lead.")]
    assert {e["event"] for e in leads} == {"lead.sent", "lead.retry"}
    for event in leads:
        assert event["campaign"] == "t"
        assert isinstance(event["row"], int) and 2 <= event["row"] <= 31
        assert isinstance(event["attempt"], int) and event["attempt"] >= 1
        assert re.fullmatch(r"\*\*\*\d{4}", event["phone"])
    # The attempt is the row's own count, as the report shows it.
    report = {i + 2: r for i, r in enumerate(report_rows(json_run.folder / "out" / "t.report.csv"))}
    sent = [e for e in leads if e["event"] == "lead.sent"]
    assert sorted(e["row"] for e in sent) == list(range(2, 32))
    for event in sent:
        assert str(event["attempt"]) == report[event["row"]]["dialer_attempts"]
    retried = [e for e in leads if e["event"] == "lead.retry"]
    assert retried, "the seeded sandbox refused none: pick another seed"
    for event in retried:
        assert event["attempt"] < int(report[event["row"]]["dialer_attempts"])
        assert event["error"].startswith("HTTP 503")
    assert len(posts(json_run.record)) == sum(int(r["dialer_attempts"]) for r in report.values())


def test_json_logs_mask_phones_and_the_summary_goes_to_stdout(json_run: JsonRun) -> None:
    stderr, stdout = json_run.done.stderr, json_run.done.stdout
    for i in range(100, 130):
        assert f"555{i:04d}" not in stderr and f"555-{i:04d}" not in stderr
    assert not re.search(r"\+\d{8,}", stderr)
    assert not stdout.lstrip().startswith("{")
    assert "campaign t" in stdout
    assert re.search(r"^ sent\s+│\s+30 │\s+30\s*$", stdout, re.MULTILINE), stdout
    assert "time taken" in stdout
    # The report keeps the numbers whole.
    rows = report_rows(json_run.folder / "out" / "t.report.csv")
    assert rows[0]["Phone"] == "+1 (415) 555-0100"


def test_the_key_appears_in_no_output_log_journal_or_report(json_run: JsonRun) -> None:
    assert json_run.done.returncode == 0, json_run.done.stderr
    assert KEY not in json_run.done.stdout
    assert KEY not in json_run.done.stderr
    written = sorted((json_run.folder / "out").iterdir())
    names = {p.name for p in written}
    assert {"t.sqlite", "t.report.csv"} <= names
    for path in written:  # the journal, its -wal and -shm if left, the lock, the report
        assert KEY.encode() not in path.read_bytes(), path


# -- internal errors ------------------------------------------------------------------------------


def _crash(*_: Any, **__: Any) -> Any:
    raise RuntimeError(f"boom\nwith the key {KEY} in it")


def test_an_internal_error_says_so_and_where_the_traceback_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_leads(tmp_path / "leads.csv", LEADS)
    campaign = write_campaign(tmp_path)
    monkeypatch.setattr("dialer.run.run_campaign", _crash)

    result = CliRunner().invoke(cli.main, ["run", str(campaign)], env={KEY_VARIABLE: KEY})

    assert result.exit_code == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    match = re.fullmatch(
        r"dialer: internal error, a bug in the dialer \(RuntimeError: boom\);"
        r" the traceback is in (\S+)",
        lines[0],
    )
    assert match, lines[0]
    crash_log = Path(match[1])
    try:
        text = crash_log.read_text()
        assert text.startswith("Traceback (most recent call last):")
        assert "RuntimeError: boom" in text and "_crash" in text
        assert KEY not in text and "[redacted]" in text
    finally:
        crash_log.unlink()


def test_an_internal_error_with_json_logs_is_one_json_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_leads(tmp_path / "leads.csv", LEADS)
    campaign = write_campaign(tmp_path)
    monkeypatch.setattr("dialer.run.validate_campaign", _crash)

    result = CliRunner().invoke(cli.main, ["validate", str(campaign), "--log-format", "json"])

    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    event = json.loads(line)
    assert event["event"] == "validate.failed"
    assert event["error"].startswith("internal error, a bug in the dialer (RuntimeError: boom)")
    Path(event["traceback_file"]).unlink()


# -- progress: a bar on a terminal, log lines without one -----------------------------------------


def test_without_a_terminal_there_is_no_bar_but_plain_log_lines(tmp_path: Path, sandbox: Any) -> None:
    server = sandbox(api_key=KEY)
    write_leads(tmp_path / "leads.csv", LEADS)
    campaign = write_campaign(tmp_path, base_url=server.url)

    done = dialer("run", str(campaign), key=KEY)  # stdout and stderr are pipes, as under cron

    assert done.returncode == 0, done.stderr
    for stream in (done.stdout, done.stderr):
        assert not re.search(r"dialing\s*━|\d+/\d+ \d+\.\d/s", stream)  # the bar's look
        assert "\r" not in stream and "\x1b[" not in stream
    # Console lines: "<time> [info     ] <event>  key=value ..."; run.progress only every 10 s.
    lines = [line for line in done.stderr.splitlines() if "run.progress" not in line]
    events = [re.fullmatch(r"\S+Z \[\w+\s*\] (\S+) .*", line) for line in lines]
    assert [m[1] if m else line for m, line in zip(events, lines, strict=True)] == [
        "leads.imported",
        "run.started",
        "run.finished",
    ]
    assert "campaign=t due=5" in lines[1]
    assert "exit_code=0" in lines[2] and "requests=5" in lines[2]
    assert "time taken" in done.stdout


def test_progress_log_lines_with_the_request_rate_eta_and_counts() -> None:
    now = [100.0]
    progress = LogProgress(every=10, clock=lambda: now[0])
    stats = RunStats()
    with capture_logs() as logs:
        progress.start(40)
        now[0] += 10
        stats.requests = 11
        stats.outcomes.update({"sent": 10, "failed": 1, "deferred": 9})
        progress.tick(stats)
    assert logs == [
        {"event": "run.started", "due": 40, "log_level": "info"},
        {
            "event": "run.progress",
            "done": 20,
            "total": 40,
            "requests": 11,
            "rate": 1.1,  # requests per second: the 9 deferred rows are no requests
            "eta_seconds": 10,
            "sent": 10,
            "failed": 1,
            "deferred": 9,
            "log_level": "info",
        },
    ]


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_on_a_terminal_a_live_bar_shows_done_total_rate_eta_and_counts(tmp_path: Path, sandbox: Any) -> None:
    import pty

    server = sandbox(api_key=KEY)
    write_leads(tmp_path / "leads.csv", LEADS)
    campaign = write_campaign(tmp_path, base_url=server.url)
    env = {k: v for k, v in os.environ.items() if k not in (KEY_VARIABLE, "NO_COLOR")}
    env.update({KEY_VARIABLE: KEY, "COLUMNS": "160", "TERM": "xterm"})
    master, slave = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "dialer", "run", str(campaign)],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=subprocess.PIPE,
        env=env,
    )
    os.close(slave)
    chunks: list[bytes] = []

    def pump() -> None:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        _, stderr = process.communicate(timeout=PROC_TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        reader.join(10)
        os.close(master)
    assert process.returncode == 0, stderr
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode("utf-8", "replace"))
    assert re.search(r"dialing ━+ 5/5 \d+\.\d/s \d:\d\d:\d\d eta \d:\d\d:\d\d sent=5", screen), screen
    assert "time taken" in screen
    assert "run.started" not in screen + stderr.decode()  # the bar, not log lines


# -- odd answers, end to end ------------------------------------------------------------------


def _outcomes(folder: Path) -> list[tuple[str, str, str]]:
    """(dialer_status, dialer_id, dialer_error) of each row of the report, as the journal has them."""
    return [
        (row["dialer_status"], row["dialer_id"], row["dialer_error"])
        for row in report_rows(folder / "out" / "t.report.csv")
    ]


@pytest.mark.parametrize(
    "lookup_body",
    [
        '{"response":{"calls":null}}',
        '"abc"',
        "[1]",
        '{"response": []}',
        '{"response":{"calls":[1, "x"]}}',
        '{"response":{"calls":[{"status":"completed"}]}}',  # a call to the number, without its id
        "<html>Bad Gateway</html>",
    ],
)
def test_an_odd_lookup_answer_leaves_rows_unknown_and_settleable(
    tmp_path: Path, sandbox: Any, lookup_body: str
) -> None:
    # Every answer is lost, and every look-up is answered in a shape nobody documented.
    server = sandbox(api_key=KEY, drop_rate=1.0, lookup_body=lookup_body)
    write_leads(tmp_path / "leads.csv", LEADS[:2])
    campaign = write_campaign(tmp_path, base_url=server.url, limits={"settle_after_seconds": 0})

    first = invoke("run", str(campaign), key=KEY)
    again = invoke("run", str(campaign), key=KEY)

    for result in (first, again):
        assert result.exit_code == 75, result.output
        assert "internal error" not in result.output
    rows = _outcomes(tmp_path)
    assert [status for status, _, _ in rows] == ["unknown", "unknown"]
    assert all(error.startswith("unsettled: look-up answer") for _, _, error in rows), rows
    record = read_record(server.record)
    # One call per number, ever; the second run looked each row up again rather than dialing.
    assert sorted(p["body"]["phone"] for p in record if p["method"] == "POST") == sorted(DIALABLE[:2])
    assert sum(1 for r in record if r["method"] == "GET") == 4


def test_a_200_with_an_odd_body_is_sent_once_and_keeps_no_junk_id(tmp_path: Path, sandbox: Any) -> None:
    server = sandbox(api_key=KEY, accept_body='{"response":{"call_id":{"id":"c1"}}}')
    write_leads(tmp_path / "leads.csv", LEADS[:2])
    campaign = write_campaign(tmp_path, base_url=server.url)

    result = invoke("run", str(campaign), key=KEY)

    assert result.exit_code == 0, result.output
    assert _outcomes(tmp_path) == [("sent", "", "HTTP 200 without a readable call_id")] * 2
    assert len(posts(server.record)) == 2


# -- the key as people paste it ---------------------------------------------------------------


def _no_part_of(key: str, *texts: str | bytes) -> None:
    """No run of 6 characters of the key (past its common prefix) appears in any of `texts`."""
    core = key.strip()
    parts = {core[i : i + 6] for i in range(3, len(core) - 5)}
    for text in texts:
        data = text.encode() if isinstance(text, str) else text
        for part in parts:
            assert part.encode() not in data, part


def _everything_written(folder: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix != ".toml"]


@pytest.mark.parametrize("pasted", [KEY + "\r", " " + KEY + "\n", "\t" + KEY + "\r\n"])
def test_a_key_with_surrounding_whitespace_is_stripped_and_works(
    tmp_path: Path, sandbox: Any, pasted: str
) -> None:
    # SYNTHFLOW_API_KEY=$(cat key) keeps the CR of a key file edited on Windows.
    server = sandbox(api_key=KEY)
    write_leads(tmp_path / "leads.csv", LEADS)
    campaign = write_campaign(tmp_path, base_url=server.url)

    done = dialer("run", str(campaign), key=pasted)

    assert done.returncode == 0, done.stderr
    assert sorted(p["body"]["phone"] for p in posts(server.record) if p["status"] == 200) == sorted(DIALABLE)
    _no_part_of(KEY, done.stdout, done.stderr, *_everything_written(tmp_path / "out"))


@pytest.mark.parametrize(
    ("key", "what"),
    [
        ("sk-test-SE\rCRET-123456", "a control character"),
        ("sk-test-SECRET\x1b-123456", "a control character"),
        ("sk-test-SECRET-123456\x7f", "a control character"),
        ("sk-test-SÉCRET-123456", "a non-ASCII character"),
        ("sk-test-SECRET\u00a0-123456", "a non-ASCII character"),
    ],
)
def test_a_key_http_cannot_carry_exits_2_naming_no_part_of_it(
    tmp_path: Path, sandbox: Any, key: str, what: str
) -> None:
    server = sandbox()
    write_leads(tmp_path / "leads.csv", LEADS)
    campaign = write_campaign(tmp_path, base_url=server.url)

    done = dialer("run", str(campaign), key=key)

    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"dialer: {KEY_VARIABLE} holds {what}, which an HTTP header cannot carry:"
        " check the key (a key file edited on another system, a pasted quote?)"
    ]
    assert requests_made(server.record) == 0
    _no_part_of(key, done.stdout, done.stderr, *_everything_written(tmp_path))


def test_a_bad_key_in_a_dotenv_is_named_by_its_file(tmp_path: Path, sandbox: Any) -> None:
    server = sandbox()
    write_leads(tmp_path / "leads.csv", LEADS)
    campaign = write_campaign(tmp_path, base_url=server.url)
    (tmp_path / ".env").write_bytes(f"{KEY_VARIABLE}=sk-a\x01b-123456\r\n".encode())

    result = invoke("run", str(campaign), key=None)

    assert result.exit_code == 2
    assert result.stderr.splitlines()[-1].startswith(
        f"dialer: {KEY_VARIABLE} in {tmp_path / '.env'} holds a control"
    )
    assert requests_made(server.record) == 0


# -- a Unix tool: pipes, Ctrl-C, start-up -----------------------------------------------------------


@pytest.mark.parametrize(
    "command", ["validate", "status", "report", "run", "--help", "--version", "run --help"]
)
def test_a_closed_pipe_on_stdout_ends_quietly_with_sigpipes_status(
    tmp_path: Path, sandbox: Any, command: str
) -> None:
    # `dialer validate c.toml | head`: the reader is gone before the first line is written.
    server = sandbox(api_key=KEY)
    write_leads(tmp_path / "leads.csv", LEADS)
    campaign = write_campaign(tmp_path, base_url=server.url)
    if command in ("status", "report"):
        assert dialer("run", str(campaign), key=KEY).returncode == 0
    crashes = tmp_path / "tmp"
    crashes.mkdir()
    read, write = os.pipe()
    os.close(read)
    env = {**os.environ, KEY_VARIABLE: KEY, "TMPDIR": str(crashes)}
    args = command.split() if "--" in command else [command, str(campaign)]
    try:
        done = subprocess.run(
            [sys.executable, "-m", "dialer", *args],
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            timeout=PROC_TIMEOUT,
            check=False,
        )
    finally:
        os.close(write)
    assert done.returncode == 141, done.stderr
    if command == "run":  # its log lines go to stderr; the summary was for stdout
        assert "Traceback" not in done.stderr and "dialer:" not in done.stderr, done.stderr
    else:
        assert done.stderr == ""
    assert list(crashes.iterdir()) == []  # no crash file


def test_a_closed_pipe_while_printing_bodies_is_no_internal_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Where head exits after its 10 lines: the JSON bodies are written with click.echo.
    write_leads(tmp_path / "leads.csv", LEADS)
    campaign = write_campaign(tmp_path)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)

    def closed(*_: Any, **__: Any) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(click, "echo", closed)
    result = CliRunner().invoke(cli.main, ["validate", str(campaign)])

    assert result.exit_code == 141, result.output
    assert result.stderr == ""
    assert not list(tmp_path.glob("dialer-crash-*"))


_INTERRUPT_AT_IMPORT = """
import sys

module, sys.argv = sys.argv[1], ["dialer", *sys.argv[2:]]

class Interrupt:  # Ctrl-C while `module` is being imported
    def find_spec(self, name, path=None, target=None):
        if name == module:
            raise KeyboardInterrupt

sys.meta_path.insert(0, Interrupt())
from dialer.entry import main  # what the `dialer` script and `python -m dialer` run
main()
"""


@pytest.mark.parametrize(
    ("module", "command"),
    [
        ("click", "status"),
        ("dialer.cli", "validate"),
        ("dialer.config", "status"),
        ("dialer.run", "status"),
        ("structlog", "validate"),
        ("pandas", "validate"),
        ("dialer.sandbox.command", "simulate"),
    ],
)
def test_ctrl_c_in_the_first_second_exits_130_with_one_line(
    tmp_path: Path, module: str, command: str
) -> None:
    # The first second of a command is spent importing libraries.
    write_leads(tmp_path / "leads.csv", LEADS)
    campaign = write_campaign(tmp_path)
    args = [command] if command == "simulate" else [command, str(campaign)]
    done = subprocess.run(
        [sys.executable, "-c", _INTERRUPT_AT_IMPORT, module, *args],
        capture_output=True,
        text=True,
        timeout=PROC_TIMEOUT,
        check=False,
    )
    assert (done.returncode, done.stderr, done.stdout) == (130, "dialer: interrupted\n", "")


_IMPORTED = """
import sys
sys.argv = ["dialer", *sys.argv[1:]]
from dialer.cli import main
try:
    main()
except SystemExit:
    pass
heavy = {"pandas", "numpy", "aiohttp", "httpx", "pydantic", "openpyxl", "phonenumbers", "rich", "structlog",
         "matplotlib"}
print(sorted({name.split(".")[0] for name in sys.modules} & heavy), file=sys.stderr)
"""


@pytest.mark.parametrize(
    ("args", "allowed"),
    [
        (["--version"], []),
        (["--help"], ["aiohttp", "httpx"]),  # simulate's one-line help: its module loads the sandbox
        (["run", "--help"], []),
        (["validate", "--help"], []),
        (["status", "--help"], []),
        (["report", "--help"], []),
    ],
)
def test_version_and_help_import_no_heavy_library(args: list[str], allowed: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _IMPORTED, *args],
        capture_output=True,
        text=True,
        timeout=PROC_TIMEOUT,
        check=False,
    )
    imported = json.loads(done.stderr.splitlines()[-1].replace("'", '"'))
    assert set(imported) <= set(allowed), imported


# -- what the summary and status say ----------------------------------------------------------


def _summary_of(campaign: Path, requests: int, seconds: float) -> str:
    from dialer.bookkeeping import RunStats
    from dialer.config import load_campaign
    from dialer.run import RunResult

    stats = RunStats(requests=requests, started=100.0, finished=100.0 + seconds)
    result = RunResult(
        stats=stats, counts={"sent": requests}, imported=None, report=Path("r.csv"), next_due=None
    )
    runner = CliRunner()
    with runner.isolation() as (stdout, _, _):
        cli._summary(load_campaign(campaign), result, seconds)
        return stdout.getvalue().decode()


@pytest.mark.parametrize(
    ("requests", "seconds", "shown"),
    [(1, 0.064, None), (9, 5.0, None), (500, 0.5, None), (10, 1.0, "10.0"), (600, 120.0, "5.0")],
)
def test_the_achieved_rate_is_shown_only_when_it_means_something(
    tmp_path: Path, requests: int, seconds: float, shown: str | None
) -> None:
    text = _summary_of(write_campaign(tmp_path, limits={"rate_per_second": 5}), requests, seconds)
    if shown is None:
        assert f"{requests} requests, too few to measure a rate (limit 5/s);" in text, text
        assert "achieved" not in text
    else:
        assert f"{requests} requests, achieved {shown}/s (limit 5/s);" in text, text


def test_rows_left_by_limit_are_due_now_in_the_summary_and_status(tmp_path: Path, sandbox: Any) -> None:
    server = sandbox(api_key=KEY)
    write_leads(tmp_path / "leads.csv", LEADS)
    campaign = write_campaign(tmp_path, base_url=server.url)

    ran = invoke("run", str(campaign), "--limit", "2", key=KEY)
    status = invoke("status", str(campaign))

    assert ran.exit_code == 75, ran.output
    assert "next rows due: now" in ran.stdout.splitlines()
    assert status.stdout.splitlines()[-2:] == ["due now: 3", "next due: now"]


def _chat_campaign(folder: Path, base_url: str) -> Path:
    path = folder / "chat.toml"
    path.write_text(
        f'name = "t"\nmode = "chat"\nleads = "leads.csv"\n[api]\nbase_url = "{base_url}"\n'
        '[chat]\nagent_id = "2a886b7d-d52d-4f8b-8ea0-19d3edc79214"\nchannel = "whatsapp"\n'
        '[numbers]\npool = ["+14155550100"]\n[limits]\nmax_attempts = 1\n'
        f'[hours]\nstart = "00:00"\nend = "24:00"\ndays = {json.dumps(DAYS)}\n',
        encoding="utf-8",
    )
    return path


def test_unanswered_chats_point_at_retry_unknown(tmp_path: Path, sandbox: Any) -> None:
    server = sandbox(api_key=KEY, drop_rate=1.0)  # every message goes out, no answer comes back
    write_leads(tmp_path / "leads.csv", LEADS)
    campaign = _chat_campaign(tmp_path, server.url)

    ran = invoke("run", str(campaign), key=KEY)
    status = invoke("status", str(campaign))

    assert ran.exit_code == 75, ran.output
    hint = (
        "5 unknown rows: no answer said whether the message went out;"
        f" `dialer run {campaign} --retry-unknown` sends them again (some may get it twice)"
    )
    assert hint in ran.stdout.splitlines()
    assert status.stdout.splitlines()[-1] == hint


def test_the_readme_quick_start_works_as_written() -> None:
    root = Path(__file__).resolve().parent.parent
    readme = (root / "README.md").read_text(encoding="utf-8")
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"^dialer \w+ (campaigns/\S+\.toml)", quick_start, re.MULTILINE))
    assert named, quick_start
    for campaign in named:
        done = dialer("validate", campaign, cwd=root)
        assert done.returncode == 0, (campaign, done.stderr)
        assert "example request bodies (POST /v2/calls):" in done.stdout


@pytest.mark.parametrize("header", ["abc", "nan", "-3", "Mon, 99 Foo 20xx", "inf"])
def test_an_odd_retry_after_in_a_run_is_no_advice_and_no_crash(tmp_path: Path, header: str) -> None:
    import httpx

    from dialer.config import load_campaign
    from dialer.run import RunOptions, run_campaign

    answered: dict[str, int] = {}

    def api(request: httpx.Request) -> httpx.Response:
        phone = json.loads(request.content)["phone"]
        answered[phone] = answered.get(phone, 0) + 1
        if answered[phone] == 1:  # each number is throttled once, with odd advice
            return httpx.Response(429, json={"detail": "slow down"}, headers={"Retry-After": header})
        return httpx.Response(200, json={"response": {"call_id": f"c-{phone}"}})

    write_leads(tmp_path / "leads.csv", LEADS)
    campaign = load_campaign(write_campaign(tmp_path))

    result = run_campaign(
        campaign, RunOptions(api_key=KEY, transport=httpx.MockTransport(ended_at_once(api)))
    )

    assert result.exit_code == 0
    assert result.counts["sent"] == 5 and result.stats.throttled == 5
    assert sorted(answered) == sorted(DIALABLE)


def test_status_imports_neither_the_loader_nor_the_client(tmp_path: Path) -> None:
    """`status` reads the journal only: pandas, numpy, httpx and aiohttp cost it seconds."""
    campaign = write_campaign(tmp_path)
    write_leads(tmp_path / "leads.csv", LEADS)
    subprocess.run(
        [sys.executable, "-m", "dialer", "run", str(campaign), "--sandbox"],
        capture_output=True,
        env={**os.environ, "SYNTHFLOW_API_KEY": "k"},
        timeout=PROC_TIMEOUT,
        check=False,
    )
    done = subprocess.run(
        [sys.executable, "-c", _IMPORTED, "status", str(campaign)],
        capture_output=True,
        text=True,
        timeout=PROC_TIMEOUT,
        check=False,
    )
    imported = json.loads(done.stderr.splitlines()[-1].replace("'", '"'))
    assert "sent" in done.stdout
    assert not set(imported) & {"pandas", "numpy", "httpx", "aiohttp", "openpyxl"}, imported
