"""Whole campaigns on a PostgreSQL journal, against the real sandbox and a real server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from dialer.config import load_campaign
from dialer.run import RunOptions, campaign_status, run_campaign
from tests.pg import PASSWORD, PgServer
from tests.test_campaign import ALL_DAY, KEY, numbered_leads, posts, write_leads

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
