"""The caller-id pool: strategies, daily caps per local day, usage from the journal."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import phonenumbers
import pytest

from dialer.config import Numbers
from dialer.numbers import ForeignCallers, NumberPool, PoolExhausted

SF = "+14155550100"  # San Francisco, CA
NYC = "+12125550100"  # New York, NY
CHI = "+13125550100"  # Chicago, IL
UK = "+447400123456"  # UK mobile (+447700900xxx is Ofcom's drama range: invalid to phonenumbers)
POOL = [SF, NYC, CHI, UK]

PACIFIC = ("America/Los_Angeles",)
EASTERN = ("America/New_York",)
# Monday 2024-06-03, 16:00 UTC: the same date in every pool number's zone.
NOON = datetime(2024, 6, 3, 16, 0, tzinfo=UTC)


def pool(
    strategy: Literal["local", "round_robin", "least_used"] = "local",
    cap: int | None = None,
    numbers: list[str] = POOL,
    usage: dict[tuple[str, str], int] | None = None,
) -> NumberPool:
    config = Numbers(pool=numbers, strategy=strategy, daily_cap=cap)
    return NumberPool(config, usage or {})


def test_fixture_numbers_are_valid() -> None:
    for number in [*POOL, "+15105550123", "+17025550123", "+13055550123", "+442079460000"]:
        assert phonenumbers.is_valid_number(phonenumbers.parse(number)), number


@pytest.mark.parametrize(
    ("lead", "zones", "expected"),
    [
        pytest.param("+14155550199", PACIFIC, SF, id="same-area-code"),
        pytest.param("+12125550199", EASTERN, NYC, id="same-area-code-ny"),
        pytest.param("+15105550123", PACIFIC, SF, id="same-state-other-area-code"),
        pytest.param("+12135550123", PACIFIC, SF, id="same-state-la"),
        pytest.param("+16465550123", EASTERN, NYC, id="same-state-ny-overlay"),
        pytest.param("+17025550123", PACIFIC, SF, id="same-zone-nevada"),
        pytest.param("+13055550123", EASTERN, NYC, id="same-zone-florida"),
        pytest.param("+442079460000", ("Europe/London",), UK, id="same-country-uk"),
        pytest.param("+61291234567", ("Australia/Sydney",), SF, id="nothing-shared-least-used"),
    ],
)
def test_local_tiers(lead: str, zones: tuple[str, ...], expected: str) -> None:
    assert pool().choose(lead, zones, NOON) == expected


TORONTO = "+14165550100"  # Ontario: +1 like the US, another country


@pytest.mark.parametrize(
    ("numbers", "lead", "expected"),
    [
        # The UK number is least used, but a US lead gets a US number of any state.
        pytest.param([UK, NYC], "+14155550199", NYC, id="us-lead-us-number-over-uk"),
        pytest.param([UK, TORONTO, NYC], "+14155550199", NYC, id="us-lead-not-from-canada"),
        pytest.param([NYC, TORONTO], "+16135550123", TORONTO, id="canadian-lead-canadian-number"),
        pytest.param([SF, UK], "+442079460000", UK, id="uk-lead-uk-number"),
        # No number of the lead's country at all: then any number, least used.
        pytest.param([SF, UK], "+61291234567", SF, id="no-australian-number"),
    ],
)
def test_local_never_crosses_a_country(numbers: list[str], lead: str, expected: str) -> None:
    p = pool(numbers=numbers)
    assert p.choose(lead, phonenumbers_zones(lead), NOON) == expected
    foreign = ForeignCallers(Numbers(pool=numbers)).country(lead)
    assert foreign == ("AU" if lead.startswith("+61") else None)


def test_local_with_its_countrys_numbers_capped_waits_rather_than_cross() -> None:
    p = pool(cap=1, numbers=[SF, UK])
    assert p.choose("+14155550199", PACIFIC, NOON) == SF
    with pytest.raises(PoolExhausted) as capped:
        p.choose("+14155550199", PACIFIC, NOON)  # the UK number is free, but abroad
    assert capped.value.everywhere is False  # other leads may still be dialed
    assert p.choose("+442079460000", ("Europe/London",), NOON) == UK


def test_foreign_callers_only_for_local() -> None:
    assert ForeignCallers(Numbers(pool=[UK], strategy="round_robin")).country("+14155550199") is None
    assert ForeignCallers(Numbers(pool=[UK])).country("+14155550199") == "US"
    assert ForeignCallers(Numbers(pool=[UK, NYC])).country("+14155550199") is None
    assert ForeignCallers(Numbers(pool=[UK, TORONTO])).country("+14155550199") == "US"


def phonenumbers_zones(e164: str) -> tuple[str, ...]:
    from phonenumbers.timezone import time_zones_for_number

    return tuple(time_zones_for_number(phonenumbers.parse(e164)))


def test_local_zone_tier_uses_the_leads_zones() -> None:
    # A Nevada number with a lead whose row says it lives in Chicago time.
    assert pool().choose("+17025550123", ("America/Chicago",), NOON) == CHI


def test_local_ties_go_to_least_used_then_pool_order() -> None:
    numbers = [NYC, SF, "+14155550101", "+14155550102"]
    p = pool(numbers=numbers)
    picks = [p.choose("+14155550199", PACIFIC, NOON) for _ in range(6)]
    assert picks == [SF, "+14155550101", "+14155550102"] * 2


def test_local_falls_through_tiers_as_numbers_cap() -> None:
    p = pool(cap=1, numbers=[NYC, SF, "+15105550100", CHI])
    lead = "+14155550199"
    # Area code, then same state, then (no other Pacific number) least used overall.
    assert p.choose(lead, PACIFIC, NOON) == SF
    assert p.choose(lead, PACIFIC, NOON) == "+15105550100"
    assert p.choose(lead, PACIFIC, NOON) == NYC
    assert p.choose(lead, PACIFIC, NOON) == CHI
    with pytest.raises(PoolExhausted):
        p.choose(lead, PACIFIC, NOON)


def test_round_robin_cycles_in_pool_order() -> None:
    p = pool("round_robin")
    picks = [p.choose("+14155550199", PACIFIC, NOON) for _ in range(6)]
    assert picks == [SF, NYC, CHI, UK, SF, NYC]


def test_round_robin_skips_capped_numbers() -> None:
    p = pool("round_robin", cap=2, usage={(NYC, "2024-06-03"): 2})
    picks = [p.choose("+14155550199", PACIFIC, NOON) for _ in range(6)]
    assert picks == [SF, CHI, UK, SF, CHI, UK]
    with pytest.raises(PoolExhausted):
        p.choose("+14155550199", PACIFIC, NOON)


def test_least_used_counts_journal_usage() -> None:
    usage = {(SF, "2024-06-03"): 3, (NYC, "2024-06-03"): 1, (CHI, "2024-06-03"): 1}
    p = pool("least_used", usage=usage)
    picks = [p.choose("+14155550199", PACIFIC, NOON) for _ in range(5)]
    # UK (0) first; then NYC, CHI, UK each at 1 -> pool order; then all at 2 but SF at 3.
    assert picks == [UK, NYC, CHI, UK, NYC]
    assert p.usage_today(NOON) == {SF: 3, NYC: 3, CHI: 2, UK: 2}


def test_usage_from_other_days_does_not_count() -> None:
    p = pool("least_used", cap=1, usage={(SF, "2024-06-02"): 50})
    assert p.choose("+14155550199", PACIFIC, NOON) == SF


def test_every_number_capped_raises() -> None:
    usage = {(n, "2024-06-03"): 10 for n in POOL}
    strategies: list[Literal["local", "round_robin", "least_used"]] = [
        "local",
        "round_robin",
        "least_used",
    ]
    for strategy in strategies:
        p = pool(strategy, cap=10, usage=usage)
        with pytest.raises(PoolExhausted):
            p.choose("+14155550199", PACIFIC, NOON)


def test_cap_counts_per_number_local_day() -> None:
    # 06:30 UTC on 4 June is 23:30 on 3 June in San Francisco but 4 June in London.
    before = datetime(2024, 6, 4, 6, 30, tzinfo=UTC)
    after = datetime(2024, 6, 4, 7, 0, tzinfo=UTC)  # midnight in San Francisco
    # least_used: "local" would never give a US lead the London number (test_local_never_crosses...).
    p = pool("least_used", cap=1, numbers=[SF, UK], usage={(SF, "2024-06-03"): 1})
    assert p.day_of(SF, before) == "2024-06-03"
    assert p.day_of(UK, before) == "2024-06-04"
    assert p.choose("+14155550199", PACIFIC, before) == UK
    with pytest.raises(PoolExhausted):
        p.choose("+14155550199", PACIFIC, before)
    assert p.next_reset(before) == after
    # The San Francisco number's own day rolls over; London's has not.
    assert p.choose("+14155550199", PACIFIC, after) == SF
    assert p.usage_today(after) == {SF: 1, UK: 1}


def test_day_of_unknown_zone_is_utc() -> None:
    p = pool()
    late = datetime(2024, 6, 3, 23, 30, tzinfo=UTC)
    assert p.day_of("+999123", late) == "2024-06-03"
    assert p.day_of(NYC, late) == "2024-06-03"
    assert p.day_of(UK, late) == "2024-06-04"


def test_choose_counts_under_the_numbers_day() -> None:
    p = pool("round_robin", numbers=[UK])
    late = datetime(2024, 6, 3, 23, 30, tzinfo=UTC)  # already 4 June in London
    p.choose("+14155550199", PACIFIC, late)
    assert p.usage_today(late) == {UK: 1}
    assert p.usage_today(datetime(2024, 6, 3, 12, tzinfo=UTC)) == {UK: 0}


def test_empty_pool_returns_none() -> None:
    p = pool(numbers=[])
    assert p.choose("+14155550199", PACIFIC, NOON) is None
    assert p.usage_today(NOON) == {}


def test_no_cap_never_exhausts() -> None:
    p = pool("least_used", numbers=[SF], usage={(SF, "2024-06-03"): 10_000})
    assert p.choose("+14155550199", PACIFIC, NOON) == SF
    assert p.next_reset(NOON) is None


def test_journal_usage_is_not_mutated() -> None:
    usage = {(SF, "2024-06-03"): 1}
    p = NumberPool(Numbers(pool=[SF]), usage)
    p.choose("+14155550199", PACIFIC, NOON)
    assert usage == {(SF, "2024-06-03"): 1}


def test_naive_now_is_an_error() -> None:
    with pytest.raises(ValueError):
        pool().choose("+14155550199", PACIFIC, datetime(2024, 6, 3, 12))


def test_release_gives_a_use_back() -> None:
    p = pool("least_used", cap=1, numbers=[SF])
    assert p.choose("+14155550199", PACIFIC, NOON) == SF
    p.release(SF, NOON)
    assert p.choose("+14155550199", PACIFIC, NOON) == SF
    with pytest.raises(PoolExhausted):
        p.choose("+14155550199", PACIFIC, NOON)


def test_validate_says_when_local_must_call_from_another_country(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from dialer import cli

    (tmp_path / "leads.csv").write_text(
        "Name,Phone\nAnn,+14155550123\nBob,+12125550124\nCyd,+442079460000\nDee,12\n", encoding="utf-8"
    )
    campaign = tmp_path / "c.toml"
    campaign.write_text(
        'name = "t"\nmode = "call"\nleads = "leads.csv"\n[call]\nmodel_id = "m"\n'
        f'[numbers]\npool = ["{UK}"]\nstrategy = "local"\n',
        encoding="utf-8",
    )
    result = CliRunner().invoke(cli.main, ["validate", str(campaign)])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line.startswith("caller ids:")]
    assert lines == [
        'caller ids: no number of [numbers] pool is in US: strategy "local" will call its 2 rows '
        "from another country's number"
    ]
    # With a US number in the pool, nothing to say.
    campaign.write_text(campaign.read_text().replace(f'["{UK}"]', f'["{UK}", "{NYC}"]'), encoding="utf-8")
    result = CliRunner().invoke(cli.main, ["validate", str(campaign)])
    assert "caller ids:" not in result.stdout


def test_one_countrys_numbers_capped_leave_the_others_leads_dialed(tmp_path: Path, sandbox: Any) -> None:
    from dialer.config import load_campaign
    from dialer.run import RunOptions, run_campaign
    from tests.conftest import read_record

    server = sandbox(api_key="k")
    us = [f"+1415555{i:04d}" for i in range(8)]
    gb = ["+442079460000", "+442079460001"]
    (tmp_path / "leads.csv").write_text(
        "Name,Phone\n" + "".join(f"L{i},{phone}\n" for i, phone in enumerate(us + gb)), encoding="utf-8"
    )
    campaign = tmp_path / "c.toml"
    campaign.write_text(
        f'name = "t"\nmode = "call"\nleads = "leads.csv"\n[api]\nbase_url = "{server.url}"\n'
        f'[call]\nmodel_id = "m"\n[numbers]\npool = ["{NYC}", "{UK}"]\nstrategy = "local"\ndaily_cap = 2\n'
        "[limits]\nconcurrency = 1\nrate_per_second = 50\n"
        '[hours]\nstart = "00:00"\nend = "24:00"\ndays = ["mon","tue","wed","thu","fri","sat","sun"]\n',
        encoding="utf-8",
    )
    result = run_campaign(load_campaign(campaign), RunOptions(api_key="k", base_url=server.url))
    sent = {
        r["body"]["phone"]: r["body"]["from_phone_number"]
        for r in read_record(server.record)
        if r["method"] == "POST"
    }
    # The US leads past the cap wait for their country's number (never the London one);
    # the UK leads after them still go.
    assert sent == {us[0]: NYC, us[1]: NYC, gb[0]: UK, gb[1]: UK}
    assert result.exit_code == 75 and result.counts == {"sent": 4, "deferred": 6}
