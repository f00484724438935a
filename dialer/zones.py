"""Time zone names: the canonical IANA name, the zones people of a region live in, abbreviations.

Three facts the tz database holds and zoneinfo does not expose, read from the
database zoneinfo itself uses (its `tzdata.zi` and `zone.tab`):

- links: "Asia/Calcutta" is an old name of "Asia/Kolkata"; shown names are canonical.
- zone.tab: which zones each region (ISO 3166 code) has. A country code can be
  shared by several regions (+61: Australia, Christmas Island, Cocos; +1: the
  US, Canada, Jamaica...), and phonenumbers gives a number that is not tied to
  an area (a mobile) every zone of its country code. A mobile or fixed line
  belongs to one region, whose zones are the ones its owner can live in; a
  number of no region (toll-free, premium, UAN) keeps every zone of its code.
- abbreviations: "EST" and "MST" are also IANA names, fixed offsets without
  daylight saving, while "CST" and "PST" are not names at all. Whoever typed
  "EST" into a CRM meant Eastern time, in July too: every common North
  American abbreviation maps to its zone with its daylight saving.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Iterable, Iterator
from functools import cache
from importlib import resources
from pathlib import Path

import phonenumbers
from phonenumbers import PhoneNumber, PhoneNumberType
from phonenumbers.timezone import time_zones_for_geographical_number, time_zones_for_number

# The abbreviations people write in a time-zone column (compared in upper case) -> the zones
# they may mean. MST alone is both Denver (with daylight saving) and Arizona (without);
# AST both Halifax and Puerto Rico: such a lead is called only when the hours are open
# in both, so that neither reading is called at 07:00.
ABBREVIATIONS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(("EST", "EDT", "ET", "EASTERN"), ("America/New_York",)),
    **dict.fromkeys(("CST", "CDT", "CT", "CENTRAL"), ("America/Chicago",)),
    **dict.fromkeys(("MST", "MT", "MOUNTAIN"), ("America/Denver", "America/Phoenix")),
    "MDT": ("America/Denver",),
    **dict.fromkeys(("PST", "PDT", "PT", "PACIFIC"), ("America/Los_Angeles",)),
    **dict.fromkeys(("AKST", "AKDT"), ("America/Anchorage",)),
    "HST": ("Pacific/Honolulu",),
    "AST": ("America/Halifax", "America/Puerto_Rico"),
    "ADT": ("America/Halifax",),
    **dict.fromkeys(("NST", "NDT"), ("America/St_Johns",)),
}


def _database_file(name: str) -> str:
    """A text file of the tz database zoneinfo reads: the system's first, as zoneinfo does."""
    for folder in zoneinfo.TZPATH:
        path = Path(folder) / name
        if (Path(folder) / "tzdata.zi").is_file() and path.is_file():
            return path.read_text(encoding="utf-8")
    try:
        return resources.files("tzdata.zoneinfo").joinpath(name).read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError):
        return ""  # no database text: names are shown as given, zones left unfiltered


def _lines(text: str) -> Iterator[list[str]]:
    for line in text.splitlines():
        if line and not line.startswith("#"):
            yield line.split()


@cache
def _links() -> dict[str, str]:
    """Old name -> the name it links to ("L Asia/Kolkata Asia/Calcutta" in tzdata.zi)."""
    return {
        fields[2]: fields[1]
        for fields in _lines(_database_file("tzdata.zi"))
        if len(fields) == 3 and fields[0] == "L"
    }


def canonical(name: str) -> str:
    """The canonical IANA name of a zone name zoneinfo knows ("Asia/Calcutta" -> "Asia/Kolkata")."""
    links = _links()
    seen = 0
    while name in links and seen < 8:  # links point at zones; the bound only guards odd data
        name, seen = links[name], seen + 1
    return name


@cache
def _region_zones() -> dict[str, frozenset[str]]:
    """Region code -> its zones (canonical names), from zone.tab."""
    zones: dict[str, set[str]] = {}
    for fields in _lines(_database_file("zone.tab")):
        if len(fields) >= 3:
            zones.setdefault(fields[0], set()).add(canonical(fields[2]))
    return {region: frozenset(names) for region, names in zones.items()}


@cache
def lived_in(zones: tuple[str, ...], region: str | None) -> tuple[str, ...]:
    """The canonical `zones`, without those of another region that shares the country code.

    Falls back to all of them when the region has none of them (data of the
    two libraries out of step): a wider set only narrows the calling hours.
    """
    names = tuple(dict.fromkeys(canonical(zone) for zone in zones))
    own = _region_zones().get(region or "")
    if own:
        kept = tuple(zone for zone in names if zone in own)
        if kept:
            return kept
    return names


# Number types that belong to a line in one region (phonenumbers.region_code_for_number).
_OF_A_REGION = frozenset(
    {PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE, PhoneNumberType.FIXED_LINE_OR_MOBILE}
)
UNKNOWN_ZONES = ("Etc/Unknown",)  # phonenumbers' answer when it knows no zone


def number_zones(number: PhoneNumber, kind: int | None = None) -> tuple[str, ...]:
    """The time zones (canonical IANA names) the owner of a valid number may be in.

    `kind` is phonenumbers.number_type(number), when the caller has it. A
    geographic number has the zones of its area; a mobile those of its region;
    any other every zone of its country code. UNKNOWN_ZONES when none is known.
    """
    if kind is None:
        kind = phonenumbers.number_type(number)
    if phonenumbers.is_number_type_geographical(kind, number.country_code or 0):
        return lived_in(tuple(time_zones_for_geographical_number(number)), None)
    zones = tuple(time_zones_for_number(number))
    if zones == UNKNOWN_ZONES:
        return zones
    region = phonenumbers.region_code_for_number(number) if kind in _OF_A_REGION else None
    return lived_in(zones, region)


@cache
def _known() -> dict[str, str]:
    return {name.casefold(): name for name in zoneinfo.available_timezones()}


def zones_named(value: str) -> tuple[str, ...] | None:
    """The zones a time-zone cell names: an abbreviation, or an IANA name in any case; None if neither."""
    text = value.strip()
    by_abbreviation = ABBREVIATIONS.get(text.upper())
    if by_abbreviation is not None:
        return by_abbreviation
    name = _known().get(text.casefold())
    return None if name is None else (canonical(name),)


def canonical_all(zones: Iterable[str]) -> tuple[str, ...]:
    """Each zone's canonical name, in order, once."""
    return tuple(dict.fromkeys(canonical(zone) for zone in zones))
