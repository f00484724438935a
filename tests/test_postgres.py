"""Whole campaigns on a PostgreSQL journal, against the real sandbox and a real server."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from dialer.config import load_campaign
from dialer.run import RunOptions, campaign_status, run_campaign
from dialer.store.pgurl import schema_name
from tests.conftest import posts, write_leads
from tests.pg import PASSWORD, PgServer
from tests.test_campaign import ALL_DAY, KEY, numbered_leads, peak_per_second

CALL = f'mode = "call"\n[call]\nmodel_id = "m-1"\n{ALL_DAY}'


def pg_campaign(tmp_path: Path, url: str, body: str = CALL, name: str = "t") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(f'name = "{name}"\nleads = "leads.csv"\njournal = "{url}"\n' + body)
    return path


def test_a_campaign_runs_on_postgresql_once_per_lead_and_resumes(
    tmp_path: Path, sandbox: Any, pg_url: str
) -> None:
    server = sandbox(api_key=KEY)
    write_leads(tmp_path / "leads.csv", numbered_leads(30))
    config = load_campaign(pg_campaign(tmp_path, pg_url))
    first = run_campaign(config, RunOptions(api_key=KEY, base_url=server.url, limit=10))
    assert first.counts["sent"] == 10 and first.exit_code == 75
    second = run_campaign(config, RunOptions(api_key=KEY, base_url=server.url))
    assert second.exit_code == 0 and second.counts == {"sent": 30}
    phones = [p["body"]["phone"] for p in posts(server.record)]
    assert len(phones) == len(set(phones)) == 30
    found = campaign_status(config)
    assert found is not None and found.counts == {"sent": 30}
    assert not (tmp_path / "out" / "t.sqlite").exists()  # nothing went to a SQLite file


def _dialer(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dialer", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "SYNTHFLOW_API_KEY": KEY, **(env or {})},
        timeout=120,
    )


def test_the_password_is_never_printed(tmp_path: Path, sandbox: Any, pg_server: PgServer) -> None:
    server = sandbox(api_key=KEY)
    url = pg_server.new_database()
    write_leads(tmp_path / "leads.csv", numbered_leads(3))
    toml = pg_campaign(tmp_path, url)
    outputs = [
        _dialer("run", str(toml), "--base-url", server.url),
        _dialer("status", str(toml)),
        _dialer("report", str(toml), "--out", str(tmp_path / "r.csv")),
    ]
    assert [o.returncode for o in outputs] == [0, 0, 0], [o.stderr for o in outputs]
    assert "sent" in outputs[1].stdout and "postgresql://dialer_test@127.0.0.1" in outputs[1].stdout
    # The password from PGPASSWORD instead of the URL: the same journal.
    bare = pg_campaign(tmp_path, url.replace(f":{PASSWORD}@", "@"), name="t")
    outputs.append(_dialer("status", str(bare), env={"PGPASSWORD": PASSWORD}))
    assert outputs[-1].returncode == 0 and "sent" in outputs[-1].stdout
    # A wrong password: one line, exit 1, the password nowhere.
    wrong = pg_campaign(tmp_path, url.replace(PASSWORD, "wrong-" + PASSWORD), name="t")
    refused = _dialer("status", str(wrong))
    outputs.append(refused)
    assert refused.returncode == 1
    assert "cannot connect" in refused.stderr and "Traceback" not in refused.stderr
    for done in outputs:
        assert PASSWORD not in done.stdout + done.stderr


# -- several runs at once -------------------------------------------------------------

SHARED = f"""mode = "call"
[call]
model_id = "m-1"
[limits]
rate_per_second = {{rate}}
concurrency = 4
settle_after_seconds = 1
claim_lease_seconds = 3
{ALL_DAY}"""


def _start(toml: Path, base_url: str, *flags: str) -> tuple[subprocess.Popen[str], Path]:
    """A `dialer run` process (`flags` added); its output goes to a file (a full pipe would stall it)."""
    output = toml.with_name(f"{toml.stem}-{time.monotonic_ns()}.out")
    with output.open("w") as sink:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dialer",
                "run",
                str(toml),
                "--base-url",
                base_url,
                "--log-format",
                "json",
                *flags,
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "SYNTHFLOW_API_KEY": KEY},
        )
    return process, output


def _finish(started: tuple[subprocess.Popen[str], Path]) -> tuple[int, str]:
    process, output = started
    process.wait(timeout=100)
    return process.returncode, output.read_text()


def _requests(output: str) -> int:
    """The requests a run made, from its run.finished log line."""
    for line in output.splitlines():
        if '"run.finished"' in line:
            return int(json.loads(line)["requests"])
    raise AssertionError(f"no run.finished line in {output[-500:]}")


def _arrivals(record: Path) -> list[float]:
    return [float(r["time"]) for r in posts(record) if r["status"] == 200]


@contextlib.contextmanager
def _together(url: str, campaign: str, runs: int) -> Iterator[None]:
    """The runs started inside begin together: each opening the journal waits on the lock of
    the campaign's schema (PgJournal takes it at open), held here until all `runs` wait. On
    a loaded machine a process may take longer to start than the others take to finish."""
    with psycopg.connect(url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(hashtext(%s))", (schema_name(campaign),))
        yield
        deadline = time.monotonic() + 90
        while True:  # waiting on other processes' start, not timing the code under test
            waiting = holder.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            ).fetchone()
            if (waiting is not None and waiting[0] >= runs) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        holder.execute("SELECT pg_advisory_unlock(hashtext(%s))", (schema_name(campaign),))


def _window_evidence(url: str, record: Path) -> str:
    """For a failed rate assertion: the busiest second's arrivals beside the grants' times
    (granted, left) on the database's clock: which side of the wire the extra one came from."""
    times = sorted(_arrivals(record))
    start = max(range(len(times)), key=lambda i: sum(1 for t in times[i:] if t < times[i] + 1.0))
    busiest = [t for t in times[start:] if t < times[start] + 1.0]
    with psycopg.connect(url) as conn:
        grants = conn.execute(
            "SELECT key, granted_at, left_at FROM dialer_shared.grants"
            " WHERE granted_at BETWEEN %s AND %s ORDER BY granted_at",
            (busiest[0] - 2.0, busiest[-1] + 0.5),
        ).fetchall()
    return f"arrivals {busiest}; grants (key, granted, left) {grants}"


