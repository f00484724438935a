"""Whole campaigns against the real sandbox: bodies field for field, ids in the report,
the rate bound read from the sandbox's record, adaptive pacing, caller ids and calling hours."""

from __future__ import annotations

import csv
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from dialer.bookkeeping import utc_now
from dialer.config import Campaign, load_campaign
from dialer.run import RunOptions, RunResult, campaign_status, run_campaign
from tests.conftest import posts, write_leads

KEY = "test-key"
ALL_DAY = '[hours]\nstart = "00:00"\nend = "24:00"\ndays = ["mon","tue","wed","thu","fri","sat","sun"]\n'


def numbered_leads(n: int, area: str = "212") -> list[dict[str, str]]:
    return [
        {
            "Name": f"Lead {i}",
            "Phone": f"({area}) 555-{100 + i % 100:04d}" if i < 100 else f"+1 {area} 555 {i:04d}",
            "Company": f"Co {i}",
        }
        for i in range(n)
    ]


def campaign(tmp_path: Path, body: str, leads: str = "leads.csv") -> Campaign:
    path = tmp_path / "campaign.toml"
    path.write_text(f'name = "t"\nleads = "{leads}"\n' + body)
    return load_campaign(path)


def report_rows(result: RunResult) -> list[dict[str, str]]:
    with result.report.open(encoding="utf-8-sig", newline="") as handle:
        return list(csv.DictReader(handle))


def peak_per_second(times: list[float]) -> int:
    """The most requests in any 1-second window, by arrival time."""
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while times[start] <= t - 1.0:
            start += 1
        best = max(best, end - start + 1)
    return best


def test_call_campaign_sends_documented_bodies_and_reports_ids(tmp_path: Path, sandbox: Any) -> None:
    server = sandbox()
    write_leads(
        tmp_path / "leads.csv",
        [
            {
                "First Name": "Maria",
                "Last Name": "Hernández",
                "Mobile": "(415) 555-0132",
                "E-mail": "maria@example.com",
                "Time Zone": "",
                "Company": "Bayview",
                "Deal": "1500",
            },
            {
                "First Name": "James",
                "Last Name": "O'Connor",
                "Mobile": "+1 212 555 0199",
                "E-mail": "",
                "Time Zone": "America/New_York",
                "Company": "=HYPERLINK(1)",
                "Deal": "",
            },
            {
                "First Name": "Bad",
                "Last Name": "Number",
                "Mobile": "555-01",
                "E-mail": "",
                "Time Zone": "",
                "Company": "X",
                "Deal": "",
            },
            {
                "First Name": "Again",
                "Last Name": "Maria",
                "Mobile": "4155550132",
                "E-mail": "",
                "Time Zone": "",
                "Company": "Y",
                "Deal": "",
            },
        ],
    )
    config = campaign(
        tmp_path,
        f"""mode = "call"
[call]
model_id = "m-1"
prompt = "Help {{Company}}."
greeting = "Hello!"
[numbers]
pool = ["+14155550100", "+12125550100"]
strategy = "local"
{ALL_DAY}""",
    )
    result = run_campaign(config, RunOptions(api_key=KEY, base_url=server.url))
    assert result.exit_code == 0
    bodies = [r["body"] for r in posts(server.record)]
    assert sorted(bodies, key=lambda b: b["phone"]) == [
        {
            "model_id": "m-1",
            "phone": "+12125550199",
            "name": "James O'Connor",
            "from_phone_number": "+12125550100",
            "custom_variables": [{"key": "Company", "value": "=HYPERLINK(1)"}, {"key": "Deal", "value": ""}],
            "lead_timezone": "America/New_York",
            "prompt": "Help =HYPERLINK(1).",  # the dialer fills {Column} (README, "Custom variables")
            "greeting": "Hello!",
        },
        {
            "model_id": "m-1",
            "phone": "+14155550132",
            "name": "Maria Hernández",
            "from_phone_number": "+14155550100",
            "custom_variables": [{"key": "Company", "value": "Bayview"}, {"key": "Deal", "value": "1500"}],
            "lead_email": "maria@example.com",
            "lead_timezone": "America/Los_Angeles",
            "prompt": "Help Bayview.",
            "greeting": "Hello!",
        },
    ]
    ids = {r["body"]["phone"]: r["response"]["response"]["call_id"] for r in posts(server.record)}
    rows = report_rows(result)
    assert [r["dialer_status"] for r in rows] == ["sent", "sent", "invalid", "duplicate"]
    assert rows[0]["dialer_id"] == ids["+14155550132"]
    assert rows[1]["dialer_id"] == ids["+12125550199"]
    assert rows[0]["First Name"] == "Maria" and rows[0]["Last Name"] == "Hernández"
    assert rows[1]["Company"] == "'=HYPERLINK(1)"  # formula neutralised in the report only
    assert rows[0]["dialer_from_number"] == "+14155550100"
    assert rows[3]["dialer_error"] == "same number as row 2"
    assert rows[2]["dialer_error"]


