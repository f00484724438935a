"""{Column} placeholders: any column fills them, in every text sent; one naming no column stops the load."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from dialer import cli
from dialer.config import load_campaign
from dialer.run import RunOptions, run_campaign, validate_campaign
from tests.conftest import read_record

KEY = "test-key"
ROOT = Path(__file__).resolve().parent.parent
ALL_DAY = '[hours]\nstart = "00:00"\nend = "24:00"\ndays = ["mon","tue","wed","thu","fri","sat","sun"]\n'
LEADS = [
    ["First Name", "Last Name", "Phone", "Email", "Company", "Role"],
    ["Maria", "Hernández", "(415) 555-0132", "maria@example.com", "Bayview Dental", "Office Manager"],
    ["James", "O'Connor", "+1 212 555 0199", "james@example.com", "Hudson Freight", "Ops Lead"],
]
CHAT = """mode = "chat"
[columns]
variables = ["Role"]
[chat]
agent_id = "2a886b7d-d52d-4f8b-8ea0-19d3edc79214"
channel = "whatsapp"
initial_message = "Hi {first name}, a word about {Company}?"
template = { content_sid = "HX1", variables = { "1" = "{First Name}", "2" = "{Company}", "3" = "{Email}" } }
[numbers]
pool = ["+14155550100"]
strategy = "round_robin"
"""
CALL = """mode = "call"
[columns]
variables = ["Role"]
[call]
model_id = "m-1"
prompt = "You help {First Name} {Last Name} of {Company}, a {Role}."
greeting = "Hello {First Name}, this is Sarah."
[numbers]
pool = ["+14155550100"]
strategy = "round_robin"
"""


def write(tmp_path: Path, settings: str, base_url: str = "http://127.0.0.1:9") -> Path:
    with (tmp_path / "leads.csv").open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(LEADS)
    path = tmp_path / "campaign.toml"
    path.write_text(
        f'name = "t"\nleads = "leads.csv"\n{settings}[api]\nbase_url = "{base_url}"\n{ALL_DAY}',
        encoding="utf-8",
    )
    return path


def posts(record: Path) -> list[dict[str, Any]]:
    return [r["body"] for r in read_record(record) if r["method"] == "POST"]


def test_chat_placeholders_are_filled_from_any_column(tmp_path: Path, sandbox: Any) -> None:
    server = sandbox(api_key=KEY)
    config = load_campaign(write(tmp_path, CHAT, server.url))
    assert run_campaign(config, RunOptions(api_key=KEY, base_url=server.url)).exit_code == 0
    bodies = posts(server.record)
    # "First Name" feeds the name, Company and Email are no custom variables: all fill anyway.
    assert [(b["initial_message"], b["template"]["variables"], b["custom_variables"]) for b in bodies] == [
        (
            "Hi Maria, a word about Bayview Dental?",
            {"1": "Maria", "2": "Bayview Dental", "3": "maria@example.com"},
            {"Role": "Office Manager", "name": "Maria Hernández"},
        ),
        (
            "Hi James, a word about Hudson Freight?",
            {"1": "James", "2": "Hudson Freight", "3": "james@example.com"},
            {"Role": "Ops Lead", "name": "James O'Connor"},
        ),
    ]


def test_call_prompt_and_greeting_are_filled_by_the_dialer(tmp_path: Path, sandbox: Any) -> None:
    server = sandbox(api_key=KEY)
    config = load_campaign(write(tmp_path, CALL, server.url))
    assert run_campaign(config, RunOptions(api_key=KEY, base_url=server.url)).exit_code == 0
    bodies = posts(server.record)
    assert [(b["prompt"], b["greeting"], b["custom_variables"]) for b in bodies] == [
        (
            "You help Maria Hernández of Bayview Dental, a Office Manager.",
            "Hello Maria, this is Sarah.",
            [{"key": "Role", "value": "Office Manager"}],
        ),
        (
            "You help James O'Connor of Hudson Freight, a Ops Lead.",
            "Hello James, this is Sarah.",
            [{"key": "Role", "value": "Ops Lead"}],
        ),
    ]


HEADERS = '"First Name", "Last Name", "Phone", "Email", "Company", "Role"'


def test_a_placeholder_naming_no_column_is_one_line_in_validate_and_run(tmp_path: Path, sandbox: Any) -> None:
    server = sandbox(api_key=KEY)
    cases = {
        "[call] prompt": CALL.replace("{Company}", "{Compnay}"),
        "[call] greeting": CALL.replace("Hello {First Name}", "Hello {Frist Name}"),
        "[chat] initial_message": CHAT.replace("{Company}?", "{Compnay}?"),
        "[chat] template.variables.3": CHAT.replace('"3" = "{Email}"', '"3" = "{E-mail}"'),
    }
    for where, settings in cases.items():
        path = write(tmp_path, settings, server.url)
        key = {"[call] prompt": "Compnay", "[call] greeting": "Frist Name"}.get(
            where, "E-mail" if "template" in where else "Compnay"
        )
        wanted = (
            f"dialer: {path.resolve()}: {where}: placeholder {{{key}}} names no column of leads.csv; "
            f"headers are: {HEADERS}\n"
        )
        for command in ("validate", "run"):
            result = CliRunner(env={"SYNTHFLOW_API_KEY": KEY}).invoke(cli.main, [command, str(path)])
            assert (result.exit_code, result.stdout, result.stderr) == (2, "", wanted), (where, command)
    assert not server.record.exists() or posts(server.record) == []


def test_a_placeholder_broken_after_the_import_still_stops_the_run(tmp_path: Path, sandbox: Any) -> None:
    # The leads file is unchanged, so the second run imports nothing: the check must not hide in the import.
    server = sandbox(api_key=KEY)
    path = write(
        tmp_path, CALL.replace("[numbers]", "[limits]\nrate_per_second = 100\n[numbers]"), server.url
    )
    first = run_campaign(load_campaign(path), RunOptions(api_key=KEY, base_url=server.url, limit=1))
    assert first.exit_code == 75 and len(posts(server.record)) == 1
    path.write_text(path.read_text(encoding="utf-8").replace("{Role}", "{Title}"), encoding="utf-8")
    result = CliRunner(env={"SYNTHFLOW_API_KEY": KEY}).invoke(cli.main, ["run", str(path)])
    assert result.exit_code == 2
    assert "placeholder {Title} names no column of leads.csv" in result.stderr
    assert len(posts(server.record)) == 1


def test_the_shipped_demo_chat_campaign_fills_its_template() -> None:
    found = validate_campaign(load_campaign(ROOT / "campaigns" / "demo-chat.toml"))
    assert found.examples
    for body in found.examples:
        assert not [v for v in body["template"]["variables"].values() if "{" in v], body["template"]
    assert found.examples[0]["template"]["variables"] == {"1": "Maria", "2": "Bayview Dental"}
