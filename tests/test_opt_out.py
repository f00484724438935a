"""Opt-out: a call that ends with the opt-out variable yes puts the number on the list, its
redial is cancelled, and any campaign naming the list in `suppress` never calls it.

The sandbox's `--collected` decides (seeded, `fate()` predicts) which completed calls say
yes; its record is the witness of what was called.
"""

from __future__ import annotations

import csv
import multiprocessing
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from dialer import optout
from dialer.config import load_campaign
from dialer.errors import CampaignError
from dialer.run import RunOptions, run_campaign
from dialer.sandbox import SandboxOptions, fate, read_record
from dialer.suppress import suppression_sources
from tests.conftest import MakeSandbox
from tests.test_redial import START, write_campaign

KEY = "test-key"
PHONES = [f"+1415555{i:04d}" for i in range(12)]


def posts_per_phone(record: Path) -> Counter[str]:
    return Counter(
        r["body"]["phone"]
        for r in read_record(record)
        if r["method"] == "POST" and r["path"] == "/v2/calls" and r["status"] == 200
    )


def with_opt_out(campaign: Path, extra: str = "") -> Path:
    text = campaign.read_text().replace(
        "[outcomes]\n", '[outcomes]\nopt_out_variable = "opt_out"\nopt_out_list = "../opt-outs.csv"\n'
    )
    campaign.write_text(extra + text)
    return campaign


def report(folder: Path) -> dict[str, dict[str, str]]:
    with (folder / "out" / "report.csv").open(encoding="utf-8-sig", newline="") as handle:
        return {r["Phone"]: r for r in csv.DictReader(handle)}


def test_an_opt_out_is_listed_cancels_the_redial_and_ends_every_call_from_a_campaign_naming_the_list(
    tmp_path: Path, sandbox: MakeSandbox
) -> None:
    options: dict[str, Any] = dict(api_key=KEY, seed=3, collected=["opt_out=yes|no|TRUE"])
    api = sandbox(**options)
    assert api.record is not None
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    # Campaign A calls completed calls again after 90 s (a follow-up), unless they opted out.
    a = with_opt_out(write_campaign(first, 12, url=api.url, redial='completed = "90s"\nmax_calls = 2'))
    listed = tmp_path / "opt-outs.csv"
    said = {p: (fate(3, p, 1, SandboxOptions(**options)).collected or {})["opt_out"] for p in PHONES}
    out = {p for p, v in said.items() if v in ("yes", "TRUE")}
    assert out and out != set(PHONES)  # the seed gives both

    run = run_campaign(load_campaign(a), RunOptions(api_key=KEY, base_url=api.url, clock=lambda: START))
    assert run.stats.opt_outs == len(out)
    lines = listed.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "phone,campaign,call_id,at"
    assert sorted(line.split(",")[0] for line in lines[1:]) == sorted(out)
    assert {line.split(",")[1] for line in lines[1:]} == {"redial"}
    rows = report(first)
    for phone in PHONES:
        if phone in out:
            assert rows[phone]["dialer_status"] == "suppressed", rows[phone]
            assert rows[phone]["dialer_error"].startswith("opted out on call "), rows[phone]
            assert "redial" in rows[phone]["dialer_error"] and "cancelled" in rows[phone]["dialer_error"]
        else:
            assert rows[phone]["dialer_status"] == "deferred", rows[phone]

    later = START.replace(minute=30)
    run_campaign(load_campaign(a), RunOptions(api_key=KEY, base_url=api.url, clock=lambda: later))
    placed = posts_per_phone(api.record)
    assert placed == {p: 1 if p in out else 2 for p in PHONES}  # opted out: never again

    # Campaign B, same people, names A's list in `suppress`: it never calls those who opted out.
    b = write_campaign(second, 12, url=api.url, redial="")
    b.write_text(
        'suppress = ["../opt-outs.csv"]\n' + b.read_text().replace('name = "redial"', 'name = "other"')
    )
    run_campaign(load_campaign(b), RunOptions(api_key=KEY, base_url=api.url, clock=lambda: later))
    # Those who said yes on their second call (A's follow-up) are on the list too.
    again = {
        p
        for p in PHONES
        if p not in out and (fate(3, p, 2, SandboxOptions(**options)).collected or {})["opt_out"] != "no"
    }
    assert report(first).keys() >= again and all(report(first)[p]["dialer_status"] == "sent" for p in again)
    assert all(report(first)[p]["dialer_error"].startswith("opted out on call ") for p in again)
    placed = posts_per_phone(api.record)
    assert placed == {p: 1 if p in out else 2 if p in again else 3 for p in PHONES}
    assert all(report(second)[p]["dialer_status"] == "suppressed" for p in out | again)


def test_opt_out_variable_and_list_go_together(tmp_path: Path) -> None:
    campaign = write_campaign(tmp_path, 1, url="http://127.0.0.1:9", redial="")
    campaign.write_text(campaign.read_text().replace("[outcomes]\n", '[outcomes]\nopt_out_variable = "x"\n'))
    with pytest.raises(CampaignError, match="opt_out_variable and opt_out_list go together"):
        load_campaign(campaign)


@pytest.mark.parametrize(
    ("value", "out"), [("yes", True), (" TRUE ", True), ("1", True), ("no", False), ("", False)]
)
def test_what_counts_as_an_opt_out(value: str, out: bool) -> None:
    assert optout.opted_out({"opt_out": value}, "opt_out") is out
    assert optout.opted_out({}, "opt_out") is False


def _append_many(path: str, who: str, n: int) -> None:
    for i in range(n):
        optout.append(
            Path(path), f"+141555{4 + int(who)}{i:04d}", f"campaign {who}, quoted", f"call-{who}-{i}", 0.0
        )


def test_two_campaigns_appending_at_once_lose_no_line(tmp_path: Path) -> None:
    listed = tmp_path / "opt-outs.csv"
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_append_many, args=(str(listed), who, 400)) for who in ("1", "2")]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(60)
        assert writer.exitcode == 0
    with listed.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["phone", "campaign", "call_id", "at"]
    assert len(rows) == 801 and all(len(r) == 4 for r in rows[1:])
    assert len({r[2] for r in rows[1:]}) == 800
    # The list, header and all, is read as a do-not-call list by any campaign.
    campaign = write_campaign(tmp_path, 1, url="http://127.0.0.1:9", redial="")
    campaign.write_text('suppress = ["opt-outs.csv"]\n' + campaign.read_text())
    numbers = suppression_sources(load_campaign(campaign))
    assert "+14155550007" in numbers and "+14155560399" in numbers and len(numbers) == 800