def test_chat_campaign_sends_documented_bodies(tmp_path: Path, sandbox: Any) -> None:
    server = sandbox()
    write_leads(
        tmp_path / "leads.csv",
        [
            {"Name": "Maria", "Phone": "(415) 555-0132", "Plan": "Gold"},
            {"Name": "James", "Phone": "+1 212 555 0199", "Plan": "Silver"},
        ],
    )
    config = campaign(
        tmp_path,
        f"""mode = "chat"
[chat]
agent_id = "2a886b7d-d52d-4f8b-8ea0-19d3edc79214"
channel = "whatsapp"
initial_message = "Hi!"
template = {{ content_sid = "HX1", variables = {{ "1" = "{{Name}}", "2" = "{{Plan}}" }} }}
[numbers]
pool = ["+14155550100"]
{ALL_DAY}""",
    )
    result = run_campaign(config, RunOptions(api_key=KEY, base_url=server.url))
    assert result.exit_code == 0
    records = posts(server.record, "/v2/chat/outbound")
    assert [r["body"] for r in records] == [
        {
            "agent_id": "2a886b7d-d52d-4f8b-8ea0-19d3edc79214",
            "channel": "whatsapp",
            "to_number": "+14155550132",
            "from_number": "+14155550100",
            "initial_message": "Hi!",
            "template": {"content_sid": "HX1", "variables": {"1": "Maria", "2": "Gold"}},
            "custom_variables": {"Plan": "Gold", "name": "Maria"},
        },
        {
            "agent_id": "2a886b7d-d52d-4f8b-8ea0-19d3edc79214",
            "channel": "whatsapp",
            "to_number": "+12125550199",
            "from_number": "+14155550100",
            "initial_message": "Hi!",
            "template": {"content_sid": "HX1", "variables": {"1": "James", "2": "Silver"}},
            "custom_variables": {"Plan": "Silver", "name": "James"},
        },
    ]
    rows = report_rows(result)
    assert [r["dialer_id"] for r in rows] == [r["response"]["response"]["conversation_id"] for r in records]


@pytest.mark.parametrize("rate", [10, 25])
def test_the_rate_is_never_exceeded_in_any_second(tmp_path: Path, sandbox_process: Any, rate: int) -> None:
    server = sandbox_process(latency_ms=20)
    write_leads(tmp_path / "leads.csv", numbered_leads(int(rate * 2.5)))
    config = campaign(
        tmp_path,
        f"""mode = "call"
[call]
model_id = "m"
[limits]
rate_per_second = {rate}
concurrency = 8
{ALL_DAY}""",
    )
    result = run_campaign(config, RunOptions(api_key=KEY, base_url=server.url))
    assert result.exit_code == 0
    times = [r["time"] for r in posts(server.record)]
    assert len(times) == int(rate * 2.5)
    # From the very first second: no burst at start.
    assert peak_per_second(times) <= rate
    assert sum(1 for t in times if t < times[0] + 1.0) <= rate


