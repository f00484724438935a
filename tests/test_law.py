"""The law table: every rule sourced, states found by column or area code, windows combined."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from datetime import time
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from dialer import law
from dialer.law import LawTableError, format_week, parse_state, parse_table, rules_for

EIGHT_TO_EIGHT = (time(8), time(20))
FEDERAL = (time(8), time(21))

MIAMI = "+13055550100"
MIAMI_OVERLAY = "+17865550100"
TULSA = "+19185550100"
OKLAHOMA_CITY = "+14055550100"
SEATTLE = "+12065550100"
CHICAGO = "+13125550100"
TOLL_FREE = "+18005550100"
TORONTO = "+14165550100"
LONDON = "+442079460000"


def raw(name: str) -> dict[str, Any]:
    text = resources.files("dialer").joinpath("data", name).read_text(encoding="utf-8")
    return tomllib.loads(text)


def test_table_loads_and_every_rule_cites_a_source() -> None:
    table = law.table()
    rules = [table.federal, *table.states.values()]
    assert {"FL", "OK", "WA"} <= set(table.states)
    for rule in rules:
        assert rule.sources, rule.code
        for source in rule.sources:
            assert source.cite.strip() and source.says.strip(), rule.code
            assert source.url.startswith("http"), rule.code
        assert rule.verified in ("statute", "secondary")
        assert len(rule.week) == 7


def test_federal_window_is_8_to_21_every_day() -> None:
    assert law.table().federal.week == (FEDERAL,) * 7
    assert law.table().federal.cap_per_24h is None


def test_a_rule_without_sources_is_refused() -> None:
    data = raw("calling_law.toml")
    data["states"]["FL"]["sources"] = []
    with pytest.raises(LawTableError, match="FL: cites no source"):
        parse_table(data, {})
    del data["states"]["FL"]["sources"]
    with pytest.raises(LawTableError, match="FL"):
        parse_table(data, {})


def test_a_bad_window_in_the_table_is_refused() -> None:
    data = raw("calling_law.toml")
    data["states"]["WA"]["window"] = "20:00-08:00"
    with pytest.raises(LawTableError, match="WA: .*ends before it starts"):
        parse_table(data, {})
    data = raw("calling_law.toml")
    data["states"]["XX"] = data["states"]["WA"]
    with pytest.raises(LawTableError, match="XX is not a US state"):
        parse_table(data, {})


def test_the_data_files_ship_in_the_wheel() -> None:
    # hatch packages = ["dialer"] takes every file under dialer/ that git does not ignore.
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == ["dialer"]
    data = Path(law.__file__).parent / "data"
    assert (data / "calling_law.toml").is_file() and (data / "area_codes.toml").is_file()


@pytest.mark.parametrize(
    ("phone", "state"),
    [(MIAMI, "FL"), (MIAMI_OVERLAY, "FL"), (TULSA, "OK"), (OKLAHOMA_CITY, "OK"), (SEATTLE, "WA")],
)
def test_strict_states_by_area_code_close_at_20(phone: str, state: str) -> None:
    rules = rules_for(phone)
    assert rules.states == (state,)
    assert rules.week == (EIGHT_TO_EIGHT,) * 7
    assert any(c.startswith(law.table().states[state].name) for c in rules.citations)


@pytest.mark.parametrize("column", ["FL", "fl", "Florida", " FLORIDA ", "OK", "oklahoma", "WA", "Washington"])
def test_state_column_names_the_state(column: str) -> None:
    rules = rules_for(CHICAGO, column)
    assert rules.week == (EIGHT_TO_EIGHT,) * 7
    assert len(rules.states) == 1


def test_caps_of_florida_and_oklahoma_not_washington() -> None:
    assert rules_for(MIAMI).cap_per_24h == 3
    assert rules_for(TULSA).cap_per_24h == 3
    assert rules_for(SEATTLE).cap_per_24h is None
    assert rules_for(CHICAGO).cap_per_24h is None


def test_a_number_outside_the_north_american_plan_gets_no_law_unless_its_column_names_a_state() -> None:
    assert rules_for(LONDON) is law.NO_LAW
    assert rules_for(LONDON, " ") is law.NO_LAW
    assert law.rules_for_area_code("", None) is law.NO_LAW
    assert rules_for(LONDON, "FL").states == ("FL",)
    assert law.rules_for_area_code("", "fl").states == ("FL",)
    assert law.rules_for_area_code("305", "").states == ("FL",)


def test_another_countrys_area_code_gets_no_us_law() -> None:
    """Canada and the Caribbean nations share +1, not US law (their own is not in the table)."""
    for phone in (TORONTO, "+16045550100", "+18765550100"):  # Toronto, Vancouver, Jamaica
        assert rules_for(phone) is law.NO_LAW
    assert rules_for(TORONTO, "FL").states == ("FL",)  # a state column still decides
    assert rules_for("+17875550100").citations[0].startswith("United States")  # Puerto Rico


def test_no_known_state_gets_the_federal_rule_only() -> None:
    for phone in (CHICAGO, TOLL_FREE, "+1305"):
        rules = rules_for(phone)
        assert rules.states == ()
        assert rules.week == (FEDERAL,) * 7
        assert rules.cap_per_24h is None
        assert rules.citations and rules.citations[0].startswith("United States")


def test_column_wins_over_area_code_except_where_the_law_presumes_by_area_code() -> None:
    # A Seattle number of a lead whose column says Illinois: Illinois (federal only) decides.
    assert rules_for(SEATTLE, "IL").states == ()
    # A Chicago number of a Washington lead: Washington's window.
    assert rules_for(CHICAGO, "WA").states == ("WA",)
    # Florida presumes a Florida area code reaches a person in Florida: it holds whatever the column.
    assert rules_for(MIAMI, "IL").states == ("FL",)
    assert rules_for(MIAMI, "IL").cap_per_24h == 3


def test_several_states_intersect() -> None:
    # A Miami number whose column says Rhode Island: both rules hold, the stricter each day.
    rules = rules_for(MIAMI, "RI")
    assert rules.states == ("FL", "RI")
    assert rules.week[0] == (time(9), time(18))
    assert rules.week[5] == (time(10), time(17))
    assert rules.week[6] is None
    assert rules.cap_per_24h == 3


def test_sunday_rules() -> None:
    alabama = rules_for("+12055550100")  # Birmingham
    assert alabama.states == ("AL",)
    assert alabama.week[:6] == (EIGHT_TO_EIGHT,) * 6 and alabama.week[6] is None
    texas = rules_for("+12145550100")  # Dallas
    assert texas.week[0] == (time(9), time(21)) and texas.week[6] == (time(12), time(21))


def test_unknown_state_column_is_an_error_blank_is_none() -> None:
    with pytest.raises(ValueError, match="'Narnia' is not a US state"):
        rules_for(CHICAGO, "Narnia")
    assert parse_state("") is None and parse_state("   ") is None and parse_state(None) is None
    assert rules_for(MIAMI, "").states == ("FL",)
    assert parse_state("district of columbia") == "DC" and parse_state("new  york") == "NY"


def test_area_code_table_maps_overlays_and_not_toll_free() -> None:
    codes = law.table().area_codes
    assert codes["305"] == codes["786"] == "FL"
    assert codes["212"] == codes["646"] == "NY"
    assert codes["202"] == "DC"
    for non_geographic in ("800", "888", "877", "500", "900"):
        assert non_geographic not in codes
    assert "416" not in codes  # Toronto: not a US state
    assert "787" not in codes  # Puerto Rico: no state rule in the table


def test_describe_and_format_week() -> None:
    assert rules_for(MIAMI).describe == "FL: Mon-Sun 08:00-20:00, at most 3 calls per 24 h"
    assert rules_for(CHICAGO).describe == "US: Mon-Sun 08:00-21:00"
    assert format_week(rules_for("+14015550100").week) == ("Mon-Fri 09:00-18:00, Sat 10:00-17:00, Sun closed")


def test_each_rule_says_how_it_applies() -> None:
    table = law.table()
    assert table.federal.applies_by == "every lead"
    assert "presumed by the law" in table.states["FL"].applies_by
    assert "presumed by the law" in table.states["OK"].applies_by
    assert table.states["WA"].applies_by == "the state column, else the area code"


def test_area_code_table_is_what_the_generator_makes() -> None:
    # The committed table matches libphonenumber's data as pinned in uv.lock; after an
    # upgrade this fails until tools/gen_area_codes.py is run again.
    root = Path(__file__).parents[1]
    made = subprocess.run(
        [sys.executable, str(root / "tools" / "gen_area_codes.py")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert made == (root / "dialer" / "data" / "area_codes.toml").read_text(encoding="utf-8")
