"""The caller-id pool: which of the campaign's numbers dials a lead, within each number's daily cap.

For strategy "local" each number is described once by where it is: its
country (the region code: "US", "CA", "GB"), its NANP area code (or
geographic area code elsewhere), its place (a US state or Canadian province
as "US-CA", "CA-ON"; elsewhere the region code), and its time zones. A lead
is matched tier by tier, never across its country: same area code, same
place, a shared time zone, then any number of its country. Only when the
pool has no number of the lead's country at all does any number do (what
`validate` warns about: see ForeignCallers). Within a tier the least used
today wins, ties going to pool order.

Daily caps are counted in the pool for one run alone (`choose`), or, when the
campaign's counts are shared with its other runs and its account's other
campaigns (`CallerDays`, kept by store/callerdays.py), taken from that store one
call at a time before the intent (`take`): the pool's own counts are then only its
view, to choose by, and the store's answer is the one that holds.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Protocol
from zoneinfo import ZoneInfo

import phonenumbers

from dialer.config import Numbers
from dialer.zones import UNKNOWN_ZONES, number_zones

Day = tuple[str, str]  # (caller id, the ISO date of its own local day)

# A pool whose view says every number is capped reads the shared counts again (calls
# given back by other runs) at most this often, on the dispatcher's clock.
RESYNC_SECONDS = 30.0


class CallerDays(Protocol):
    """Caller-id day counts shared with other runs and campaigns (store/callerdays.py)."""

    async def counts(self, seeds: Mapping[Day, int]) -> dict[Day, int]:
        """The shared count of each (number, day) of `seeds`, raised first to at least its seed."""

    async def take(self, number: str, day: str, cap: int | None) -> int | None:
        """Count one call from `number` on `day` if that keeps it within `cap`: the new count,
        or None when it is at the cap (nothing counted). `cap` None: always counted."""

    def give_back(self, number: str, day: str) -> None:
        """Take back one call counted by take(): its request never left. May land later (close)."""

    async def close(self) -> None:
        """Land what give_back() queued, and close."""


class PoolExhausted(Exception):
    """Every number a lead may use has reached its daily cap for today.

    `everywhere` is True when that is every number of the pool (no other lead can
    be dialed either); False when only the numbers of the lead's country are capped
    (strategy "local"), so that leads of other countries can still go.
    """

    def __init__(self, message: str, *, everywhere: bool = True) -> None:
        super().__init__(message)
        self.everywhere = everywhere


# What geocoder.description_for_number(n, "en") says for NANP numbers: either
# "City, XX" with a state or province abbreviation, or the whole name, with a
# few oddities of its data ("Washington State", "British Colombia", combined
# Canadian regions). Names map to their postal abbreviations.
_US_STATES = {
    "Alabama": "AL",
    "Alaska": "AK",
    "Arizona": "AZ",
    "Arkansas": "AR",
    "California": "CA",
    "Colorado": "CO",
    "Connecticut": "CT",
    "Delaware": "DE",
    "Florida": "FL",
    "Georgia": "GA",
    "Hawaii": "HI",
    "Idaho": "ID",
    "Illinois": "IL",
    "Indiana": "IN",
    "Iowa": "IA",
    "Kansas": "KS",
    "Kentucky": "KY",
    "Louisiana": "LA",
    "Maine": "ME",
    "Maryland": "MD",
    "Massachusetts": "MA",
    "Michigan": "MI",
    "Minnesota": "MN",
    "Mississippi": "MS",
    "Missouri": "MO",
    "Montana": "MT",
    "Nebraska": "NE",
    "Nevada": "NV",
    "New Hampshire": "NH",
    "New Jersey": "NJ",
    "New Mexico": "NM",
    "New York": "NY",
    "North Carolina": "NC",
    "North Dakota": "ND",
    "Ohio": "OH",
    "Oklahoma": "OK",
    "Oregon": "OR",
    "Pennsylvania": "PA",
    "Rhode Island": "RI",
    "South Carolina": "SC",
    "South Dakota": "SD",
    "Tennessee": "TN",
    "Texas": "TX",
    "Utah": "UT",
    "Vermont": "VT",
    "Virginia": "VA",
    "Washington": "WA",
    "Washington State": "WA",
    "West Virginia": "WV",
    "Wisconsin": "WI",
    "Wyoming": "WY",
    "Washington D.C.": "DC",
    "District of Columbia": "DC",
}
_CA_PROVINCES = {
    "Alberta": "AB",
    "British Columbia": "BC",
    "British Colombia": "BC",
    "Manitoba": "MB",
    "New Brunswick": "NB",
    "Newfoundland and Labrador": "NL",
    "Nova Scotia": "NS",
    "Ontario": "ON",
    "Prince Edward Island": "PE",
    "Quebec": "QC",
    "Saskatchewan": "SK",
    "Northwest Territories": "NT",
    "Nunavut": "NU",
    "Yukon": "YT",
}
_CITY_STATE = re.compile(r",\s*([A-Z]{2})$")


@dataclass(frozen=True, slots=True)
class _Where:
    """Where a number is, as far as matching callers to leads goes."""

    country: str | None  # the region code: "US", "CA", "GB"; None when unknown
    area: tuple[int, str] | None  # (country code, area code)
    places: frozenset[str]  # "US-CA", "CA-ON", "GB", ...
    zones: tuple[str, ...]  # IANA names; () when unknown


def _places(number: phonenumbers.PhoneNumber, region: str | None) -> frozenset[str]:
    """The state/province (US, Canada) or the region code (anywhere else) of a number."""
    if region is None:
        return frozenset()
    if region not in ("US", "CA"):
        return frozenset({region})
    # Imported on first use: loading the geocoding data takes seconds, and
    # only the "local" strategy with a US or Canadian number needs it.
    from phonenumbers import geocoder

    description = geocoder.description_for_number(number, "en")
    names = _US_STATES if region == "US" else _CA_PROVINCES
    match = _CITY_STATE.search(description)
    if match:
        return frozenset({f"{region}-{match[1]}"})
    # "Nova Scotia/Prince Edward Island" covers two provinces: either matches.
    codes = {names.get(part.strip()) for part in description.split("/")}
    found = frozenset(f"{region}-{code}" for code in codes if code)
    if found:
        return found
    # An overlay or non-geographic code ("", "Canada"): no place is better than a wrong one.
    return frozenset()


def _where(e164: str, *, places: bool = True) -> _Where:
    """Describe a number: area code, place and time zones (about 40 µs, so callers cache).

    With places=False the place is left empty, sparing the geocoder.
    """
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return _Where(None, None, frozenset(), ())
    national = phonenumbers.national_significant_number(number)
    area: tuple[int, str] | None = None
    country = number.country_code or 0
    if country == 1:
        if len(national) == 10:
            area = (1, national[:3])
    else:
        length = phonenumbers.length_of_geographical_area_code(number)
        if length:
            area = (country, national[:length])
    region = phonenumbers.region_code_for_number(number)
    # Canonical names and the region's own zones, as the mapping gives the leads'.
    zones = tuple(zone for zone in number_zones(number) if zone != UNKNOWN_ZONES[0])
    return _Where(region, area, _places(number, region) if places else frozenset(), zones)


def _country(e164: str) -> str | None:
    try:
        return phonenumbers.region_code_for_number(phonenumbers.parse(e164, None))
    except phonenumbers.NumberParseException:
        return None


class ForeignCallers:
    """Which leads strategy "local" can only call from another country's number, for `validate`.

    That is a lead whose country (its region code) no number of the pool is in.
    Reads countries only, never places: no geocoder is loaded for this.
    """

    def __init__(self, numbers: Numbers) -> None:
        self.active = numbers.strategy == "local" and bool(numbers.pool)
        self.countries = {_country(number) for number in numbers.pool}
        self.rows: Counter[str] = Counter()  # what count() found: lead country -> rows
        self._seen: dict[str, str | None] = {}

    def count(self, phone: str) -> None:
        """Count the lead in `rows` when it would be called from abroad."""
        country = self.country(phone)
        if country is not None:
            self.rows[country] += 1

    def country(self, phone: str) -> str | None:
        """The lead's country when no pool number is in it, else None (and always None unless "local")."""
        if not self.active:
            return None
        key = phone[:_NANP_KEY] if phone.startswith("+1") and len(phone) == 12 else phone
        if key not in self._seen:
            if len(self._seen) >= _LEAD_CACHE_SIZE:
                self._seen.clear()
            country = _country(phone)
            self._seen[key] = None if country in self.countries else (country or "an unknown country")
        return self._seen[key]


