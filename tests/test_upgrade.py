"""A journal written by the dialer of 774b073 (schema 1, tests/data/journal-v1) resumed by this one."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

from dialer.config import load_campaign
from dialer.run import RunOptions, run_campaign
from dialer.sandbox import read_record
from dialer.store import SCHEMA_VERSION
from tests.conftest import MakeSandbox

DATA = Path(__file__).parent / "data" / "journal-v1"


def _rows(path: Path) -> dict[int, dict[str, Any]]:
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        return {r["id"]: dict(r) for r in conn.execute("SELECT * FROM leads")}
    finally:
        conn.close()


def _placed(record: Path) -> list[str]:
    """The phones the sandbox placed a call for, one entry per call."""
    return [
        r["body"]["phone"]
        for r in read_record(record)
        if r.get("method") == "POST" and r["path"] == "/v2/calls" and r["status"] == 200
    ]


def test_a_journal_of_today_resumes_keeping_every_row_and_sending_nothing_twice(
    tmp_path: Path, sandbox: MakeSandbox
) -> None:
    for name in ("campaign.toml", "leads.csv", "journal-v1.sqlite"):
        shutil.copy(DATA / name, tmp_path / name)
    journal = tmp_path / "journal-v1.sqlite"
    before = _rows(journal)
    placed_before = _placed(DATA / "record.jsonl")
    assert sorted(r["status"] for r in before.values()).count("pending") == 4  # the fixture is what it says
    assert {r["status"] for r in before.values()} == {"sent", "failed", "pending", "invalid", "duplicate"}

    running = sandbox(api_key="fixture-key")
    result = run_campaign(
        load_campaign(tmp_path / "campaign.toml"), RunOptions(api_key="fixture-key", base_url=running.url)
    )

    assert result.exit_code == 0
    after = _rows(journal)
    assert after.keys() == before.keys()
    pending = {i for i, r in before.items() if r["status"] == "pending"}
    for i, old in before.items():
        new = after[i]
        if i in pending:  # dialed now, once
            assert (new["status"], new["attempts"]) == ("sent", 1), new
            assert new["call_id"]
        else:  # sent, failed, invalid, duplicate: kept as the old dialer left them
            for column in ("status", "call_id", "attempts", "error", "phone", "position", "from_number"):
                assert new[column] == old[column], (column, old, new)
    placed_now = _placed(running.record)  # type: ignore[arg-type]
    assert sorted(placed_now) == sorted(before[i]["phone"] for i in pending)
    everyone = placed_before + placed_now
    assert len(everyone) == len(set(everyone)), "someone was rung twice"
    conn = sqlite3.connect(journal)
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == (str(SCHEMA_VERSION),)
    conn.close()
