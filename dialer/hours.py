"""Calling hours: is it a polite time to call this lead, and if not, when will it be?"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from dialer.config import DAYS, Hours
from dialer.law import LawRules, Week, format_week, intersect

# How far ahead next_open looks: a weekly window recurs within 7 days, plus a
# day of slack for zones whose local date is ahead of or behind UTC.
HORIZON = timedelta(days=8)

_MISSING = object()


def _minute(now: datetime) -> int:
    """The UTC minute `now` falls in.

    Every boundary that matters is on a whole minute: window edges are HH:MM
    in local time, and every current UTC offset and DST change is a whole
    minute. So whether the window is open cannot change inside a minute, and
    results can be cached per (zones, minute) without being inexact.
    """
    return int(now.timestamp() // 60)


class CallingHours:
    """The [hours] window, evaluated in each lead's own time zone(s).

    A lead whose number spans several zones is callable only when the window is
    open in every one of them. All datetimes in and out are timezone-aware.

    The window is a week (one local-time window or none per weekday) less the
    [hours] skip_dates, each a whole local day in the lead's zone. Pass a lead's
    `law` (dialer.law.rules_for) to is_open/next_open and the law's week is
    intersected with the campaign's: the stricter wins on every day.
    """

    def __init__(self, hours: Hours) -> None:
        # time.max stands for 24:00; `local < time.max` is true for the whole
        # last minute except its final microsecond, which is close enough.
        window = (hours.start_time, hours.end_time)
        weekdays = frozenset(DAYS.index(day) for day in hours.days)
        week: Week = tuple(window if day in weekdays else None for day in range(7))
        self._setup(week, hours.skip_date_set, {}, {})

    def _setup(
        self,
        week: Week,
        skip_dates: frozenset[date],
        zones: dict[str, ZoneInfo],
        transitions: dict[str, tuple[datetime, datetime, list[datetime]]],
    ) -> None:
        self.week: Week = week
        self.skip_dates: frozenset[date] = skip_dates
        self._stricter: dict[Week, CallingHours] = {}
        self._by_law: dict[int, tuple[LawRules, CallingHours]] = {}
        self._zones: dict[str, ZoneInfo] = zones
        # The dispatcher asks about a million rows with a few hundred distinct
        # zone tuples, always at about the same `now`: keep answers for the
        # current minute only, so memory stays bounded.
        self._open_minute = -1
        self._open_cache: dict[tuple[str, ...], bool] = {}
        self._next_minute = -1
        self._next_cache: dict[tuple[str, ...], datetime | None] = {}
        self._transitions = transitions

    def with_law(self, law: LawRules | None) -> CallingHours:
        """These hours narrowed to what `law` allows (self when law is None or allows more).

        One instance per distinct law week, kept: a campaign sees a handful of them.
        """
        if law is None:
            return self
        # rules_for hands out one LawRules per distinct rule set, so the object itself
        # is a cheap key; holding it in the entry keeps its id from being reused.
        entry = self._by_law.get(id(law))
        if entry is not None and entry[0] is law:
            return entry[1]
        week = intersect(self.week, law.week)
        derived = self if week == self.week else self._stricter.get(week)
        if derived is None:
            derived = self._stricter[week] = CallingHours.__new__(CallingHours)
            derived._setup(week, self.skip_dates, self._zones, self._transitions)
        if len(self._by_law) > 1024:  # someone building LawRules by hand, row after row
            self._by_law.clear()
        self._by_law[id(law)] = (law, derived)
        return derived

    def law_conflict(self, law: LawRules | None) -> str:
        """'' unless the campaign's days and the law's windows share no hour of the week: then
        why, naming the law (such a lead is `invalid`, never callable by this campaign)."""
        if law is None or not any(self.week) or any(self.with_law(law).week):
            return ""
        cited = "; ".join(law.citations[1:]) or law.citations[0]
        return (
            f"never inside calling hours: the campaign's [hours] ({format_week(self.week)}) and"
            f" the law ({law.describe}) share no hour; {cited}"
        )

    def _zone(self, name: str) -> ZoneInfo:
        zone = self._zones.get(name)
        if zone is None:
            zone = self._zones[name] = ZoneInfo(name)
        return zone

    def _open_in(self, zone: ZoneInfo, now: datetime) -> bool:
        local = now.astimezone(zone)
        window = self.week[local.weekday()]
        if window is None or local.date() in self.skip_dates:
            return False
        return window[0] <= local.time() < window[1]

    def is_open(self, timezones: tuple[str, ...], now: datetime, law: LawRules | None = None) -> bool:
        """True when `now` is inside the window in every one of `timezones` (IANA names).

        With `law`, the window is also the law's for that lead (the stricter wins).
        Raises ValueError for an empty tuple (a lead always has at least one zone)
        or a naive `now`, and ZoneInfoNotFoundError for an unknown zone name.
        """
        if law is not None:
            return self.with_law(law).is_open(timezones, now)
        if not timezones:
            raise ValueError("is_open needs at least one time zone")
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        minute = _minute(now)
        if minute != self._open_minute:
            self._open_minute = minute
            self._open_cache.clear()
        cached = self._open_cache.get(timezones)
        if cached is None:
            cached = self._open_cache[timezones] = all(
                self._open_in(self._zone(name), now) for name in timezones
            )
        return cached

    def next_open(
        self, timezones: tuple[str, ...], now: datetime, law: LawRules | None = None
    ) -> datetime | None:
        """The first moment at or after `now` when the window is open in every zone (UTC).

        None when that never happens within the next 8 days (plus one day per
        skip date ahead): no days are allowed, or the zones' windows never
        overlap (e.g. 13 hours apart). Exact to the second across DST changes.
        With `law`, the law's window for that lead applies too.
        """
        if law is not None:
            return self.with_law(law).next_open(timezones, now)
        if self.is_open(timezones, now):
            return now.astimezone(UTC)
        minute = _minute(now)
        if minute != self._next_minute:
            self._next_minute = minute
            self._next_cache.clear()
        # Closed now means closed for the whole minute (see _minute), so the
        # answer found for any instant of this minute holds for all of them.
        cached = self._next_cache.get(timezones, _MISSING)
        if cached is _MISSING:
            cached = self._next_cache[timezones] = self._search(timezones, now.astimezone(UTC))
        assert cached is None or isinstance(cached, datetime)
        return cached

    def _search(self, timezones: tuple[str, ...], now: datetime) -> datetime | None:
        """Try every instant where the open set can begin, earliest first.

        In one zone the window opens only where local time reaches `start`
        (either side of a repeated hour) or where a UTC offset change jumps
        local time into the window. The intersection over zones begins at the
        latest of those beginnings, so it is one of the candidates too.
        """
        if not any(self.week):
            return None
        # Each skip date ahead can push the next window back by a day.
        first_day = now.date() - timedelta(days=1)
        horizon = HORIZON + timedelta(days=sum(1 for day in self.skip_dates if day >= first_day))
        until = now + horizon
        candidates: set[datetime] = set()
        for name in timezones:
            zone = self._zone(name)
            first = now.astimezone(zone).date() - timedelta(days=1)
            for offset in range(horizon.days + 2):
                day: date = first + timedelta(days=offset)
                window = self.week[day.weekday()]
                if window is None or day in self.skip_dates:
                    continue
                start = datetime.combine(day, window[0], tzinfo=zone)
                candidates.add(start.astimezone(UTC))
                candidates.add(start.replace(fold=1).astimezone(UTC))
            candidates.update(self._offset_changes(name, zone, now, until))
        for candidate in sorted(c for c in candidates if now <= c <= until):
            if all(self._open_in(self._zone(name), candidate) for name in timezones):
                return candidate
        return None

    def _offset_changes(self, name: str, zone: ZoneInfo, since: datetime, until: datetime) -> list[datetime]:
        """UTC instants in [since, until] where the zone's UTC offset changes.

        zoneinfo has no public list of transitions, so sample hourly (offsets
        never change twice within an hour) and bisect each change to the
        second. Cached per zone for a stretch wider than asked, so a run pays
        this once per zone per day or so.
        """
        cached = self._transitions.get(name)
        if cached is not None and cached[0] <= since and until <= cached[1]:
            return cached[2]
        lo_bound = since.replace(minute=0, second=0, microsecond=0)
        hi_bound = until + timedelta(days=1)
        changes: list[datetime] = []
        step = timedelta(hours=1)
        here = lo_bound
        offset = here.astimezone(zone).utcoffset()
        while here < hi_bound:
            there = here + step
            there_offset = there.astimezone(zone).utcoffset()
            if there_offset != offset:
                lo, hi = here, there  # offset(lo) == old, offset(hi) == new
                while hi - lo > timedelta(seconds=1):
                    mid = lo + (hi - lo) / 2
                    mid = mid.replace(microsecond=0)
                    if mid <= lo:
                        break
                    if mid.astimezone(zone).utcoffset() == offset:
                        lo = mid
                    else:
                        hi = mid
                changes.append(hi)
                offset = there_offset
            here = there
        self._transitions[name] = (lo_bound, hi_bound, changes)
        return changes
