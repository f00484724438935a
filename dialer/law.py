"""The law's calling hours and caps for one lead: which state it is in, which rules hold there.

The rules live in dialer/data/calling_law.toml, each with its sources; the area
code -> state table in dialer/data/area_codes.toml is generated from
libphonenumber's data by tools/gen_area_codes.py. Nothing here is legal advice:
it applies the table, and the table says how well each rule was checked.

A lead's state comes from its state column when the file has one, else from its
number's area code. A state whose law itself presumes that its area codes reach
people in the state (Florida, Oklahoma) applies by area code as well, whatever
the column says: the stricter reading is the one that cannot break that law.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from datetime import time
from functools import cache, lru_cache
from importlib import resources
from typing import Any

# Monday first, like date.weekday(); the campaign's [hours] days use the same names.
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

Window = tuple[time, time]
# One entry per weekday, Monday first: the allowed local-time window, or None (no calls).
Week = tuple[Window | None, ...]


class LawTableError(Exception):
    """The packaged law table is malformed (a bug in the package, not the user's input)."""


@dataclass(frozen=True)
class Source:
    cite: str
    url: str
    says: str


@dataclass(frozen=True)
class Rule:
    """One place's rule, as the table states it."""

    code: str  # "US" for the federal rule, else the state's two-letter code
    name: str
    week: Week
    cap_per_24h: int | None
    area_code_presumption: bool
    verified: str  # "statute" or "secondary"
    sources: tuple[Source, ...]
    holidays: str = ""
    notes: str = ""

    @property
    def applies_by(self) -> str:
        """How the dialer decides a lead is under this rule."""
        if self.code == "US":
            return "every lead"
        if self.area_code_presumption:
            return "its area code (presumed by the law) or the state column"
        return "the state column, else the area code"


@dataclass(frozen=True)
class LawRules:
    """What the law allows for one lead: the federal rule and any state rules, combined.

    `week` is the intersection of every applicable rule's windows, `cap_per_24h`
    the lowest cap (None: no cap), `states` the state codes whose rules apply
    (empty: federal only), `citations` one line per rule applied.
    """

    states: tuple[str, ...]
    week: Week
    cap_per_24h: int | None
    citations: tuple[str, ...]

    @property
    def describe(self) -> str:
        """For `validate`: 'FL: Mon-Sun 08:00-20:00, at most 3 calls per 24 h'."""
        where = "+".join(self.states) or "US"
        text = f"{where}: {format_week(self.week)}"
        if self.cap_per_24h is not None:
            text += f", at most {self.cap_per_24h} calls per 24 h"
        return text

    def validate_line(self, rows: int) -> str:
        """'law: FL (412 rows): Mon-Sun 08:00-20:00, at most 3 calls per 24 h (Florida: Fla. Stat. ...)'."""
        where, _, rule = self.describe.partition(": ")
        plural = "row" if rows == 1 else "rows"
        cited = "; ".join(self.citations[1:]) or self.citations[0]
        return f"law: {where} ({rows} {plural}): {rule} ({cited})"


@dataclass(frozen=True)
class LawTable:
    federal: Rule
    states: dict[str, Rule]
    area_codes: dict[str, str]  # "305" -> "FL"
    state_names: dict[str, str]  # "florida" -> "FL", "fl" -> "FL"


# Every US state and DC, so a state column can name any of them (most have no rule
# beyond the federal one, which is then all that applies).
US_STATES = {
    "AL": "Alabama", "AK": "Alaska", "AZ": "Arizona", "AR": "Arkansas", "CA": "California",
    "CO": "Colorado", "CT": "Connecticut", "DE": "Delaware", "DC": "District of Columbia",
    "FL": "Florida", "GA": "Georgia", "HI": "Hawaii", "ID": "Idaho", "IL": "Illinois",
    "IN": "Indiana", "IA": "Iowa", "KS": "Kansas", "KY": "Kentucky", "LA": "Louisiana",
    "ME": "Maine", "MD": "Maryland", "MA": "Massachusetts", "MI": "Michigan", "MN": "Minnesota",
    "MS": "Mississippi", "MO": "Missouri", "MT": "Montana", "NE": "Nebraska", "NV": "Nevada",
    "NH": "New Hampshire", "NJ": "New Jersey", "NM": "New Mexico", "NY": "New York",
    "NC": "North Carolina", "ND": "North Dakota", "OH": "Ohio", "OK": "Oklahoma", "OR": "Oregon",
    "PA": "Pennsylvania", "RI": "Rhode Island", "SC": "South Carolina", "SD": "South Dakota",
    "TN": "Tennessee", "TX": "Texas", "UT": "Utah", "VT": "Vermont", "VA": "Virginia",
    "WA": "Washington", "WV": "West Virginia", "WI": "Wisconsin", "WY": "Wyoming",
}  # fmt: skip
_ALIASES = {"washington state": "WA", "washington d.c.": "DC", "washington dc": "DC", "d.c.": "DC"}


def _clock(text: str) -> time:
    match = re.fullmatch(r"(\d{2}):(\d{2})", text)
    if not match:
        raise ValueError(f"{text!r} is not HH:MM")
    hour, minute = int(match[1]), int(match[2])
    return time.max if (hour, minute) == (24, 0) else time(hour, minute)


def _window(text: str) -> Window | None:
    if text == "closed":
        return None
    start, sep, end = text.partition("-")
    if not sep:
        raise ValueError(f"{text!r} is not HH:MM-HH:MM or closed")
    window = (_clock(start), _clock(end))
    if window[0] >= window[1]:
        raise ValueError(f"{text!r} ends before it starts")
    return window


def _rule(code: str, raw: dict[str, Any]) -> Rule:
    try:
        every_day = _window(raw["window"])
        days = raw.get("days", {})
        unknown = set(days) - set(WEEKDAYS)
        if unknown:
            raise ValueError(f"unknown days {sorted(unknown)}")
        week = tuple(_window(days[day]) if day in days else every_day for day in WEEKDAYS)
        sources = tuple(Source(s["cite"], s.get("url", ""), s["says"]) for s in raw["sources"])
        if not sources:
            raise ValueError("cites no source")
        if raw["verified"] not in ("statute", "secondary"):
            raise ValueError(f"verified = {raw['verified']!r}")
        cap = raw.get("cap_per_24h")
        if cap is not None and (not isinstance(cap, int) or cap < 1):
            raise ValueError(f"cap_per_24h = {cap!r}")
        return Rule(
            code=code,
            name=raw["name"],
            week=week,
            cap_per_24h=cap,
            area_code_presumption=bool(raw.get("area_code_presumption", False)),
            verified=raw["verified"],
            sources=sources,
            holidays=raw.get("holidays", ""),
            notes=raw.get("notes", ""),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise LawTableError(f"calling_law.toml: rule {code}: {exc!s}") from None


def _read(name: str) -> dict[str, Any]:
    text = resources.files("dialer").joinpath("data", name).read_text(encoding="utf-8")
    return tomllib.loads(text)


def parse_table(law: dict[str, Any], area_codes: dict[str, str]) -> LawTable:
    """Build the table from the two TOML documents (already parsed)."""
    federal = _rule("US", law["federal"])
    states = {code: _rule(code, raw) for code, raw in law.get("states", {}).items()}
    for code in states:
        if code not in US_STATES:
            raise LawTableError(f"calling_law.toml: {code} is not a US state code")
    names = {code.lower(): code for code in US_STATES}
    names.update({name.lower(): code for code, name in US_STATES.items()})
    names.update(_ALIASES)
    return LawTable(federal=federal, states=states, area_codes=area_codes, state_names=names)


@cache
def table() -> LawTable:
    """The packaged table, read once."""
    return parse_table(_read("calling_law.toml"), _read("area_codes.toml")["area_codes"])


def parse_state(value: str | None) -> str | None:
    """A state column's value as a two-letter code: 'FL', 'fl', 'Florida', ' florida ' -> 'FL'.

    None or blank -> None. Raises ValueError naming the value when it is no US state.
    """
    if value is None or not value.strip():
        return None
    code = table().state_names.get(" ".join(value.split()).lower())
    if code is None:
        raise ValueError(f"{value!r} is not a US state (use a two-letter code like FL or a name)")
    return code


def area_code_state(phone: str) -> str | None:
    """The US state of an E.164 number's area code; None outside the US or for non-geographic codes."""
    if not (phone.startswith("+1") and len(phone) == 12):
        return None
    return table().area_codes.get(phone[2:5])


def intersect(first: Week, second: Week) -> Week:
    """Each day's window allowed by both weeks (None where either allows nothing)."""
    days: list[Window | None] = []
    for a, b in zip(first, second, strict=True):
        if a is None or b is None:
            days.append(None)
            continue
        start, end = max(a[0], b[0]), min(a[1], b[1])
        days.append((start, end) if start < end else None)
    return tuple(days)


def _citation(rule: Rule) -> str:
    checked = "" if rule.verified == "statute" else " (checked against a secondary source only)"
    return f"{rule.name}: {'; '.join(s.cite for s in rule.sources)}{checked}"


@cache
def _combined(codes: tuple[str, ...]) -> LawRules:
    law = table()
    rules = [law.federal, *(law.states[code] for code in codes)]
    week = rules[0].week
    for rule in rules[1:]:
        week = intersect(week, rule.week)
    caps = [rule.cap_per_24h for rule in rules if rule.cap_per_24h is not None]
    return LawRules(
        states=codes,
        week=week,
        cap_per_24h=min(caps) if caps else None,
        citations=tuple(_citation(rule) for rule in rules),
    )


# What the table says of a number outside the North American plan (+1) with no state
# column value: nothing (the campaign's [hours] alone hold, as before the law was applied).
NO_LAW = LawRules(states=(), week=((time(0), time.max),) * 7, cap_per_24h=None, citations=())


def rules_for(phone: str, state: str | None = None) -> LawRules:
    """The law for a lead with this E.164 number and this state column value (None: no column).

    The column decides when it names a state; else the area code does. A state
    whose law presumes residency by area code applies by area code as well. A US +1
    number of no known state (toll-free, a territory) gets the federal rule; a number of
    another country (outside +1, or a Canadian or Caribbean area code) gets NO_LAW unless
    its state column names a US state.
    Raises ValueError for a column value that is no US state.
    """
    if not phone.startswith("+1") and (state is None or not state.strip()):
        return NO_LAW
    if phone.startswith("+1") and len(phone) == 12:
        return rules_for_area_code(phone[2:5], state)
    return _rules(None, state)  # a +1 number without a whole area code: the federal rule


def rules_for_area_code(area_code: str, state: str | None = None) -> LawRules:
    """rules_for, for leads that share an area code (of a +1 number; '' for a number outside
    +1) and a state column value."""
    no_column = state is None or not state.strip()
    if no_column and (not area_code or _outside_the_us(area_code)):
        return NO_LAW
    return _rules(table().area_codes.get(area_code), state)


@lru_cache(maxsize=1024)
def _outside_the_us(area_code: str) -> bool:
    """A +1 area code of another country (Canada, the Caribbean nations): US law is not
    theirs, and their own rules (Canada's CRTC hours, say) are not in this table, so the
    campaign's [hours] alone apply. Toll-free and other non-geographic codes, which may
    ring anywhere, and the US territories keep the federal rule."""
    import phonenumbers  # only when a +1 number's area code is not a state's

    if area_code in table().area_codes:
        return False
    try:
        number = phonenumbers.parse(f"+1{area_code}2345678")
    except phonenumbers.NumberParseException:
        return False
    region = phonenumbers.region_code_for_number(number)
    return region not in (None, "US", "PR", "VI", "GU", "AS", "MP")


@lru_cache(maxsize=4096)
def _rules(by_number: str | None, state: str | None) -> LawRules:
    # A million rows carry a few hundred (area code state, column value) pairs.
    law = table()
    by_column = parse_state(state)
    codes: set[str] = set()
    if by_column is not None:
        codes.add(by_column)
    elif by_number is not None:
        codes.add(by_number)
    if by_number is not None and by_number in law.states and law.states[by_number].area_code_presumption:
        codes.add(by_number)
    return _combined(tuple(sorted(code for code in codes if code in law.states)))


def format_week(week: Week) -> str:
    """'Mon-Sat 08:00-20:00, Sun closed': runs of days that share a window."""
    parts: list[str] = []
    start = 0
    for index in range(1, len(week) + 1):
        if index < len(week) and week[index] == week[start]:
            continue
        days = WEEKDAYS[start].title()
        if index - 1 > start:
            days += f"-{WEEKDAYS[index - 1].title()}"
        window = week[start]
        parts.append(f"{days} {_format_window(window)}")
        start = index
    return ", ".join(parts)


def _format_window(window: Window | None) -> str:
    if window is None:
        return "closed"
    end = "24:00" if window[1] == time.max else window[1].strftime("%H:%M")
    return f"{window[0].strftime('%H:%M')}-{end}"