def test_three_runs_share_one_campaign_one_call_per_lead_within_its_rate(
    tmp_path: Path, sandbox_process: Any, pg_url: str
) -> None:
    server = sandbox_process()
    write_leads(tmp_path / "leads.csv", numbered_leads(60))
    toml = pg_campaign(tmp_path, pg_url, SHARED.format(rate=10))
    with _together(pg_url, "t", 3):
        runs = [_start(toml, server.url) for _ in range(3)]
    results = [_finish(run) for run in runs]
    assert [code for code, _ in results] == [0, 0, 0], [out[-2000:] for _, out in results]
    phones = [p["body"]["phone"] for p in posts(server.record)]
    assert len(phones) == len(set(phones)) == 60
    assert peak_per_second(_arrivals(server.record)) <= 10, _window_evidence(pg_url, server.record)
    found = campaign_status(load_campaign(toml))
    assert found is not None and found.counts == {"sent": 60}
    # Each run dialed some of the rows: they really shared the campaign.
    per_run = [_requests(out) for _, out in results]
    assert sum(per_run) == 60 and sum(1 for n in per_run if n) >= 2, per_run


def test_a_run_killed_mid_run_loses_and_repeats_nothing(
    tmp_path: Path, sandbox_process: Any, pg_url: str
) -> None:
    server = sandbox_process()
    write_leads(tmp_path / "leads.csv", numbered_leads(60))
    toml = pg_campaign(tmp_path, pg_url, SHARED.format(rate=10))
    runs = [_start(toml, server.url) for _ in range(3)]
    victim = runs[0][0]
    deadline = time.monotonic() + 60
    while len(posts(server.record)) < 15 and time.monotonic() < deadline:
        time.sleep(0.05)  # waiting on another process's progress, not timing the code under test
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    results = [_finish(run) for run in runs[1:]]
    assert [code for code, _ in results] == [0, 0], [out[-2000:] for _, out in results]
    phones = [p["body"]["phone"] for p in posts(server.record) if p["status"] == 200]
    assert len(phones) == len(set(phones)) == 60  # nothing repeated, nothing lost
    found = campaign_status(load_campaign(toml))
    assert found is not None and found.counts == {"sent": 60}
    assert peak_per_second(_arrivals(server.record)) <= 10


