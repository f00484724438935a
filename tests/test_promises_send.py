"""Issue 10, the sending side: each promise end to end against the sandbox, its record the witness.

Clocks are injected (the calling-hours clock, an event loop's virtual time); nothing sleeps
to time a test.
"""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from dialer.run import RunOptions, run_campaign
from tests.test_campaign import ALL_DAY, KEY, campaign, numbered_leads, posts, write_leads


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
