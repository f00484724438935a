"""Caller-id health: a pool number whose calls keep failing (or end at once `user-canceled`
or `spam`: carriers flagging it) is rested, and `status` says which and why.

End to end against the sandbox, its record the witness of which caller id placed each call.
"""

from __future__ import annotations

import csv
import time
from datetime import timedelta
from pathlib import Path

import pytest

from dialer.caps import rested_callers
from dialer.config import load_campaign
from dialer.run import campaign_status
from dialer.sandbox import read_record
from dialer.store import Journal
from tests.conftest import MakeSandbox
from tests.test_redial import KEY, START, run_at, write_campaign

A, B = "+14155550100", "+14155550199"


@pytest.mark.parametrize(
    ("calls", "rested"),
    [
        ([("failed", 1.0)] * 5, True),  # five failures of five
        ([("failed", 1.0)] * 4, False),  # four: too few to judge
        ([("spam", 0.5)] * 3 + [("user-canceled", 2.0)] * 2 + [("completed", 60.0)] * 5, True),  # half
        ([("failed", 1.0)] * 5 + [("completed", 60.0)] * 6, False),  # under half
        ([("user-canceled", 45.0)] * 10, False),  # a person hanging up after 45 s is no carrier
        ([("completed", 60.0)] * 20 + [("failed", 1.0)] * 10, False),  # only the last 20 count
    ],
)
def test_when_a_caller_id_is_rested(calls: list[tuple[str, float | None]], rested: bool) -> None:
    found = rested_callers({A: calls})
    assert (A in found) is rested
    if rested:
        assert "rested until they are 24 hours old" in found[A]


def _leads(folder: Path, first: int, count: int) -> None:
    with (folder / "leads.csv").open("a", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([f"Lead {i}", f"+1415555{i:04d}"] for i in range(first, first + count))


def test_a_caller_id_whose_calls_fail_is_rested_and_status_says_why(
    tmp_path: Path, sandbox: MakeSandbox
) -> None:
    api = sandbox(api_key=KEY, seed=1, outcomes="failed=0.6,user-canceled=0.4")
    assert api.record is not None
    campaign = write_campaign(tmp_path, 8, url=api.url, redial="")
    text = campaign.read_text()
    campaign.write_text(text + f'[numbers]\npool = ["{A}"]\nstrategy = "round_robin"\n')
    run_at(campaign, api.url, START)

    status = campaign_status(load_campaign(campaign), clock=lambda: START)
    assert status is not None and list(status.rested) == [A]
    assert "of its last 8 calls failed or were cut short" in status.rested[A]

    # A second number joins the pool; new leads come: none is called from the rested one.
    campaign.write_text(text + f'[numbers]\npool = ["{A}", "{B}"]\nstrategy = "round_robin"\n')
    _leads(tmp_path, 100, 6)
    before = len(read_record(api.record))
    run_at(campaign, api.url, START + timedelta(minutes=5))
    callers = [
        r["body"].get("from_phone_number")
        for r in read_record(api.record)[before:]
        if r["method"] == "POST" and r["path"] == "/v2/calls"
    ]
    assert callers == [B] * 6
    # Only the calls of the last 24 hours count: once they are older, it dials again.
    journal = Journal(tmp_path / "out" / "journal.sqlite", "redial")
    try:
        assert A in rested_callers(journal.recent_by_caller(time.time() - 86400))
        assert A not in rested_callers(journal.recent_by_caller(time.time() + 1))
    finally:
        journal.close()