def test_adaptive_pacing_finishes_below_a_hidden_limit_without_failures(
    tmp_path: Path, sandbox_process: Any
) -> None:
    server = sandbox_process(rate_limit=15)
    write_leads(tmp_path / "leads.csv", numbered_leads(90))
    config = campaign(
        tmp_path,
        f"""mode = "call"
[call]
model_id = "m"
[limits]
rate_per_second = 45
concurrency = 10
max_attempts = 2
{ALL_DAY}""",
    )
    result = run_campaign(config, RunOptions(api_key=KEY, base_url=server.url))
    assert result.exit_code == 0
    assert result.counts == {"sent": 90}
    record = posts(server.record)
    placed = Counter(r["body"]["phone"] for r in record if r["status"] == 200)
    assert len(placed) == 90 and set(placed.values()) == {1}
    throttled = sum(1 for r in record if r["status"] == 429)
    assert throttled == result.stats.throttled
    # Few 429s: the pacer learns the limit instead of hammering it.
    assert throttled < 45


def test_caller_ids_by_strategy_and_daily_cap(tmp_path: Path, sandbox: Any) -> None:
    server = sandbox()
    write_leads(
        tmp_path / "leads.csv",
        [
            {"Name": "SF", "Phone": "(415) 555-0132"},
            {"Name": "NY", "Phone": "(212) 555-0199"},
            {"Name": "Oakland", "Phone": "(510) 555-0111"},  # same state as 415
            {"Name": "Chicago", "Phone": "(312) 555-0143"},
            {"Name": "Dallas", "Phone": "(214) 555-0143"},  # same zone as 312
            {"Name": "SF2", "Phone": "(415) 555-0188"},  # 415 capped by now
        ],
    )
    config = campaign(
        tmp_path,
        f"""mode = "call"
[call]
model_id = "m"
[numbers]
pool = ["+14155550100", "+12125550100", "+13125550100"]
strategy = "local"
daily_cap = 2
[limits]
concurrency = 1
rate_per_second = 50
{ALL_DAY}""",
    )
    result = run_campaign(config, RunOptions(api_key=KEY, base_url=server.url))
    rows = {r["Name"]: r for r in report_rows(result)}
    assert rows["SF"]["dialer_from_number"] == "+14155550100"
    assert rows["NY"]["dialer_from_number"] == "+12125550100"
    assert rows["Oakland"]["dialer_from_number"] == "+14155550100"
    assert rows["Chicago"]["dialer_from_number"] == "+13125550100"
    assert rows["Dallas"]["dialer_from_number"] == "+13125550100"
    # 415 and 312 have reached their cap of 2: the least used (212) takes SF2.
    assert rows["SF2"]["dialer_from_number"] == "+12125550100"
    assert result.exit_code == 0


def test_every_number_capped_defers_the_rest_and_exits_75(tmp_path: Path, sandbox: Any) -> None:
    server = sandbox()
    write_leads(tmp_path / "leads.csv", numbered_leads(7))
    config = campaign(
        tmp_path,
        f"""mode = "call"
[call]
model_id = "m"
[numbers]
pool = ["+14155550100", "+12125550100"]
strategy = "round_robin"
daily_cap = 2
[limits]
concurrency = 1
rate_per_second = 50
{ALL_DAY}""",
    )
    result = run_campaign(config, RunOptions(api_key=KEY, base_url=server.url))
    assert result.exit_code == 75
    assert result.counts == {"sent": 4, "deferred": 3}
    numbers = Counter(r["body"]["from_phone_number"] for r in posts(server.record))
    assert numbers == {"+14155550100": 2, "+12125550100": 2}
    rows = report_rows(result)
    assert [r["dialer_from_number"] for r in rows[:4]] == ["+14155550100", "+12125550100"] * 2
    assert all("daily cap" in r["dialer_error"] for r in rows[4:])
    # A second run the same day sends nothing more.
    again = run_campaign(config, RunOptions(api_key=KEY, base_url=server.url))
    assert again.exit_code == 75 and len(posts(server.record)) == 4
    # `status` says when the caps reset: the next local midnight of a capped number.
    status = campaign_status(config)
    assert status is not None and status.counts == {"sent": 4, "deferred": 3}
    assert status.caps_reset is not None
    now = utc_now()  # the dialer's clock: conftest.py sets it to 20:00 UTC today
    assert now < status.caps_reset <= now + timedelta(days=1)


