"""Time zones as people and numbers give them: canonical names, the region's own zones, abbreviations."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dialer.columns import resolve_columns
from dialer.config import Call, Campaign, Hours
from dialer.hours import CallingHours
from dialer.load import open_leads
from dialer.mapping import map_leads
from dialer.phones import normalize_phone
from dialer.zones import canonical, lived_in, zones_named

EVERY_DAY = Hours(start="08:00", end="21:00", days=["mon", "tue", "wed", "thu", "fri", "sat", "sun"])


def test_an_australian_mobile_lives_in_australia_not_on_cocos_or_christmas_island() -> None:
    e164, zones, error = normalize_phone("0412 345 678", "AU")
    assert (e164, error) == ("+61412345678", "")
    assert not [zone for zone in zones if not zone.startswith("Australia/")], zones
    assert {"Australia/Perth", "Australia/Sydney"} <= set(zones)
    # Monday 2 December 2024: the window opens at 08:00 in Perth (00:00 UTC, 11:00 in
    # Sydney), not at 08:00 on the Cocos Islands (01:30 UTC, 12:30 in Sydney).
    sunday_evening = datetime(2024, 12, 1, 20, 0, tzinfo=UTC)
    assert CallingHours(EVERY_DAY).next_open(zones, sunday_evening) == datetime(2024, 12, 2, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "region", "zones"),
    [
        pytest.param("+91 98765 43210", "US", ("Asia/Kolkata",), id="india-canonical-not-calcutta"),
        pytest.param("+7 916 123 4567", "US", None, id="russian-mobile-not-kazakhstan"),
        pytest.param("(876) 555-0100", "US", ("America/Jamaica",), id="jamaican-mobile-not-all-of-nanp"),
        pytest.param("+1 212 555 0100", "US", ("America/New_York",), id="geographic-unchanged"),
    ],
)
def test_inferred_zones_are_canonical_and_of_the_numbers_region(
    raw: str, region: str, zones: tuple[str, ...] | None
) -> None:
    _, found, error = normalize_phone(raw, region)
    assert error == ""
    if zones is not None:
        assert found == zones
    else:
        assert found and "Asia/Almaty" not in found and "Europe/Moscow" in found, found
    assert all(canonical(zone) == zone for zone in found)


def test_canonical_follows_links_and_keeps_zones() -> None:
    assert canonical("Asia/Calcutta") == "Asia/Kolkata"
    assert canonical("US/Eastern") == "America/New_York"
    assert canonical("Europe/London") == "Europe/London"
    # A region sharing no zone with the list: the list is kept, never emptied.
    assert lived_in(("Asia/Calcutta",), "FR") == ("Asia/Kolkata",)


@pytest.mark.parametrize(
    ("text", "zones"),
    [
        ("EST", ("America/New_York",)),
        ("edt", ("America/New_York",)),
        ("CST", ("America/Chicago",)),
        ("PST", ("America/Los_Angeles",)),
        ("PDT", ("America/Los_Angeles",)),
        ("MST", ("America/Denver", "America/Phoenix")),  # Denver, or Arizona without DST
        ("HST", ("Pacific/Honolulu",)),
        (" asia/calcutta ", ("Asia/Kolkata",)),
        ("EST5EDT", ("EST5EDT",)),  # a zone of its own, with daylight saving
        ("EST5", None),
        ("Mars/Olympus", None),
    ],
)
def test_zones_named_treats_abbreviations_alike(text: str, zones: tuple[str, ...] | None) -> None:
    assert zones_named(text) == zones


def test_a_lead_marked_est_is_closed_at_2130_new_york_time_in_july(tmp_path: Path) -> None:
    leads = tmp_path / "leads.csv"
    with leads.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(
            [
                ["Name", "Phone", "Timezone"],
                ["Ann", "+1 212 555 0100", "EST"],
                ["Bob", "+1 312 555 0100", "CST"],
            ]
        )
    campaign = Campaign(path=tmp_path / "c.toml", name="t", mode="call", leads=leads, call=Call(model_id="m"))
    opened = open_leads(leads)
    ann, bob = map_leads(campaign, opened, resolve_columns(campaign, opened.headers))
    assert (ann.status, ann.timezones, bob.status, bob.timezones) == (
        "pending",
        ("America/New_York",),
        "pending",
        ("America/Chicago",),
    )
    hours = CallingHours(EVERY_DAY)
    evening = datetime(2024, 7, 2, 1, 30, tzinfo=UTC)  # 21:30 EDT, 20:30 CDT
    assert not hours.is_open(ann.timezones, evening)
    assert hours.is_open(bob.timezones, evening)
