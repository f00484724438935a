"""Issue 13, the law applied: a lead's state (its column, else its area code) narrows every
hours decision, and the per-24-hour cap per number holds across re-sends, re-imports and
runs. End to end against the sandbox, its record the witness; every clock is injected.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from dialer.caps import cap_for, due_after_cap
from dialer.cli import main
from dialer.columns import resolve_columns
from dialer.config import Campaign
from dialer.errors import LeadsFileError
from dialer.law import rules_for
from dialer.run import RunOptions, RunResult, campaign_status, run_campaign, validate_campaign
from dialer.store import Journal
from tests.conftest import posts, write_leads
from tests.mapped import campaign as mapped_campaign
from tests.mapped import mapped, write_csv
from tests.test_campaign import ALL_DAY, KEY, campaign, report_rows

# Tuesday 24 Nov 2026 in New York (UTC-5): 19:30 and 20:30 local.
EVENING = datetime(2026, 11, 24, 0, 30, tzinfo=UTC)
LATE = datetime(2026, 11, 24, 1, 30, tzinfo=UTC)
NEXT_MORNING_EIGHT = datetime(2026, 11, 24, 13, 0, tzinfo=UTC)  # 08:00 in New York

NEW_YORK, MIAMI, TULSA, BIRMINGHAM = (
    "+1 212 555 0101",
    "+1 305 555 0102",
    "+1 918 555 0103",
    "+1 205 555 0104",
)
CALL = 'mode = "call"\n[call]\nmodel_id = "m"\n'


def e164(written: str) -> str:
    return "+" + "".join(ch for ch in written if ch.isdigit())


def run(config: Campaign, url: str, now: datetime, **flags: Any) -> RunResult:
    return run_campaign(config, RunOptions(api_key=KEY, base_url=url, clock=lambda: now, **flags))


def by_name(result: RunResult) -> dict[str, dict[str, str]]:
    return {row["Name"]: row for row in report_rows(result)}


def dialed(record: Path) -> list[str]:
    return [r["body"]["phone"] for r in posts(record)]


# -- the state: column, area code, presumption -------------------------------------------


def test_the_feeder_defers_a_florida_number_at_half_past_eight_and_calls_new_york(
    tmp_path: Path, sandbox: Any
) -> None:
    server = sandbox()
    write_leads(tmp_path / "leads.csv", [{"Name": "NY", "Phone": NEW_YORK}, {"Name": "FL", "Phone": MIAMI}])
    config = campaign(tmp_path, CALL)  # the default [hours]: 08:00-21:00, the federal window
    result = run(config, server.url, LATE)
    assert dialed(server.record) == [e164(NEW_YORK)]
    florida = by_name(result)["FL"]
    assert florida["dialer_status"] == "deferred"
    assert florida["dialer_error"] == "outside calling hours in America/New_York; due 2026-11-24T13:00Z"
    assert result.next_due == NEXT_MORNING_EIGHT
    status = campaign_status(config, clock=lambda: LATE)
    assert status is not None and (status.due_now, status.next_due) == (0, NEXT_MORNING_EIGHT)
    # At 19:30 Florida is open: the deferred row goes.
    run(config, server.url, EVENING)
    assert dialed(server.record) == [e164(NEW_YORK), e164(MIAMI)]


def test_the_state_column_decides_and_florida_also_holds_by_area_code(tmp_path: Path, sandbox: Any) -> None:
    server = sandbox()
    rows = [
        {"Name": "NY in NY", "Phone": NEW_YORK, "State": "ny"},
        {"Name": "NY number in FL", "Phone": "+1 212 555 0111", "State": "Florida"},
        {"Name": "FL number in NY", "Phone": MIAMI, "State": "NY"},  # § 501.059(8)(d) presumes Florida
        {"Name": "Narnia", "Phone": "+1 212 555 0112", "State": "Narnia"},
        {"Name": "blank", "Phone": "+1 212 555 0113", "State": " "},
    ]
    write_leads(tmp_path / "leads.csv", rows)
    config = campaign(tmp_path, CALL)
    result = run(config, server.url, LATE)
    assert sorted(dialed(server.record)) == [e164(NEW_YORK), "+12125550113"]
    report = by_name(result)
    assert report["NY number in FL"]["dialer_status"] == "deferred"
    assert report["FL number in NY"]["dialer_status"] == "deferred"
    assert report["Narnia"]["dialer_status"] == "invalid"
    assert report["Narnia"]["dialer_error"] == (
        "State: 'Narnia' is not a US state (use a two-letter code like FL or a name)"
    )
    # The state stays a custom variable, as it was before the law read it.
    sent = [r["body"] for r in posts(server.record) if r["body"]["phone"] == e164(NEW_YORK)][0]
    assert sent["custom_variables"] == [{"key": "State", "value": "ny"}]
    # The journal keeps the text: a later run decides the law from it, without the file.
    with sqlite3.connect(config.journal_path) as db:
        states = dict(db.execute("SELECT name, state FROM leads").fetchall())
    assert states["NY number in FL"] == "Florida"


def test_hours_closing_by_law_while_a_row_waits_for_the_lane_stop_it(tmp_path: Path, sandbox: Any) -> None:
    # One connection and a slow API: the second and third rows wait for the lane. The law
    # closes Florida at 20:00 once the first answer is back; the campaign's hours (to 21:00)
    # would not.
    server = sandbox(latency_ms=400)
    rows = [{"Name": f"FL {i}", "Phone": f"+1 305 555 01{10 + i}"} for i in range(3)]
    write_leads(tmp_path / "leads.csv", rows)
    config = campaign(tmp_path, CALL + "[limits]\nrate_per_second = 50\nconcurrency = 1\n")
    answers = _Answers()
    open_, closed = datetime(2026, 11, 24, 0, 59, tzinfo=UTC), datetime(2026, 11, 24, 1, 0, tzinfo=UTC)
    result = run_campaign(
        config,
        RunOptions(
            api_key=KEY,
            base_url=server.url,
            transport=answers,
            clock=lambda: closed if answers.answered else open_,
        ),
    )
    assert dialed(server.record) == ["+13055550110"]
    assert result.counts == {"sent": 1, "deferred": 2}
    # The two intents never sent were restored: they do not count towards the cap.
    with sqlite3.connect(config.journal_path) as db:
        assert db.execute("SELECT phone FROM dials").fetchall() == [("+13055550110",)]


class _Answers(httpx.AsyncHTTPTransport):
    """The real transport to the sandbox, counting the answers that came back."""

    def __init__(self) -> None:
        super().__init__()
        self.answered = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await super().handle_async_request(request)
        self.answered += 1
        return response


def test_a_lead_whose_campaign_days_and_law_never_overlap_is_invalid_naming_the_law(
    tmp_path: Path, sandbox: Any
) -> None:
    server = sandbox()
    write_leads(
        tmp_path / "leads.csv", [{"Name": "AL", "Phone": BIRMINGHAM}, {"Name": "NY", "Phone": NEW_YORK}]
    )
    # Sundays only: Alabama's rule allows no automated solicitation call on a Sunday.
    config = campaign(tmp_path, CALL + '[hours]\nstart = "09:00"\nend = "17:00"\ndays = ["sun"]\n')
    sunday_noon = datetime(2026, 11, 29, 17, 0, tzinfo=UTC)
    result = run(config, server.url, sunday_noon)
    assert dialed(server.record) == [e164(NEW_YORK)]
    error = by_name(result)["AL"]["dialer_error"]
    assert by_name(result)["AL"]["dialer_status"] == "invalid"
    assert error.startswith(
        "never inside calling hours: the campaign's [hours] (Mon-Sat closed, Sun 09:00-17:00) and"
        " the law (AL: Mon-Sat 08:00-20:00, Sun closed) share no hour; Alabama: Ala. Admin. Code"
    )
    found = validate_campaign(config, clock=lambda: sunday_noon)
    assert found.counts["invalid"] == 1 and found.problems[0][2] == error


def test_validate_counts_due_now_by_the_law_and_prints_a_line_per_state_rule(tmp_path: Path) -> None:
    rows = [
        {"Name": "NY", "Phone": NEW_YORK},
        {"Name": "FL 1", "Phone": MIAMI},
        {"Name": "FL 2", "Phone": "+1 786 555 0105"},
        {"Name": "OK", "Phone": TULSA},
    ]
    write_leads(tmp_path / "leads.csv", rows)
    config = campaign(tmp_path, CALL)
    found = validate_campaign(config, clock=lambda: LATE)
    assert found.due_now == 2  # New York, and Tulsa (19:30 there); Florida closed at 20:00
    assert found.next_due == datetime(2026, 11, 24, 13, 0, tzinfo=UTC)  # 08:00 in Miami
    lines = sorted(law.validate_line(n) for law, n in found.laws.items())
    assert lines[0].startswith(
        "law: FL (2 rows): Mon-Sun 08:00-20:00, at most 3 calls per 24 h (Florida: Fla. Stat. § 501.616(6)(a)"
    )
    assert lines[1].startswith("law: OK (1 row): Mon-Sun 08:00-20:00, at most 3 calls per 24 h (Oklahoma:")
    shown = CliRunner().invoke(main, ["validate", str(config.path)])
    assert shown.exit_code == 0, shown.output
    assert [line for line in shown.output.splitlines() if line.startswith("law: ")] == lines


# -- the per-24-hour cap -----------------------------------------------------------------


def test_the_law_caps_a_florida_number_at_three_calls_in_24_hours_across_runs(
    tmp_path: Path, sandbox: Any
) -> None:
    failing = sandbox(fail_rate=1.0)  # every POST answers 503: each run's one try fails the row
    write_leads(tmp_path / "leads.csv", [{"Name": "FL", "Phone": MIAMI}, {"Name": "NY", "Phone": NEW_YORK}])
    config = campaign(tmp_path, CALL + "[limits]\nmax_attempts = 1\n" + ALL_DAY)
    start = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)  # 10:00 in Miami
    for hour in range(3):
        run(config, failing.url, start + timedelta(hours=hour), retry_failed=hour > 0)
    assert dialed(failing.record) == [e164(MIAMI), e164(NEW_YORK)] * 3
    # A fourth call within 24 hours of the first: Florida's cap; New York has none.
    healthy = sandbox()
    result = run(config, healthy.url, start + timedelta(hours=5), retry_failed=True)
    assert dialed(healthy.record) == [e164(NEW_YORK)]
    florida = by_name(result)["FL"]
    assert florida["dialer_status"] == "deferred"
    assert florida["dialer_error"] == (
        "3 calls to this number in 24 hours, the cap of the law for FL; due 2026-11-25T15:00Z"
    )
    # The summary and `status` wait for the cap too, though the hours are open.
    assert result.next_due == start + timedelta(hours=24)
    status = campaign_status(config, clock=lambda: start + timedelta(hours=5))
    assert status is not None and (status.due_now, status.next_due) == (0, start + timedelta(hours=24))
    run(config, healthy.url, start + timedelta(hours=23, minutes=59))
    assert dialed(healthy.record) == [e164(NEW_YORK)]  # still under the cap's 24 hours
    result = run(config, healthy.url, start + timedelta(hours=24, minutes=1))
    assert dialed(healthy.record) == [e164(NEW_YORK), e164(MIAMI)]
    assert by_name(result)["FL"]["dialer_status"] == "sent"


def test_the_campaign_cap_counts_unknown_rows_sent_again_with_retry_unknown(
    tmp_path: Path, sandbox: Any
) -> None:
    server = sandbox(drop_rate=1.0)  # each chat is created, its answer lost: `unknown`
    write_leads(tmp_path / "leads.csv", [{"Name": "NY", "Phone": NEW_YORK}])
    config = campaign(
        tmp_path,
        'mode = "chat"\n[chat]\nagent_id = "2a886b7d-d52d-4f8b-8ea0-19d3edc79214"\n'
        'channel = "sms"\ninitial_message = "Hi!"\n[numbers]\npool = ["+14155550100"]\n'
        f"[limits]\ncalls_per_24h = 2\nmax_attempts = 1\n{ALL_DAY}",
    )
    now = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)
    run(config, server.url, now)
    run(config, server.url, now + timedelta(minutes=1), retry_unknown=True)
    assert len(posts(server.record, "/v2/chat/outbound")) == 2
    result = run(config, server.url, now + timedelta(minutes=2), retry_unknown=True)
    assert len(posts(server.record, "/v2/chat/outbound")) == 2  # a row `unknown` may have rung
    assert by_name(result)["NY"]["dialer_error"] == (
        "2 calls to this number in 24 hours, the cap of [limits] calls_per_24h; due 2026-11-25T15:00Z"
    )


def test_the_cap_follows_the_number_across_re_imports_and_another_row_is_a_duplicate(
    tmp_path: Path, sandbox: Any
) -> None:
    failing = sandbox(fail_rate=1.0)
    leads = tmp_path / "leads.csv"
    write_leads(leads, [{"Name": "Ann", "Phone": MIAMI, "Note": "v1"}])
    config = campaign(tmp_path, CALL + "[limits]\nmax_attempts = 1\n" + ALL_DAY)
    start = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)
    run(config, failing.url, start)
    run(config, failing.url, start + timedelta(hours=1), retry_failed=True)
    # The number comes back under another row beside the old one: that row never dials it.
    write_leads(
        leads, [{"Name": "Ann", "Phone": MIAMI, "Note": "v1"}, {"Name": "Bob", "Phone": MIAMI, "Note": ""}]
    )
    result = run(config, failing.url, start + timedelta(hours=2), retry_failed=True)
    assert by_name(result)["Bob"]["dialer_status"] == "duplicate"
    assert dialed(failing.record) == [e164(MIAMI)] * 3
    # The old row edited (a new name, other cells): it takes over the history, and the
    # number's three calls still count.
    write_leads(leads, [{"Name": "Ann Smith", "Phone": "305-555-0102", "Note": "v2"}])
    healthy = sandbox()
    result = run(config, healthy.url, start + timedelta(hours=3), retry_failed=True)
    assert dialed(healthy.record) == []
    assert by_name(result)["Ann Smith"]["dialer_error"].startswith("3 calls to this number in 24 hours")
    result = run(config, healthy.url, start + timedelta(hours=24, seconds=30))
    assert dialed(healthy.record) == [e164(MIAMI)]


# -- the cap's arithmetic ------------------------------------------------------------------


def test_the_stricter_cap_wins_and_says_where_it_comes_from() -> None:
    florida, new_york = rules_for(e164(MIAMI)), rules_for(e164(NEW_YORK))
    assert cap_for(None, florida) == (3, "the law for FL")
    assert cap_for(5, florida) == (3, "the law for FL")
    assert cap_for(2, florida) == (2, "[limits] calls_per_24h")
    assert cap_for(None, new_york) is None
    assert cap_for(4, new_york) == (4, "[limits] calls_per_24h")


@pytest.mark.parametrize(
    ("hours_ago", "cap", "due_in_hours"),
    [
        ((), 3, None),
        ((1, 2), 3, None),
        ((25, 2, 1), 3, None),  # the oldest has left the window
        ((3, 2, 1), 3, 21),  # at the cap: due when the oldest is 24 hours old
        ((5, 4, 3, 2), 3, 20),  # over it (a lower cap since): when the second oldest is
        ((1,), 1, 23),
    ],
)
def test_a_number_is_due_again_once_enough_of_its_calls_are_24_hours_old(
    hours_ago: tuple[int, ...], cap: int, due_in_hours: int | None
) -> None:
    now = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    dialed_at = [(now - timedelta(hours=h)).timestamp() for h in hours_ago]
    due = due_after_cap(dialed_at, cap, now)
    assert due == (None if due_in_hours is None else now + timedelta(hours=due_in_hours))


# -- the state column: which headers, which values ---------------------------------------


@pytest.mark.parametrize(
    ("headers", "state"),
    [
        (["Name", "Phone", "State"], "State"),
        (["Name", "Phone", "state code"], "state code"),
        (["Name", "Phone", "US State"], "US State"),
        (["Name", "Phone", "Province"], None),  # another country's places
        (["Name", "Phone", "Region"], None),  # a sales region, as often as a state
        (["Name", "Phone", "State/Province"], None),
    ],
)
def test_only_headers_that_clearly_mean_a_us_state_are_matched(
    tmp_path: Path, headers: list[str], state: str | None
) -> None:
    columns = resolve_columns(mapped_campaign(tmp_path, tmp_path / "leads.csv"), headers)
    assert columns.state == state
    assert columns.variables == (headers[2],)  # the state is still sent as a custom variable


def test_a_state_column_named_in_the_campaign_must_exist(tmp_path: Path) -> None:
    c = mapped_campaign(tmp_path, tmp_path / "leads.csv", columns={"state": "Where"})
    assert resolve_columns(c, ["Name", "Phone", " where "]).state == " where "
    with pytest.raises(LeadsFileError, match=r'column "Where" \(columns.state\) not found'):
        resolve_columns(c, ["Name", "Phone", "State"])


def test_each_state_cell_is_checked_and_kept_as_written(tmp_path: Path) -> None:
    leads = write_csv(
        tmp_path / "leads.csv",
        [
            ["Name", "Phone", "Province of residence"],
            ["A", NEW_YORK, " fl "],
            ["B", "+1 212 555 0120", "Ontario"],
            ["C", "+1 212 555 0121", ""],
        ],
    )
    c = mapped_campaign(tmp_path, leads, columns={"state": "Province of residence"})
    a, b, blank = mapped(c)
    assert (a.status, a.state) == ("pending", "fl")
    assert rules_for(a.phone, a.state).states == ("FL",)
    assert (b.status, b.error) == (
        "invalid",
        "Province of residence: 'Ontario' is not a US state (use a two-letter code like FL or a name)",
    )
    assert (blank.status, blank.state) == ("pending", "")


def test_an_old_journal_counts_each_leads_last_intent_towards_the_cap(tmp_path: Path) -> None:
    path = tmp_path / "journal-v1.sqlite"
    path.write_bytes((Path(__file__).parent / "data" / "journal-v1" / "journal-v1.sqlite").read_bytes())
    with sqlite3.connect(path) as db:
        expected = sorted(db.execute("SELECT phone, intent_at FROM leads WHERE intent_at IS NOT NULL"))
    assert expected  # the fixture has sent rows
    journal = Journal(path, "v1")
    try:
        assert sorted(journal.conn.execute("SELECT phone, at FROM dials")) == expected
        assert {journal.row(i).state for (i,) in journal.conn.execute("SELECT id FROM leads")} == {""}
    finally:
        journal.close()