def test_calling_hours_in_each_leads_own_zone(tmp_path: Path, sandbox: Any) -> None:
    server = sandbox()
    write_leads(
        tmp_path / "leads.csv",
        [
            {"Name": "NY", "Phone": "(212) 555-0199", "Timezone": ""},
            {"Name": "LA", "Phone": "(415) 555-0132", "Timezone": ""},
            {"Name": "Paris", "Phone": "(312) 555-0143", "Timezone": "Europe/Paris"},
            {"Name": "Alaska", "Phone": "(907) 555-0100", "Timezone": ""},  # Adak + Anchorage
        ],
    )
    config = campaign(tmp_path, 'mode = "call"\n[call]\nmodel_id = "m"\n')  # default hours
    # Monday 13:00 UTC: 08:00 in New York, 05:00 in Los Angeles, 14:00 in Paris.
    monday = datetime(2026, 11, 23, 13, 0, tzinfo=UTC)
    result = run_campaign(config, RunOptions(api_key=KEY, base_url=server.url, clock=lambda: monday))
    rows = {r["Name"]: r for r in report_rows(result)}
    assert {k: r["dialer_status"] for k, r in rows.items()} == {
        "NY": "sent",
        "LA": "deferred",
        "Paris": "sent",
        "Alaska": "deferred",
    }
    assert rows["LA"]["dialer_error"].endswith("due 2026-11-23T16:00Z")
    # 08:00 in Anchorage is 07:00 in Adak: the window must be open in both.
    assert rows["Alaska"]["dialer_error"].endswith("due 2026-11-23T18:00Z")
    assert result.exit_code == 75
    assert result.next_due == datetime(2026, 11, 23, 16, 0, tzinfo=UTC)
    # Later that day a cron run dials them, and only them.
    evening = datetime(2026, 11, 23, 19, 0, tzinfo=UTC)
    later = run_campaign(config, RunOptions(api_key=KEY, base_url=server.url, clock=lambda: evening))
    assert later.exit_code == 0
    assert sorted(r["body"]["name"] for r in posts(server.record)) == ["Alaska", "LA", "NY", "Paris"]


def test_a_number_whose_zones_never_share_an_open_hour_is_invalid(tmp_path: Path, sandbox: Any) -> None:
    server = sandbox()
    write_leads(
        tmp_path / "leads.csv",
        [
            {"Name": "NY", "Phone": "(212) 555-0199"},
            # 41 zones, Guam to Pago Pago (phonenumbers lists 42 names: America/Lower_Princes
            # is a link to America/Puerto_Rico, one zone under its canonical name)
            {"Name": "Tollfree", "Phone": "(800) 555-0100"},
        ],
    )
    config = campaign(
        tmp_path, 'mode = "call"\n[call]\nmodel_id = "m"\n[hours]\nstart = "09:00"\nend = "17:00"\n'
    )
    monday = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)
    result = run_campaign(config, RunOptions(api_key=KEY, base_url=server.url, clock=lambda: monday))
    rows = {r["Name"]: r for r in report_rows(result)}
    assert rows["NY"]["dialer_status"] == "sent"
    # A clear outcome, not a row deferred forever (and a cron job exiting 75 forever).
    assert rows["Tollfree"]["dialer_status"] == "invalid"
    assert rows["Tollfree"]["dialer_error"].startswith(
        "never inside calling hours in all of its 41 time zones"
    )
    assert result.exit_code == 0


def test_sunday_is_closed_by_default(tmp_path: Path, sandbox: Any) -> None:
    server = sandbox()
    write_leads(tmp_path / "leads.csv", numbered_leads(2))
    config = campaign(tmp_path, 'mode = "call"\n[call]\nmodel_id = "m"\n')
    sunday_noon_ny = datetime(2026, 11, 22, 17, 0, tzinfo=UTC)
    result = run_campaign(config, RunOptions(api_key=KEY, base_url=server.url, clock=lambda: sunday_noon_ny))
    assert result.counts == {"deferred": 2} and posts(server.record) == []
    assert result.next_due == datetime(2026, 11, 23, 13, 0, tzinfo=UTC)


