"""Calling hours, always at an injected `now`: never the real time of day."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from dialer.config import DAYS, Hours, load_campaign
from dialer.errors import CampaignError
from dialer.hours import CallingHours
from dialer.law import LawRules, rules_for

NY = ("America/New_York",)
LA = ("America/Los_Angeles",)


def at(zone: str, y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> datetime:
    """A local wall-clock time in `zone`, as an aware datetime."""
    return datetime(y, mo, d, h, mi, s, tzinfo=ZoneInfo(zone))


def utc(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=UTC)


@pytest.fixture
def default() -> CallingHours:
    return CallingHours(Hours())


# 2024-06-03 is a Monday, 2024-06-09 a Sunday.
@pytest.mark.parametrize(
    ("local", "expected"),
    [
        pytest.param((2024, 6, 3, 7, 59), False, id="before-start"),
        pytest.param((2024, 6, 3, 8, 0), True, id="at-start"),
        pytest.param((2024, 6, 3, 20, 59, 59), True, id="last-second"),
        pytest.param((2024, 6, 3, 21, 0), False, id="at-end-closed"),
        pytest.param((2024, 6, 8, 12, 0), True, id="saturday"),
        pytest.param((2024, 6, 9, 12, 0), False, id="sunday-closed-by-default"),
    ],
)
def test_default_window(default: CallingHours, local: tuple[int, ...], expected: bool) -> None:
    now = at("America/New_York", *local)
    assert default.is_open(NY, now) is expected
    # The answer depends on the lead's zone, not on the zone `now` is expressed in.
    assert default.is_open(NY, now.astimezone(UTC)) is expected


def test_same_instant_differs_by_zone(default: CallingHours) -> None:
    now = utc(2024, 6, 3, 13, 0)  # 09:00 in New York, 06:00 in Los Angeles
    assert default.is_open(NY, now)
    assert not default.is_open(LA, now)


def test_zone_ahead_of_utc(default: CallingHours) -> None:
    # 13:00 UTC is 22:00 in Tokyo: past 21:00.
    assert not default.is_open(("Asia/Tokyo",), utc(2024, 6, 3, 13, 0))
    assert default.is_open(("Asia/Tokyo",), utc(2024, 6, 3, 11, 59))


def test_multi_zone_needs_every_zone_open(default: CallingHours) -> None:
    both = ("America/New_York", "America/Los_Angeles")
    assert not default.is_open(both, at("America/New_York", 2024, 6, 3, 10, 59))
    assert default.is_open(both, at("America/New_York", 2024, 6, 3, 11, 0))
    assert default.is_open(both, at("America/New_York", 2024, 6, 3, 20, 59))
    assert not default.is_open(both, at("America/New_York", 2024, 6, 3, 21, 0))


def test_empty_zones_and_naive_now_are_errors(default: CallingHours) -> None:
    with pytest.raises(ValueError):
        default.is_open((), utc(2024, 6, 3, 12))
    with pytest.raises(ValueError):
        default.is_open(NY, datetime(2024, 6, 3, 12))


def test_end_of_day_24_00() -> None:
    hours = CallingHours(Hours(start="20:00", end="24:00", days=["mon"]))
    assert hours.is_open(NY, at("America/New_York", 2024, 6, 3, 23, 59, 59))
    assert not hours.is_open(NY, at("America/New_York", 2024, 6, 4, 0, 0))  # Tuesday
    assert not hours.is_open(NY, at("America/New_York", 2024, 6, 3, 19, 59))


def test_custom_days() -> None:
    hours = CallingHours(Hours(days=["sun"]))
    assert hours.is_open(NY, at("America/New_York", 2024, 6, 9, 12))
    assert not hours.is_open(NY, at("America/New_York", 2024, 6, 3, 12))


def test_cache_does_not_leak_between_minutes(default: CallingHours) -> None:
    # Same zones asked at alternating minutes either side of the opening.
    before = at("America/New_York", 2024, 6, 3, 7, 59, 30)
    after = at("America/New_York", 2024, 6, 3, 8, 0, 0)
    for _ in range(3):
        assert not default.is_open(NY, before)
        assert default.is_open(NY, after)


# next_open


def test_next_open_now_when_open(default: CallingHours) -> None:
    now = at("America/New_York", 2024, 6, 3, 12, 30, 15)
    result = default.next_open(NY, now)
    assert result == now
    assert result is not None and result.tzinfo is UTC


def test_next_open_later_today(default: CallingHours) -> None:
    now = at("America/New_York", 2024, 6, 3, 6, 12, 40)
    assert default.next_open(NY, now) == at("America/New_York", 2024, 6, 3, 8, 0)


def test_next_open_skips_sunday(default: CallingHours) -> None:
    now = at("America/New_York", 2024, 6, 8, 21, 0)  # Saturday 21:00
    assert default.next_open(NY, now) == at("America/New_York", 2024, 6, 10, 8, 0)


def test_next_open_several_zones_partial_overlap(default: CallingHours) -> None:
    both = ("America/New_York", "America/Los_Angeles")
    now = at("America/New_York", 2024, 6, 3, 9, 0)  # open in NY, 06:00 in LA
    expected = at("America/New_York", 2024, 6, 3, 11, 0)  # = 08:00 in LA
    assert default.next_open(both, now) == expected
    assert default.is_open(both, expected)
    assert not default.is_open(both, expected - timedelta(seconds=1))
    # Past the overlap on a Saturday: Monday 11:00 ET, not Sunday.
    late = at("America/New_York", 2024, 6, 8, 21, 30)
    assert default.next_open(both, late) == at("America/New_York", 2024, 6, 10, 11, 0)


def test_next_open_dst_spring_forward() -> None:
    # 2024-03-10: New York goes 01:59:59 EST -> 03:00:00 EDT (07:00 UTC).
    hours = CallingHours(Hours(start="02:30", end="10:00", days=["sun"]))
    now = at("America/New_York", 2024, 3, 10, 0, 0)
    # 02:30 does not exist that night; the window opens when the clock jumps to 03:00.
    assert hours.next_open(NY, now) == utc(2024, 3, 10, 7, 0)


def test_next_open_dst_fall_back_repeated_hour() -> None:
    # 2024-11-03: New York goes 01:59:59 EDT -> 01:00:00 EST (06:00 UTC); 01:00-02:00 twice.
    hours = CallingHours(Hours(start="01:30", end="01:45", days=["sun"]))
    first = utc(2024, 11, 3, 5, 30)  # 01:30 EDT
    second = utc(2024, 11, 3, 6, 30)  # 01:30 EST
    assert hours.next_open(NY, utc(2024, 11, 3, 0, 0)) == first
    assert hours.next_open(NY, utc(2024, 11, 3, 5, 50)) == second


def test_next_open_default_window_on_dst_day(default: CallingHours) -> None:
    # The spring-forward Sunday is closed; Monday opens at 08:00 EDT = 12:00 UTC, not 13:00.
    now = at("America/New_York", 2024, 3, 9, 22, 0)
    assert default.next_open(NY, now) == utc(2024, 3, 11, 12, 0)
    # Europe changes on a different date: London 08:00 BST on Monday 1 April = 07:00 UTC.
    london = ("Europe/London",)
    assert default.next_open(london, utc(2024, 3, 30, 21, 0)) == utc(2024, 4, 1, 7, 0)


def test_next_open_zones_across_dst_gap() -> None:
    # Between 2024-03-10 and 2024-03-31 New York is on EDT but London still on GMT:
    # the zones are 4 hours apart instead of 5.
    hours = CallingHours(Hours())
    pair = ("America/New_York", "Europe/London")
    now = utc(2024, 3, 18, 0, 0)  # Monday
    result = hours.next_open(pair, now)
    assert result == utc(2024, 3, 18, 12, 0)  # 08:00 EDT, 12:00 GMT
    later = hours.next_open(pair, utc(2024, 4, 1, 0, 0))
    assert later == utc(2024, 4, 1, 12, 0)  # 08:00 EDT, 13:00 BST


def test_next_open_with_no_overlap_is_none() -> None:
    # 12 hours apart in June (UTC-4 and UTC+8): a 2-hour window never coincides.
    hours = CallingHours(Hours(start="09:00", end="11:00"))
    far = ("America/New_York", "Asia/Shanghai")
    assert hours.next_open(far, utc(2024, 6, 3, 0, 0)) is None


def test_no_days_is_refused_by_the_campaign_file() -> None:
    with pytest.raises(ValueError, match="lists no day"):
        Hours(days=[])


def test_next_open_no_days_is_none() -> None:
    # The campaign file refuses this; the calendar maths still answers sensibly.
    hours = CallingHours(Hours.model_construct(start="08:00", end="21:00", days=[]))
    assert not hours.is_open(NY, utc(2024, 6, 3, 15))
    assert hours.next_open(NY, utc(2024, 6, 3, 15)) is None


def test_next_open_cached_within_minute_is_still_right(default: CallingHours) -> None:
    first = at("America/New_York", 2024, 6, 3, 7, 59, 0)
    second = at("America/New_York", 2024, 6, 3, 7, 59, 59)
    expected = at("America/New_York", 2024, 6, 3, 8, 0)
    assert default.next_open(NY, first) == expected
    assert default.next_open(NY, second) == expected


def test_next_open_matches_brute_force() -> None:
    """Minute by minute over a DST week, next_open agrees with scanning is_open."""
    hours = CallingHours(Hours(start="08:00", end="21:00", days=["mon", "wed", "sun"]))
    zones = ("America/New_York", "Europe/London", "America/Los_Angeles")
    scan = CallingHours(Hours(start="08:00", end="21:00", days=["mon", "wed", "sun"]))
    start = utc(2024, 3, 9, 0, 0)
    minutes = 9 * 24 * 60
    opens = [scan.is_open(zones, start + timedelta(minutes=m)) for m in range(minutes)]
    next_index: list[int | None] = [None] * minutes
    following: int | None = None
    for m in range(minutes - 1, -1, -1):
        if opens[m]:
            following = m
        next_index[m] = following
    for m in range(0, 4 * 24 * 60, 37):
        expected_m = next_index[m]
        assert expected_m is not None
        got = hours.next_open(zones, start + timedelta(minutes=m))
        assert got == start + timedelta(minutes=expected_m), m


def test_next_open_across_the_date_line() -> None:
    # Kiritimati (UTC+14) and Pago Pago (UTC-11) share one hour of a 09:00-11:00 window,
    # on different calendar days: Tuesday 10:00 and Monday 09:00.
    hours = CallingHours(Hours(start="09:00", end="11:00"))
    pair = ("Pacific/Kiritimati", "Pacific/Pago_Pago")
    assert hours.next_open(pair, utc(2024, 6, 3, 0, 0)) == utc(2024, 6, 3, 20, 0)
    # Saturday 10:00 in Kiritimati is Friday 09:00 in Pago Pago: open; the Sunday is not.
    assert hours.next_open(pair, utc(2024, 6, 7, 21, 0)) == utc(2024, 6, 10, 20, 0)


# The law's window for the lead, and [hours] skip_dates


MIAMI_ZONE = ("America/New_York",)
CHICAGO_ZONE = ("America/Chicago",)


def test_miami_closed_at_20_30_while_chicago_is_open(default: CallingHours) -> None:
    miami, chicago = rules_for("+13055550100"), rules_for("+13125550100")
    now = at("America/New_York", 2024, 6, 3, 20, 30)  # Monday 20:30 in Miami, 19:30 in Chicago
    assert not default.is_open(MIAMI_ZONE, now, miami)
    assert default.is_open(MIAMI_ZONE, now)  # the campaign alone would call
    assert default.is_open(CHICAGO_ZONE, now, chicago)
    # Chicago at 20:30 its own time: open (federal 21:00), Miami at 20:30: closed.
    assert default.is_open(CHICAGO_ZONE, at("America/Chicago", 2024, 6, 3, 20, 30), chicago)
    assert not default.is_open(MIAMI_ZONE, at("America/New_York", 2024, 6, 3, 20, 0), miami)
    assert default.is_open(MIAMI_ZONE, at("America/New_York", 2024, 6, 3, 19, 59, 59), miami)


def test_law_closed_now_next_open_is_the_next_morning(default: CallingHours) -> None:
    miami = rules_for("+13055550100")
    now = at("America/New_York", 2024, 6, 3, 20, 30)
    assert default.next_open(MIAMI_ZONE, now, miami) == at("America/New_York", 2024, 6, 4, 8, 0)
    # Without the law the campaign's own window is still open.
    assert default.next_open(MIAMI_ZONE, now) == now


def test_stricter_campaign_stays_stricter_in_florida() -> None:
    hours = CallingHours(Hours(start="10:00", end="19:00"))
    miami = rules_for("+13055550100")
    assert not hours.is_open(MIAMI_ZONE, at("America/New_York", 2024, 6, 3, 19, 0), miami)
    assert hours.is_open(MIAMI_ZONE, at("America/New_York", 2024, 6, 3, 18, 59), miami)
    assert not hours.is_open(MIAMI_ZONE, at("America/New_York", 2024, 6, 3, 9, 30), miami)
    # The campaign's Sunday ban holds though Florida allows Sundays.
    assert not hours.is_open(MIAMI_ZONE, at("America/New_York", 2024, 6, 9, 12), miami)
    assert hours.with_law(miami) is hours  # nothing to narrow


def test_stricter_law_wins_over_a_wide_campaign() -> None:
    hours = CallingHours(Hours(start="07:00", end="22:00", days=list(DAYS)))
    miami, chicago = rules_for("+13055550100"), rules_for("+13125550100")
    # The campaign's own 07:00-22:00 stands alone without a law ...
    assert hours.is_open(CHICAGO_ZONE, at("America/Chicago", 2024, 6, 3, 21, 30))
    # ... but the federal window applies to every US lead, Florida's to a Miami one.
    assert not hours.is_open(CHICAGO_ZONE, at("America/Chicago", 2024, 6, 3, 21, 30), chicago)
    assert not hours.is_open(CHICAGO_ZONE, at("America/Chicago", 2024, 6, 3, 7, 30), chicago)
    assert not hours.is_open(MIAMI_ZONE, at("America/New_York", 2024, 6, 3, 20, 30), miami)
    # Florida has no Sunday ban: open on a Sunday within 08:00-20:00.
    assert hours.is_open(MIAMI_ZONE, at("America/New_York", 2024, 6, 9, 12), miami)


def test_federal_only_keeps_todays_default_behaviour(default: CallingHours) -> None:
    chicago = rules_for("+13125550100")
    assert default.with_law(chicago) is default  # default hours are the federal window already
    for hour in range(24):
        now = at("America/Chicago", 2024, 6, 8, hour)  # a Saturday
        assert default.is_open(CHICAGO_ZONE, now, chicago) == default.is_open(CHICAGO_ZONE, now)


def test_sunday_ban_of_the_law_moves_next_open_to_monday() -> None:
    hours = CallingHours(Hours(days=list(DAYS)))
    alabama = rules_for("+12055550100")
    saturday_night = at("America/Chicago", 2024, 6, 8, 20, 0)
    assert hours.next_open(CHICAGO_ZONE, saturday_night, alabama) == at("America/Chicago", 2024, 6, 10, 8, 0)
    assert hours.next_open(CHICAGO_ZONE, saturday_night) == saturday_night


def test_skip_dates_are_whole_days_in_the_leads_zone() -> None:
    hours = CallingHours(Hours(skip_dates=["2026-12-25"], days=list(DAYS)))
    tokyo = ("Asia/Tokyo",)
    # 2026-12-25 12:00 UTC: Christmas noon in London, 21:00 in Tokyo (closed anyway),
    # 07:00 in New York (closed anyway), so test at hours open on ordinary days.
    assert not hours.is_open(("Europe/London",), at("Europe/London", 2026, 12, 25, 12))
    assert hours.is_open(("Europe/London",), at("Europe/London", 2026, 12, 24, 20, 59))
    assert hours.is_open(("Europe/London",), at("Europe/London", 2026, 12, 26, 8, 0))
    # One instant, two zones: 2026-12-25 23:30 UTC is the 26th 08:30 in Tokyo (open)
    # and the 25th 18:30 in New York (skipped).
    instant = utc(2026, 12, 25, 23, 30)
    assert hours.is_open(tokyo, instant)
    assert not hours.is_open(NY, instant)
    # 2026-12-24 23:30 UTC is the 25th 08:30 in Tokyo (skipped), the 24th 18:30 in New York.
    before = utc(2026, 12, 24, 23, 30)
    assert not hours.is_open(tokyo, before)
    assert hours.is_open(NY, before)


def test_next_open_skips_a_holiday() -> None:
    hours = CallingHours(Hours(skip_dates=["2026-12-25"]))  # a Friday; default Mon-Sat
    evening = at("America/New_York", 2026, 12, 24, 21, 0)
    assert hours.next_open(NY, evening) == at("America/New_York", 2026, 12, 26, 8, 0)
    # Without the skip date: Christmas morning.
    assert CallingHours(Hours()).next_open(NY, evening) == at("America/New_York", 2026, 12, 25, 8, 0)


def test_next_open_skips_a_long_run_of_holidays() -> None:
    # Ten days off in a row push the next window past the plain 8-day horizon.
    days = [f"2026-12-{d}" for d in range(21, 32)]
    hours = CallingHours(Hours(skip_dates=days))
    now = at("America/New_York", 2026, 12, 20, 12)  # a Sunday
    assert hours.next_open(NY, now) == at("America/New_York", 2027, 1, 1, 8, 0)


def test_skip_date_with_the_law_and_several_zones() -> None:
    hours = CallingHours(Hours(skip_dates=["2026-12-25"]))
    miami = rules_for("+13055550100")
    both = ("America/New_York", "America/Los_Angeles")
    # Thursday 24th, 20:00 in New York: Florida is closed; Friday the 25th is skipped;
    # Saturday 26th opens when both zones are inside 08:00-20:00: 11:00 in New York.
    now = at("America/New_York", 2026, 12, 24, 20, 0)
    assert hours.next_open(both, now, miami) == at("America/New_York", 2026, 12, 26, 11, 0)


def test_skip_dates_validated_at_load() -> None:
    skip: list[Any] = [date(2026, 12, 25), "2027-01-01"]  # TOML gives dates or strings
    assert Hours(skip_dates=skip).skip_date_set == {
        date(2026, 12, 25),
        date(2027, 1, 1),
    }
    for bad in ("2026-13-01", "25/12/2026", "2026-02-30", "tomorrow"):
        with pytest.raises(ValueError, match=f"'{bad}' is not a date like"):
            Hours(skip_dates=[bad])


def test_bad_skip_date_in_a_campaign_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        'name = "x"\nmode = "call"\nleads = "l.csv"\n[call]\nmodel_id = "m"\n'
        '[hours]\nskip_dates = ["2026-12-25", "2026-12-32"]\n'
    )
    with pytest.raises(CampaignError) as info:
        load_campaign(path)
    message = str(info.value)
    assert "\n" not in message
    assert message == f"{path}: [hours] skip_dates: '2026-12-32' is not a date like \"2026-12-25\""
    path.write_text(path.read_text().replace('["2026-12-25", "2026-12-32"]', "[2026-12-25, 2027-01-01]"))
    assert len(load_campaign(path).hours.skip_date_set) == 2
    path.write_text(path.read_text().replace("[2026-12-25, 2027-01-01]", "[2026-12-25T10:00:00]"))
    with pytest.raises(CampaignError, match="has a time of day"):
        load_campaign(path)


def test_hand_built_law_rules_are_each_applied(default: CallingHours) -> None:
    # LawRules built row after row (not the shared ones rules_for hands out): ids of
    # dropped objects get reused, and a stale cached window must never be applied.
    now = at("America/New_York", 2024, 6, 3, 12, 30)
    for index in range(3000):
        end = time(12, 0) if index % 2 else time(13, 0)
        law = LawRules(states=("XX",), week=((time(8), end),) * 7, cap_per_24h=None, citations=())
        assert default.is_open(NY, now, law) is (end == time(13, 0)), index