def test_two_campaigns_on_one_account_share_its_rate(
    tmp_path: Path, sandbox_process: Any, pg_url: str
) -> None:
    server = sandbox_process()
    write_leads(tmp_path / "leads.csv", numbered_leads(40))
    account = '[account]\nname = "acme"\nrate_per_second = 6\n'
    tomls = [
        pg_campaign(tmp_path, pg_url, SHARED.format(rate=10) + account, name=name)
        for name in ("spring", "autumn")
    ]
    results = [_finish(run) for run in [_start(toml, server.url) for toml in tomls]]
    assert [code for code, _ in results] == [0, 0], [out[-2000:] for _, out in results]
    accepted = posts(server.record)
    assert len(accepted) == 80  # both campaigns dialed every lead (the same 40 numbers each)
    assert peak_per_second(_arrivals(server.record)) <= 6, _window_evidence(pg_url, server.record)


def test_sqlite_campaigns_on_one_account_share_its_rate_through_the_account_file(
    tmp_path: Path, sandbox_process: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DIALER_ACCOUNTS_DIR", str(tmp_path / "accounts"))
    server = sandbox_process()
    write_leads(tmp_path / "leads.csv", numbered_leads(30))
    account = '[account]\nname = "acme"\nrate_per_second = 5\n'
    tomls = []
    for name in ("spring", "autumn"):
        toml = tmp_path / f"{name}.toml"
        toml.write_text(f'name = "{name}"\nleads = "leads.csv"\n' + SHARED.format(rate=10) + account)
        tomls.append(toml)
    results = [_finish(run) for run in [_start(toml, server.url) for toml in tomls]]
    assert [code for code, _ in results] == [0, 0], [out[-2000:] for _, out in results]
    assert len(posts(server.record)) == 60
    assert peak_per_second(_arrivals(server.record)) <= 5
    assert (tmp_path / "accounts" / "acme.sqlite").exists()


def test_a_sqlite_campaign_migrated_halfway_resumes_on_postgresql_with_nothing_sent_twice(
    tmp_path: Path, sandbox: Any, pg_url: str
) -> None:
    server = sandbox(api_key=KEY)
    write_leads(tmp_path / "leads.csv", numbered_leads(30))
    toml = tmp_path / "t.toml"
    toml.write_text('name = "t"\nleads = "leads.csv"\n' + SHARED.format(rate=10))
    half = run_campaign(load_campaign(toml), RunOptions(api_key=KEY, base_url=server.url, limit=12))
    assert half.counts == {"sent": 12, "pending": 18}
    # One row left `unknown`, as a crash right after its request would leave it.
    import sqlite3

    conn = sqlite3.connect(tmp_path / "out" / "t.sqlite")
    with conn:
        conn.execute("UPDATE leads SET status = 'unknown', call_id = '' WHERE id = 1")
    conn.close()
    moved = _dialer("migrate", str(toml), "--to", pg_url)
    assert moved.returncode == 0, moved.stderr
    assert "30 rows copied" in moved.stdout and PASSWORD not in moved.stdout + moved.stderr
    again = _dialer("migrate", str(toml), "--to", pg_url)
    assert again.returncode == 1 and "already there; nothing copied" in again.stderr
    toml.write_text(f'name = "t"\nleads = "leads.csv"\njournal = "{pg_url}"\n' + SHARED.format(rate=10))
    rest = run_campaign(load_campaign(toml), RunOptions(api_key=KEY, base_url=server.url))
    assert rest.exit_code == 0 and rest.counts == {"sent": 30}
    phones = [p["body"]["phone"] for p in posts(server.record)]
    assert len(phones) == len(set(phones)) == 30  # the unknown row was looked up and found, not re-sent