def test_limit_dials_at_most_n_rows_in_file_order(tmp_path: Path, sandbox: Any) -> None:
    server = sandbox()
    write_leads(tmp_path / "leads.csv", numbered_leads(5))
    config = campaign(tmp_path, f'mode = "call"\n[call]\nmodel_id = "m"\n{ALL_DAY}')
    result = run_campaign(config, RunOptions(api_key=KEY, base_url=server.url, limit=2))
    assert result.exit_code == 75
    assert [r["dialer_status"] for r in report_rows(result)] == ["sent"] * 2 + ["pending"] * 3
    assert [r["body"]["name"] for r in posts(server.record)] == ["Lead 0", "Lead 1"]


def test_a_number_added_to_the_dnc_list_after_the_import_is_never_dialed(
    tmp_path: Path, sandbox: Any
) -> None:
    server = sandbox()
    write_leads(
        tmp_path / "leads.csv",
        [
            {"Name": "NY", "Phone": "(212) 555-0199"},
            {"Name": "LA", "Phone": "(415) 555-0132"},
        ],
    )
    (tmp_path / "dnc.csv").write_text("phone\n")
    config = campaign(tmp_path, 'mode = "call"\nsuppress = ["dnc.csv"]\n[call]\nmodel_id = "m"\n')
    morning = datetime(2026, 11, 23, 13, 0, tzinfo=UTC)  # 08:00 New York, 05:00 Los Angeles
    first = run_campaign(config, RunOptions(api_key=KEY, base_url=server.url, clock=lambda: morning))
    assert first.counts == {"sent": 1, "deferred": 1}
    (tmp_path / "dnc.csv").write_text("phone\n415.555.0132\n")
    evening = datetime(2026, 11, 23, 19, 0, tzinfo=UTC)
    later = run_campaign(config, RunOptions(api_key=KEY, base_url=server.url, clock=lambda: evening))
    rows = {r["Name"]: r for r in report_rows(later)}
    assert rows["LA"]["dialer_status"] == "suppressed"
    assert rows["LA"]["dialer_error"] == "on the do-not-call list dnc.csv"
    assert [r["body"]["name"] for r in posts(server.record)] == ["NY"]


def test_hours_are_checked_again_when_the_send_slot_comes(tmp_path: Path, sandbox: Any) -> None:
    server = sandbox()
    write_leads(tmp_path / "leads.csv", [{"Name": "NY", "Phone": "(212) 555-0199"}])
    config = campaign(tmp_path, 'mode = "call"\n[call]\nmodel_id = "m"\n')
    # Open when the row is queued and picked up; 21:00 in New York by the time its slot comes.
    moments = iter([datetime(2026, 11, 24, 1, 59, tzinfo=UTC)] * 2)
    closing = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)
    result = run_campaign(
        config, RunOptions(api_key=KEY, base_url=server.url, clock=lambda: next(moments, closing))
    )
    assert posts(server.record) == []
    assert result.counts == {"deferred": 1}


def test_limit_also_caps_redials_of_rows_a_look_up_found_unplaced(tmp_path: Path, sandbox: Any) -> None:
    import sqlite3

    server = sandbox()
    write_leads(tmp_path / "leads.csv", numbered_leads(3))
    config = campaign(
        tmp_path, f'mode = "call"\n[call]\nmodel_id = "m"\n[limits]\nsettle_after_seconds = 0\n{ALL_DAY}'
    )
    run_campaign(config, RunOptions(api_key=KEY, base_url=server.url, limit=0))
    # As if an earlier run had died with its request for the first row unanswered.
    with sqlite3.connect(config.journal_path) as db:
        db.execute(
            "UPDATE leads SET status = 'unknown', intent_at = ? WHERE position = 2", (time.time() - 100,)
        )
    result = run_campaign(config, RunOptions(api_key=KEY, base_url=server.url, limit=0))
    assert posts(server.record) == []  # looked up, not placed, and --limit 0 dials nothing
    assert result.counts == {"pending": 3}
    again = run_campaign(config, RunOptions(api_key=KEY, base_url=server.url, limit=1))
    assert [r["body"]["name"] for r in posts(server.record)] == ["Lead 0"]
    assert again.counts == {"sent": 1, "pending": 2}
