"""Campaign-file mistakes as a user makes them: one exact line naming the key, exit 2, nothing sent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from dialer import cli
from tests.conftest import read_record

KEY = "sk-test-SECRET-123456"
GOOD_CALL = '[call]\nmodel_id = "model-1"\n'


def campaign_file(
    folder: Path, base_url: str, top: str = "", tables: str = GOOD_CALL, mode: str = "call"
) -> Path:
    (folder / "leads.csv").write_text("Name,Phone\nAnn Lee,+14155550123\n", encoding="utf-8")
    path = folder / "campaign.toml"
    path.write_text(
        f'name = "t"\nmode = "{mode}"\nleads = "leads.csv"\n{top}\n'
        f'[api]\nbase_url = "{base_url}"\n{tables}'
        '[numbers]\npool = ["+14155550100"]\nstrategy = "round_robin"\n'
        '[hours]\nstart = "00:00"\nend = "24:00"\n'
        'days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]\n',
        encoding="utf-8",
    )
    return path


CASES: dict[str, tuple[dict[str, str], str]] = {
    "rate-inf": (
        {"tables": GOOD_CALL + "[limits]\nrate_per_second = inf\n"},
        "[limits] rate_per_second: input should be a finite number",
    ),
    "rate-nan": (
        {"tables": GOOD_CALL + "[limits]\nrate_per_second = nan\n"},
        "[limits] rate_per_second: input should be a finite number",
    ),
    "name-climbs-out": (
        {},  # the name is set by _write_case
        "name: '../../x' cannot be a file name: use letters, digits, spaces, - or _ "
        "(no / or \\, no control characters)",
    ),
    "name-with-nul": (
        {},
        "name: 'a\\x00b' cannot be a file name: use letters, digits, spaces, - or _ "
        "(no / or \\, no control characters)",
    ),
    "misspelt-model-id": (
        {"tables": '[call]\nmodle_id = "model-1"\n'},
        "[call] modle_id: is not a known key; did you mean model_id? (model_id is missing)",
    ),
    "bad-strategy": (
        {},
        "[numbers] strategy: input should be 'local', 'round_robin' or 'least_used'",
    ),
    "chat-table-in-a-call-campaign": (
        {"tables": GOOD_CALL + '[chat]\nagent_id = "a-1"\nchannel = "sms"\n'},
        'campaign: a [chat] table is for mode = "chat" but mode = "call": remove [chat] or change mode',
    ),
    "call-table-in-a-chat-campaign": (
        {"mode": "chat", "tables": GOOD_CALL + '[chat]\nagent_id = "a-1"\nchannel = "sms"\n'},
        'campaign: a [call] table is for mode = "call" but mode = "chat": remove [call] or change mode',
    ),
    "region-uk": ({"top": 'default_region = "UK"'}, "default_region: 'UK' is not a region code; use \"GB\""),
    "region-xx": (
        {"top": 'default_region = "XX"'},
        'default_region: \'XX\' is not a region code phone numbers know; use two letters like "US" or "GB"',
    ),
}


def _write_case(folder: Path, name: str, base_url: str) -> Path:
    settings, _ = CASES[name]
    path = campaign_file(folder, base_url, **settings)
    text = path.read_text(encoding="utf-8")
    if name == "name-climbs-out":
        text = text.replace('name = "t"', 'name = "../../x"')
    elif name == "name-with-nul":
        text = text.replace('name = "t"', 'name = "a\\u0000b"')
    elif name == "bad-strategy":
        text = text.replace('strategy = "round_robin"', 'strategy = "nearest"')
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("command", ["run", "validate"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_a_campaign_mistake_is_one_line_naming_the_key(
    tmp_path: Path, sandbox: Any, name: str, command: str
) -> None:
    server = sandbox(api_key=KEY)
    path = _write_case(tmp_path, name, server.url)
    result = CliRunner(env={"SYNTHFLOW_API_KEY": KEY}).invoke(cli.main, [command, str(path)])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr == f"dialer: {path}: {CASES[name][1]}\n"
    assert not server.record.exists() or read_record(server.record) == []
    assert not (tmp_path / "out").exists() and not (tmp_path.parent / "x.sqlite").exists()


def test_the_good_campaign_of_these_cases_is_accepted(tmp_path: Path, sandbox: Any) -> None:
    # The cases differ from a campaign that works by their mistake only.
    server = sandbox(api_key=KEY)
    result = CliRunner().invoke(cli.main, ["validate", str(campaign_file(tmp_path, server.url))])
    assert result.exit_code == 0, result.output