# phonenumbers' geocoding and time-zone data for +1 go at most 7 digits deep
# (country code, area code, exchange: "1201200"), so every NANP number
# sharing its first 8 characters of E.164 is described alike.
_NANP_KEY = 8
_LEAD_CACHE_SIZE = 200_000


class NumberPool:
    """Chooses a caller id per lead by strategy ("local", "round_robin", "least_used").

    `usage` is what the journal counted: {(number, day): calls}, where day is the
    ISO date of the number's own local day. The pool counts its own choices on top.
    With `shared` counts, `take` asks them for every call (see the module's doc).
    """

    def __init__(
        self,
        numbers: Numbers,
        usage: dict[tuple[str, str], int],
        rested: Mapping[str, str] | None = None,
        shared: CallerDays | None = None,
    ) -> None:
        """`rested`: caller ids not to use this run (number -> why; caps.rested_callers)."""
        self.shared = shared
        self._synced_at: float | None = None  # when `take` last read the shared counts
        self.pool: tuple[str, ...] = tuple(numbers.pool)
        self.rested: dict[str, str] = dict(rested or {})
        self.strategy = numbers.strategy
        self.daily_cap = numbers.daily_cap
        self._usage: dict[tuple[str, str], int] = dict(usage)
        local = self.strategy == "local"
        self._where = [_where(number, places=local) for number in self.pool]
        # A number's day counts in its first zone (phonenumbers' order), UTC if unknown.
        self._tz: list[tzinfo] = [ZoneInfo(where.zones[0]) if where.zones else UTC for where in self._where]
        self._cursor = 0  # round_robin: the next pool index to try
        self._days_minute = -1
        self._days: list[str] = []
        self._tiers: dict[tuple[_Where, tuple[str, ...]], tuple[tuple[int, ...], ...]] = {}
        self._leads: dict[str, _Where] = {}

    def day_of(self, number: str, now: datetime) -> str:
        """The ISO date of `now` in the number's own time zone: the day its cap counts."""
        try:
            index = self.pool.index(number)
        except ValueError:
            zones = _where(number, places=False).zones
            zone: tzinfo = ZoneInfo(zones[0]) if zones else UTC
        else:
            zone = self._tz[index]
        return now.astimezone(zone).date().isoformat()

    def _current_days(self, now: datetime) -> list[str]:
        """Each pool number's current day, recomputed once a minute.

        A local date cannot change inside a UTC minute (every current UTC
        offset is a whole number of minutes), so this is exact.
        """
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        minute = int(now.timestamp() // 60)
        if minute != self._days_minute:
            self._days_minute = minute
            self._days = [now.astimezone(zone).date().isoformat() for zone in self._tz]
        return self._days

    def usage_today(self, now: datetime) -> dict[str, int]:
        """Uses of each pool number in its own current day, journal counts included."""
        days = self._current_days(now)
        return {n: self._usage.get((n, d), 0) for n, d in zip(self.pool, days, strict=True)}

    def next_reset(self, now: datetime) -> datetime | None:
        """When the earliest capped number's day ends (UTC): when deferred rows may go again.

        None when no number is capped (or there is no cap).
        """
        if self.daily_cap is None:
            return None
        days = self._current_days(now)
        resets: list[datetime] = []
        for index, number in enumerate(self.pool):
            if self._usage.get((number, days[index]), 0) < self.daily_cap:
                continue
            zone = self._tz[index]
            local = now.astimezone(zone)
            midnight = datetime.combine(local.date() + timedelta(days=1), datetime.min.time(), tzinfo=zone)
            resets.append(midnight.astimezone(UTC))
        return min(resets) if resets else None

    def choose(self, phone: str, timezones: tuple[str, ...], now: datetime) -> str | None:
        """A caller id for the lead at E.164 `phone`; None when the pool is empty. Counts the use.

        Raises PoolExhausted when every number is capped for its current day.
        """
        if not self.pool:
            return None
        days = self._current_days(now)
        counts = [self._usage.get((n, d), 0) for n, d in zip(self.pool, days, strict=True)]
        cap = self.daily_cap
        if self.rested:
            # A rested number counts as capped: every strategy passes it over.
            cap = sys.maxsize if cap is None else cap
            counts = [sys.maxsize if n in self.rested else c for n, c in zip(self.pool, counts, strict=True)]
        if self.strategy == "round_robin":
            index = self._round_robin(counts, cap)
        elif self.strategy == "least_used":
            index = self._least_used(range(len(self.pool)), counts, cap)
        else:
            index = None
            for tier in self._local_tiers(phone, timezones):
                index = self._least_used(tier, counts, cap)
                if index is not None:
                    break
        if index is None:
            everywhere = cap is None or all(count >= cap for count in counts)
            if everywhere and self.rested:
                raise PoolExhausted(
                    f"all {len(self.pool)} numbers are capped for the day or rested ({len(self.rested)}:"
                    " their calls keep failing; see dialer status)"
                )
            if everywhere:
                raise PoolExhausted(f"all {len(self.pool)} numbers reached their daily cap of {cap}")
            raise PoolExhausted(
                f"every caller id of the lead's country has reached its daily cap of {cap}", everywhere=False
            )
        key = (self.pool[index], days[index])
        self._usage[key] = self._usage.get(key, 0) + 1
        return self.pool[index]

    async def take(self, phone: str, timezones: tuple[str, ...], now: datetime) -> str | None:
        """choose(), each call counted in the shared counts too (when there are any) before
        it is the lead's: a number the other runs have brought to its cap meanwhile is
        passed over, as capped, and the next best tried. Raises PoolExhausted like choose().
        """
        if self.shared is None or not self.pool:
            return self.choose(phone, timezones, now)
        if self._synced_at is None:
            await self.sync(now)
        while True:
            try:
                number = self.choose(phone, timezones, now)
            except PoolExhausted:
                # Other runs may have given calls back since: read again, now and then.
                if now.timestamp() - (self._synced_at or 0.0) < RESYNC_SECONDS:
                    raise
                await self.sync(now)
                continue
            if number is None:
                return None
            key = (number, self.day_of(number, now))
            counted = await self.shared.take(key[0], key[1], self.daily_cap)
            if counted is not None:
                self._usage[key] = counted
                return number
            # Capped by the others' calls: choose() passes it over from now on.
            self._usage[key] = max(self._usage.get(key, 0), self.daily_cap or 0)

    async def sync(self, now: datetime) -> None:
        """The view of today's counts from the shared store. The first time, the journal's
        own counts are their floor (a campaign moved to shared counts mid-day keeps the
        calls it made that day); later, the view itself is not: it may count calls that
        other runs (or this one) have since given back."""
        assert self.shared is not None
        first = self._synced_at is None
        self._synced_at = now.timestamp()
        days = self._current_days(now)
        seeds = {
            (n, d): self._usage.get((n, d), 0) if first else 0 for n, d in zip(self.pool, days, strict=True)
        }
        self._usage.update(await self.shared.counts(seeds))

    def release(self, number: str, now: datetime) -> None:
        """Take back one use of `number` counted by choose() or take(), e.g. when no call was placed."""
        key = (number, self.day_of(number, now))
        if self._usage.get(key, 0) > 0:
            self._usage[key] -= 1
        if self.shared is not None:
            self.shared.give_back(*key)

    def _round_robin(self, counts: list[int], cap: int | None) -> int | None:
        size = len(self.pool)
        for step in range(size):
            index = (self._cursor + step) % size
            if cap is None or counts[index] < cap:
                self._cursor = (index + 1) % size
                return index
        return None

    @staticmethod
    def _least_used(indexes: range | tuple[int, ...], counts: list[int], cap: int | None) -> int | None:
        """The uncapped index used least; `indexes` are in pool order, so ties go to the first."""
        best: int | None = None
        for index in indexes:
            count = counts[index]
            if cap is not None and count >= cap:
                continue
            if best is None or count < counts[best]:
                best = index
        return best

    def _local_tiers(self, phone: str, timezones: tuple[str, ...]) -> tuple[tuple[int, ...], ...]:
        """Pool indexes by closeness to the lead: area code, place, time zone, its country.

        All within the lead's country; everyone only when no number is of that
        country. Cached per (where the lead is, its zones): caps and usage change
        with every choice, so only the candidate lists are cached, never the choice.
        """
        lead = self._where_lead(phone)
        key = (lead, timezones)
        tiers = self._tiers.get(key)
        if tiers is None:
            zones = set(timezones or lead.zones)
            country = [
                (i, w) for i, w in enumerate(self._where) if lead.country and w.country == lead.country
            ]
            area = tuple(i for i, w in country if lead.area and w.area == lead.area)
            place = tuple(i for i, w in country if lead.places & w.places)
            zone = tuple(i for i, w in country if zones.intersection(w.zones))
            same = tuple(i for i, _ in country) or tuple(range(len(self.pool)))
            tiers = self._tiers[key] = (area, place, zone, same)
        return tiers

    def _where_lead(self, phone: str) -> _Where:
        """Describe a lead's number, cached by NPA-NXX for NANP (a million leads, few prefixes)."""
        key = phone[:_NANP_KEY] if phone.startswith("+1") and len(phone) == 12 else phone
        where = self._leads.get(key)
        if where is None:
            if len(self._leads) >= _LEAD_CACHE_SIZE:
                self._leads.clear()  # unique non-NANP numbers would otherwise grow it forever
            where = self._leads[key] = _where(phone)
        return where
