"""Phone cells -> E.164 numbers and the time zones they imply, parsed in parallel for large files.

Phone parsing is the expensive part of mapping a file: 30-80 us a number through
phonenumbers; ~3 us through the NANP fast path below for the common North American
shapes, ~5 us through the digits fast path for any country's number written as
digits (test_fast_path_gives_exactly_what_phonenumbers_gives and
test_every_country_gives_exactly_what_phonenumbers_gives hold both to phonenumbers'
answers, error messages included). Large files are read in chunks whose distinct
phone strings are parsed by a pool of (forked) processes while the caller reads the
next chunk.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import re
import sys
import threading
from array import array
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from functools import cache

import numpy as np
import numpy.typing as npt
import pandas as pd
import phonenumbers
from phonenumbers import (
    COUNTRY_CODE_TO_REGION_CODE,
    NumberParseException,
    PhoneMetadata,
    PhoneNumber,
    PhoneNumberFormat,
    PhoneNumberType,
)
from phonenumbers import ValidationResult as Possible
from phonenumbers.tzdata import TIMEZONE_DATA

from dialer.forked import prepare_child
from dialer.load import Chunk
from dialer.zones import UNKNOWN_ZONES, lived_in, number_zones

# Rows a chunk of a leads file holds: the unit of work of a pool process. Five chunks or so
# are in flight at once (read, queued to the workers, mapped): at 50,000 rows dialer validate
# of a million rows peaked at ~340 MiB PSS (every process), at 20,000 ~250, the CPU alike.
CHUNK_ROWS = 20_000

# (E.164, time zones inferred from the number, error). The zones are those of
# phonenumbers' map (see number_zones), ("Etc/Unknown",) when it has none; "" error when valid.
PhoneResult = tuple[str, tuple[str, ...], str]

# "1.23457E+10" is what Excel writes for a long number in a General cell saved
# as CSV: the digits after the sixth are gone for good.
_SCIENTIFIC = re.compile(r"^[+-]?\d+(?:[.,]\d+)?[eE][+-]?\d+$")
# "4155550141.0": a number column that went through a float on its way out.
_INTEGRAL_FLOAT = re.compile(r"^(\+?\d+)\.0+$")

_PARSE_REASONS = {
    NumberParseException.INVALID_COUNTRY_CODE: "unknown country code",
    NumberParseException.NOT_A_NUMBER: "not a phone number",
    NumberParseException.TOO_SHORT_AFTER_IDD: "too short",
    NumberParseException.TOO_SHORT_NSN: "too short",
    NumberParseException.TOO_LONG: "too long",
}
_POSSIBLE_REASONS = {
    Possible.INVALID_COUNTRY_CODE: "unknown country code",
    Possible.TOO_SHORT: "too short",
    Possible.TOO_LONG: "too long",
    Possible.INVALID_LENGTH: "wrong number of digits",
    Possible.IS_POSSIBLE_LOCAL_ONLY: "a local number without its area code",
}

# Repeated phone strings across chunks (the same contact exported twice) that the
# fast paths do not take are parsed once (phonenumbers: 30-80 us); the cache is
# dropped when full to keep memory flat. What the fast paths take (3-5 us) is not
# kept: remembering a whole chunk's numbers cost each worker ~10 MiB for almost no hit.
_CACHE_LIMIT = 50_000
_phone_cache: dict[tuple[str, str], PhoneResult] = {}


def _shown(value: str) -> str:
    value = value.strip()
    return repr(value if len(value) <= 40 else value[:37] + "...")


def normalize_phone(raw: str, region: str) -> PhoneResult:
    """(E.164, inferred time zones, error) for one phone cell; error is "" when valid.

    Extensions are parsed off and dropped. A number in scientific notation is
    refused, never guessed: Excel has already lost its last digits.
    """
    value = raw.strip()
    fast = _fast(value, region) if value else None
    if fast is not None:
        return fast
    key = (raw, region)
    cached = _phone_cache.get(key)
    if cached is not None:
        return cached
    result = _slow(raw, value, region)
    if len(_phone_cache) >= _CACHE_LIMIT:
        _phone_cache.clear()
    _phone_cache[key] = result
    return result


def _normalize(raw: str, region: str) -> PhoneResult:
    """normalize_phone without its cache."""
    value = raw.strip()
    fast = _fast(value, region) if value else None
    return fast if fast is not None else _slow(raw, value, region)


def _fast(value: str, region: str) -> PhoneResult | None:
    """The fast paths, for a stripped value that is not empty: the shapes they take hold no "E"
    and end in a digit, so neither check of _general could have refused or changed them."""
    return _nanp_result(value, region) or _digits_result(value, region)


def _slow(raw: str, value: str, region: str) -> PhoneResult:
    if not value:
        return "", (), "missing phone number"
    return _general(raw, value, region)


def _general(raw: str, value: str, region: str) -> PhoneResult:
    """_normalize of what the fast path did not take (or any value: it is the reference)."""
    if _SCIENTIFIC.match(value):
        return (
            "",
            (),
            (
                f"phone {value} is in scientific notation: digits were lost "
                "(format the column as text in Excel)"
            ),
        )
    integral = _INTEGRAL_FLOAT.match(value)
    if integral:
        value = integral[1]
        fast = _nanp_result(value, region) or _digits_result(value, region)
        if fast is not None:
            return fast
    # The general path; also for what the fast one refused, so that messages
    # come from one place.
    try:
        number = phonenumbers.parse(value, region)
    except NumberParseException as exc:
        reason = _PARSE_REASONS.get(exc.error_type, "not a phone number")
        return "", (), f"invalid phone number {_shown(raw)}: {reason}"
    # number_type() is what is_valid_number() computes (UNKNOWN = invalid);
    # calling it once serves both the validity check and the time zones.
    kind = phonenumbers.number_type(number)
    if kind == PhoneNumberType.UNKNOWN:
        possible = phonenumbers.is_possible_number_with_reason(number)
        reason = _POSSIBLE_REASONS.get(possible, "not a valid number")
        return "", (), f"invalid phone number {_shown(raw)}: {reason}"
    e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
    return e164, number_zones(number, kind), ""


# The fast path. Most numbers in a North American list are written in a handful
# of shapes: "(415) 555-0132", "415.555.0132", "+1 415 555 0132", "14155550132".
# phonenumbers.parse() spends ~12 us on such a string and number_type() as much
# again; this regex ~1 us, and reads it as the same number (the national prefix 1
# of every NANP region is dropped, as parse() does). Only a number that then
# proves valid is taken; its type and zones are found as phonenumbers finds them.
# The separators are ASCII spaces, dots and dashes and the digits ASCII ones: a tab or
# a newline between digits makes phonenumbers refuse the cell ("not a phone number"),
# and it reads other scripts' digits as their ASCII ones (the general path decides those).
_NANP_SHAPE = re.compile(
    r"(?:(\+ *)?(1)[ .\-]*)?\(? *([2-9][0-9][0-9]) *\)?[ .\-]*([0-9]{3})[ .\-]*([0-9]{4})"
    # An extension written the common ways ("ext. 12", "x12"): phonenumbers drops it
    # before it reads the number, as the dialer does (test_fast_path_reads_extensions).
    r"(?:[ \t]*(?:ext\.?|x)[ \t]*[0-9]{1,6})?"
)
_NANP_REGIONS = frozenset(COUNTRY_CODE_TO_REGION_CODE.get(1, ()))


def _nanp_result(value: str, region: str) -> PhoneResult | None:
    """The result of a valid NANP number in a common shape (~3 us), or None: the general path decides.

    The same answer as the general path, reached without phonenumbers' per-call
    overhead: the shape regex, each NANP region's types in one compiled regex
    (_CountryTypes), and the time zones from the prefix table phonenumbers itself uses.
    """
    match = _NANP_SHAPE.fullmatch(value)
    if match is None:
        return None
    plus, one = match[1], match[2]
    if (plus and not one) or (not plus and region not in _NANP_REGIONS):
        return None
    national = match[3] + match[4] + match[5]
    kind, _ = _country_types(1, 10).number_type(national)
    if kind == PhoneNumberType.UNKNOWN:
        return None  # invalid: the general path says why
    if not phonenumbers.is_number_type_geographical(kind, 1):
        number = PhoneNumber(country_code=1, national_number=int(national))
        return "+1" + national, number_zones(number, kind), ""
    return "+1" + national, _area_zones("1" + national), ""


# The fast path of every other number written as digits: "+44 20 7946 0958",
# "0049 30 1234567", "(020) 7946 0958" with default_region "GB", "+33 (0)1 42 68 53 00".
# The digits are read as phonenumbers.parse reads them (the international prefix or
# "+", the country code, the national prefix, from the same metadata), then the
# number's region and type as _CountryTypes finds them; a number that is not
# valid, or a step whose outcome is an error, is left to the general path.
_DIGITS_SHAPE = re.compile(
    r"(\+ *)?([0-9(][0-9 .\-/()]*[0-9])"
    r"(?:[ \t]*(?:ext\.?|x)[ \t]*[0-9]{1,6})?"  # the extensions of _NANP_SHAPE
)
_SEPARATORS = str.maketrans("", "", " .-/()")
_MIN_NSN, _MAX_NSN = 2, 17  # phonenumbers' bounds of a national significant number
_MAX_INPUT = 250  # phonenumbers refuses a longer text
_MAX_COUNTRY_CODE = 3


def _digits_result(value: str, region: str) -> PhoneResult | None:
    """The result of a valid number written as digits and separators (~5 us), or None.

    Mirrors phonenumbers.parse step by step for the inputs the shape admits (no
    letters, no RFC 3966, one "+" at most), then number_type and the zones.
    """
    match = _DIGITS_SHAPE.fullmatch(value)
    if match is None or len(value) > _MAX_INPUT or ("." in value and _INTEGRAL_FLOAT.match(value)):
        return None  # an integral float is read without its ".0" (see _general)
    parsed = _parse_digits(match[1] is not None, match[2].translate(_SEPARATORS), region)
    if parsed is None:
        return None
    code, national = parsed
    kind, number_region = _country_types(code, len(national)).number_type(national)
    if kind == PhoneNumberType.UNKNOWN:
        return None  # invalid: the general path says why
    e164 = f"+{code}{national}"
    if phonenumbers.is_number_type_geographical(kind, code):
        return e164, _prefix_zones(e164[1:]), ""
    return e164, _country_zones(code, national, kind, number_region), ""


def _parse_digits(plus: bool, digits: str, region: str) -> tuple[int, str] | None:
    """(country code, national significant number) of the digits as phonenumbers.parse reads
    them (_maybe_extract_country_code, then the national prefix stripped when what remains
    has a possible length), None where parse would raise."""
    own = _parse_region(region)
    if not plus and own is None:
        return None  # no default region: phonenumbers refuses a number without "+"
    international = digits if plus or own is None else own.after_idd(digits)
    code, national = 0, digits
    if international is not None:
        found = _country_code(international)
        if found is None:
            return None
        code, national = found
    elif own is not None:
        without = own.without_code(digits)
        if without is not None:
            code, national = own.code, without
    parsing: _ParseRegion | None = own
    if code:
        main = phonenumbers.region_code_for_country_code(code)
        if main != region or own is None:
            parsing = _parse_region_of(code, main)
    elif own is not None:
        code = own.code
    if len(national) < _MIN_NSN or parsing is None:
        return None
    national = parsing.strip_prefix_if_possible(national)
    return None if len(national) > _MAX_NSN else (code, national)


def _country_code(international: str) -> tuple[int, str] | None:
    """_extract_country_code of the digits after "+" or an IDD; None where parse raises
    (too short, no known code: phonenumbers then tries again without the "+")."""
    if len(international) <= _MIN_NSN or international[0] == "0":
        return None
    for size in range(1, min(len(international), _MAX_COUNTRY_CODE) + 1):
        if int(international[:size]) in COUNTRY_CODE_TO_REGION_CODE:
            return int(international[:size]), international[size:]
    return None


class _ParseRegion:
    """What phonenumbers.parse reads from one region's metadata, compiled once."""

    def __init__(self, metadata: PhoneMetadata) -> None:
        self.code = int(metadata.country_code or 0)
        self.code_text = str(metadata.country_code)
        idd = metadata.international_prefix
        self.idd = re.compile(idd) if idd is not None else None
        general = metadata.general_desc
        pattern = getattr(general, "national_number_pattern", None)
        self.general = re.compile(pattern) if pattern else None
        self.lengths = tuple(getattr(general, "possible_length", None) or ())
        self.local_lengths = tuple(getattr(general, "possible_length_local_only", None) or ())
        prefix = metadata.national_prefix_for_parsing
        self.prefix = re.compile(prefix) if prefix else None
        self.rule = metadata.national_prefix_transform_rule or None

    def after_idd(self, digits: str) -> str | None:
        """_parse_prefix_as_idd: the digits after the region's international prefix, None if none."""
        if self.idd is None:
            return None
        match = self.idd.match(digits)
        if match is None:
            return None
        rest = digits[match.end() :]
        return None if rest[:1] == "0" else rest  # a country code never starts with 0

    def viable(self, national: str) -> bool:
        """_match_national_number against the general description (no length check)."""
        return self.general is not None and self.general.fullmatch(national) is not None

    def strip_prefix(self, number: str) -> str:
        """_maybe_strip_national_prefix_carrier_code's number."""
        if not number or self.prefix is None:
            return number
        match = self.prefix.match(number)
        if match is None:
            return number
        viable = self.viable(number)
        groups = match.groups()
        if self.rule is None or groups[len(groups) - 1] is None:
            stripped = number[match.end() :]
        else:
            stripped = self.prefix.sub(self.rule, number, count=1)
        if viable and not self.viable(stripped):
            return number
        return stripped

    def length(self, national: str) -> int:
        """_test_number_length for the type UNKNOWN (the general description's lengths)."""
        size = len(national)
        if size in self.local_lengths:
            return Possible.IS_POSSIBLE_LOCAL_ONLY
        if not self.lengths:
            return Possible.INVALID_LENGTH  # not in phonenumbers' data; never taken
        if self.lengths[0] == size:
            return Possible.IS_POSSIBLE
        if self.lengths[0] > size:
            return Possible.TOO_SHORT
        if self.lengths[-1] < size:
            return Possible.TOO_LONG
        return Possible.IS_POSSIBLE if size in self.lengths[1:] else Possible.INVALID_LENGTH

    def without_code(self, digits: str) -> str | None:
        """_maybe_extract_country_code's national number for digits that begin with the region's
        own country code and read better without it, None when they are kept whole."""
        if not digits.startswith(self.code_text):
            return None
        rest = self.strip_prefix(digits[len(self.code_text) :])
        if (not self.viable(digits) and self.viable(rest)) or self.length(digits) == Possible.TOO_LONG:
            return rest
        return None

    def strip_prefix_if_possible(self, national: str) -> str:
        """parse()'s last step: the national prefix stripped when what remains has a possible length."""
        stripped = self.strip_prefix(national)
        if self.length(stripped) in _SHORT:
            return national
        return stripped


_SHORT = frozenset({Possible.TOO_SHORT, Possible.IS_POSSIBLE_LOCAL_ONLY, Possible.INVALID_LENGTH})


@cache
def _parse_region(region: str) -> _ParseRegion | None:
    """The default region's parse data; None for a region phonenumbers does not know."""
    if region != region.upper() or region not in phonenumbers.SUPPORTED_REGIONS:
        return None  # phonenumbers upper-cases it in places only: the general path decides
    metadata = PhoneMetadata.metadata_for_region(region, None)
    return _ParseRegion(metadata) if metadata is not None else None


@cache
def _parse_region_of(code: int, main: str) -> _ParseRegion | None:
    """The parse data of a country code's main region (or non-geographic entity)."""
    metadata = PhoneMetadata.metadata_for_region_or_calling_code(code, main)
    return _ParseRegion(metadata) if metadata is not None else None


class _RegionTypes:
    """phonenumbers' _number_type_helper for one region's metadata and national numbers of one length."""

    def __init__(self, metadata: PhoneMetadata, size: int) -> None:
        same = metadata.same_mobile_and_fixed_line_pattern
        fixed = PhoneNumberType.FIXED_LINE_OR_MOBILE if same else PhoneNumberType.FIXED_LINE
        ordered = [
            (PhoneNumberType.PREMIUM_RATE, metadata.premium_rate),
            (PhoneNumberType.TOLL_FREE, metadata.toll_free),
            (PhoneNumberType.SHARED_COST, metadata.shared_cost),
            (PhoneNumberType.VOIP, metadata.voip),
            (PhoneNumberType.PERSONAL_NUMBER, metadata.personal_number),
            (PhoneNumberType.PAGER, metadata.pager),
            (PhoneNumberType.UAN, metadata.uan),
            (PhoneNumberType.VOICEMAIL, metadata.voicemail),
            (fixed, metadata.fixed_line),
        ]
        self.kinds = [(kind, text) for kind, desc in ordered if (text := _pattern(desc, size)) is not None]
        general = _pattern(metadata.general_desc, size)
        mobile = None if same else _pattern(metadata.mobile, size)
        self.general = re.compile(general) if general else None
        self.mobile = re.compile(mobile) if mobile else None
        # One alternation, a group per type in _number_type_helper's order: fullmatch takes
        # the first alternative that matches the whole number, the type it would return.
        self.types = (
            re.compile("|".join(f"(?P<k{i}>{text})" for i, (_, text) in enumerate(self.kinds)))
            if self.kinds
            else None
        )
        self.kind_of = {f"k{i}": kind for i, (kind, _) in enumerate(self.kinds)}
        leading = metadata.leading_digits
        self.leading = re.compile(leading) if leading else None

    def number_type(self, national: str) -> int:
        if self.general is None or self.general.fullmatch(national) is None:
            return PhoneNumberType.UNKNOWN
        match = self.types.fullmatch(national) if self.types is not None else None
        # The outer group of the alternative taken closes last: it is lastgroup.
        kind = self.kind_of[match.lastgroup or ""] if match is not None else PhoneNumberType.UNKNOWN
        if kind not in _MOBILE_TOO or self.mobile is None or self.mobile.fullmatch(national) is None:
            return kind
        return (
            PhoneNumberType.FIXED_LINE_OR_MOBILE
            if kind == PhoneNumberType.FIXED_LINE
            else PhoneNumberType.MOBILE
        )


# The types _number_type_helper goes on to test the mobile pattern for (when it differs).
_MOBILE_TOO = frozenset({PhoneNumberType.FIXED_LINE, PhoneNumberType.UNKNOWN})


def _pattern(desc: object, size: int) -> str | None:
    """A number description's pattern, None when it cannot match a number of `size` digits
    (_is_number_matching_desc: no description, no pattern, or other possible lengths)."""
    lengths = getattr(desc, "possible_length", ())
    text = getattr(desc, "national_number_pattern", None)
    if desc is None or not text or (lengths and size not in lengths):
        return None
    return str(text)


class _CountryTypes:
    """phonenumbers.number_type of a number of one country code and national length, and the
    region region_code_for_number gives it: a code of one region is that region's; of several,
    each in turn (by its leading digits if it has them, else by being valid there)."""

    def __init__(self, code: int, size: int) -> None:
        codes = COUNTRY_CODE_TO_REGION_CODE.get(code, ())
        self.only: str | None = None
        self.regions: list[tuple[str, _RegionTypes]] = []
        if len(codes) == 1:
            self.only = codes[0]
            metadata = PhoneMetadata.metadata_for_region_or_calling_code(code, codes[0])
            if metadata is not None:
                self.regions.append((codes[0], _RegionTypes(metadata, size)))
            return
        for region in codes:
            metadata = PhoneMetadata.metadata_for_region(region.upper(), None)
            if metadata is not None:
                self.regions.append((region, _RegionTypes(metadata, size)))

    def number_type(self, national: str) -> tuple[int, str | None]:
        """(the number's type, its region) for a national significant number of the length."""
        if self.only is not None:
            if not self.regions:
                return PhoneNumberType.UNKNOWN, self.only
            return self.regions[0][1].number_type(national), self.only
        for code, region in self.regions:
            if region.leading is not None:
                if region.leading.match(national):
                    return region.number_type(national), code
                continue
            kind = region.number_type(national)
            if kind != PhoneNumberType.UNKNOWN:
                return kind, code
        return PhoneNumberType.UNKNOWN, None


@cache
def _country_types(code: int, size: int) -> _CountryTypes:
    return _CountryTypes(code, size)  # on first use: loading the metadata of a code's regions takes a moment


# The lengths of the +1 prefixes phonenumbers has time zones for, longest first: its
# time_zones_for_geographical_number tries every length from its longest down, and a
# length no prefix has cannot match.
_AREA_LENGTHS = sorted({len(prefix) for prefix in TIMEZONE_DATA if prefix.startswith("1")}, reverse=True)
_ZONE_LENGTHS = sorted({len(prefix) for prefix in TIMEZONE_DATA}, reverse=True)
# Most area codes have no longer prefix in the table: for those "1" and the area code
# decide the answer, kept here once found; the others are looked up in full.
_SPLIT_AREAS = frozenset(prefix[:4] for prefix in TIMEZONE_DATA if prefix.startswith("1") and len(prefix) > 4)
_by_area: dict[str, tuple[str, ...]] = {}
_shown_zones: dict[tuple[str, ...], tuple[str, ...]] = {}


def _area_zones(digits: str) -> tuple[str, ...]:
    """number_zones of a geographic +1 number of E.164 `digits` (no "+"): lived_in of its area's zones."""
    area = digits[:4]
    zones = _by_area.get(area)
    if zones is not None:
        return zones
    zones = _prefix_zones(digits, _AREA_LENGTHS)
    if area not in _SPLIT_AREAS:
        _by_area[area] = zones
    return zones


def _prefix_zones(digits: str, lengths: Sequence[int] = _ZONE_LENGTHS) -> tuple[str, ...]:
    """number_zones of a geographic number of E.164 `digits` (no "+"): time_zones_for_geographical_number's
    longest prefix in the table, then lived_in of its zones."""
    found: tuple[str, ...] = UNKNOWN_ZONES
    for length in lengths:
        listed = TIMEZONE_DATA.get(digits[:length])
        if listed is not None:
            found = tuple(listed)
            break
    zones = _shown_zones.get(found)
    if zones is None:
        zones = _shown_zones[found] = lived_in(found, None)
    return zones


_by_country: dict[tuple[int, str | None], tuple[str, ...]] = {}


def _country_zones(code: int, national: str, kind: int, region: str | None) -> tuple[str, ...]:
    """number_zones of a valid number of a type without an area (a mobile, toll-free, ...): its
    country code's zones, those of its region for a mobile; computed once by number_zones itself."""
    key = (code, region if kind == PhoneNumberType.MOBILE else None)
    zones = _by_country.get(key)
    if zones is None:
        number = PhoneNumber(country_code=code, national_number=int(national))
        if len(national) > 1 and national[0] == "0":  # _set_italian_leading_zeros_for_phone_number
            number.italian_leading_zero = True
            number.number_of_leading_zeros = min(len(national) - len(national.lstrip("0")), len(national) - 1)
        zones = _by_country[key] = number_zones(number, kind)
    return zones


def _normalize_all(values: Sequence[str], region: str) -> list[PhoneResult]:
    """normalize_phone over a list: the unit of work sent to a pool process."""
    return [normalize_phone(value, region) for value in values]


# --- the pool of parsing processes ----------------------------------------------------


def default_workers() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return min(2, cpus)


def _can_fork() -> bool:
    """Whether worker processes can be forked safely from here.

    fork starts a worker in milliseconds and shares the loaded package, but is
    only safe while this process has a single thread (a lock held by another
    thread at the fork stays locked in the child forever), and only on Linux
    (macOS system libraries are not fork-safe). Elsewhere the phones are parsed
    in this process: spawning workers would re-import the package in each
    (seconds), and re-run the caller's main module, which a script that does
    not guard it with `if __name__ == "__main__"` does not survive.
    """
    return sys.platform.startswith("linux") and threading.active_count() == 1


def _pool(workers: int) -> ProcessPoolExecutor:
    context = multiprocessing.get_context("fork")
    return ProcessPoolExecutor(
        workers, mp_context=context, initializer=prepare_child, initargs=(os.getpid(),)
    )


ParsedChunk = tuple[Chunk, list[str], dict[str, PhoneResult]]  # a chunk, its phone cells, their results


@dataclass
class PhoneColumns:
    """The PhoneResults of a chunk's rows, in row order, as three columns (no tuple per row)."""

    e164: list[str]
    zones: list[tuple[str, ...]]
    errors: list[str]


# A worker's answer for a chunk's distinct phones, in their order: the E.164s as one text
# ("\n" between them, "" for an invalid one), each one's zones as an index (4-byte
# machine ints) into a table of the distinct zone tuples, and the errors where there are
# some (positions and messages). Unpickled, it is a few objects where a list of
# PhoneResults was ~3 per phone: reading it was ~20% of the main process's samples.
_Answer = tuple[str, tuple[tuple[str, ...], ...], bytes, list[int], list[str]]


def _parse_distinct(phones: str | list[str], region: str) -> _Answer:
    """A chunk's distinct phones ("\n" between them, or a list when one holds a newline)
    parsed: the unit of work of a pool process."""
    values = phones.split("\n") if isinstance(phones, str) else phones
    results = _normalize_all(values, region)
    table: dict[tuple[str, ...], int] = {}
    at = array("I", [table.setdefault(zones, len(table)) for _, zones, _ in results])
    wrong = [i for i, result in enumerate(results) if result[2]]
    return (
        "\n".join([result[0] for result in results]),
        tuple(table),
        at.tobytes(),
        wrong,
        [results[i][2] for i in wrong],
    )


def _sent(distinct: list[str]) -> str | list[str]:
    """What is sent of a chunk's distinct phones: one text, or the list when a cell holds a newline
    (a quoted CSV cell may)."""
    text = "\n".join(distinct)
    return text if text.count("\n") == len(distinct) - 1 else distinct


def _columns(answer: _Answer, codes: npt.NDArray[np.intp]) -> PhoneColumns:
    """The rows' columns from the answer for the distinct phones: `codes` is each row's distinct one."""
    text, table, at, wrong, messages = answer
    e164 = np.array(text.split("\n"), dtype=object)
    zone_table = np.empty(len(table), dtype=object)
    zone_table[:] = table
    zones = zone_table[np.frombuffer(at, dtype=np.uint32)]
    errors = np.full(len(e164), "", dtype=object)
    errors[wrong] = messages
    return PhoneColumns(e164[codes].tolist(), zones[codes].tolist(), errors[codes].tolist())


def with_phones(chunks: Iterable[Chunk], phone: str, region: str, workers: int) -> Iterator[ParsedChunk]:
    """Each chunk, its phone cells and their PhoneResults, in file order (see with_phone_columns)."""
    for chunk, columns in with_phone_columns(chunks, phone, region, workers):
        phones = chunk.frame[phone].tolist()
        parsed = zip(columns.e164, columns.zones, columns.errors, strict=True)
        results = dict(zip(phones, parsed, strict=True))
        yield chunk, phones, results


def with_phone_columns(
    chunks: Iterable[Chunk], phone: str, region: str, workers: int
) -> Iterator[tuple[Chunk, PhoneColumns]]:
    """Each chunk and its rows' PhoneResults as columns, in file order.

    A file of one chunk is parsed here; a longer one by `workers` forked
    processes, a few chunks ahead of the caller (or here, see _can_fork).
    """
    it = iter(chunks)
    head = [chunk for chunk in (next(it, None), next(it, None)) if chunk is not None]
    parser = _Parser(phone, region)
    if len(head) < 2 or workers < 2 or not _can_fork():
        for chunk in (*head, *it):
            yield parser.inline(parser.batch(chunk))
        return
    yield from parser.pooled(head, it, workers)


@dataclass
class _Batch:
    chunk: Chunk
    codes: npt.NDArray[np.intp]  # each row's distinct phone
    distinct: list[str]
    future: Future[_Answer] | None = None


class _Parser:
    """Parses the phone column of chunks, here or in a pool that may break (a worker killed)."""

    def __init__(self, phone: str, region: str) -> None:
        self.phone = phone
        self.region = region
        self.broken = False

    def batch(self, chunk: Chunk) -> _Batch:
        # factorize: the distinct phones in the order they first appear (as dict.fromkeys
        # gives them) and each row's, in C; no cell is missing (every cell is a str).
        codes, distinct = pd.factorize(chunk.frame[self.phone], use_na_sentinel=False)
        return _Batch(chunk, codes, distinct.tolist())

    def inline(self, b: _Batch) -> tuple[Chunk, PhoneColumns]:
        return b.chunk, _columns(_parse_distinct(b.distinct, self.region), b.codes)

    def pooled(
        self, head: list[Chunk], rest: Iterator[Chunk], workers: int
    ) -> Iterator[tuple[Chunk, PhoneColumns]]:
        pool = _pool(workers)
        pending: deque[_Batch] = deque()
        try:
            # The workers are forked at the first submit. Frozen, the objects this process
            # has are never traversed by a worker's garbage collector, whose writes to their
            # headers copied the pages they are in: ~12 MiB less PSS a worker (measured).
            gc.freeze()
            try:
                pending.append(self._submit(pool, head[0]))
            finally:
                gc.unfreeze()
            for chunk in head[1:]:
                pending.append(self._submit(pool, chunk))
            for chunk in rest:
                # Keep every worker busy and one chunk queued behind them.
                while len(pending) > workers:
                    yield self._finish(pending.popleft())
                pending.append(self._submit(pool, chunk))
            while pending:
                yield self._finish(pending.popleft())
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _submit(self, pool: ProcessPoolExecutor, chunk: Chunk) -> _Batch:
        b = self.batch(chunk)
        if not self.broken and b.distinct:
            try:
                b.future = pool.submit(_parse_distinct, _sent(b.distinct), self.region)
            except BrokenProcessPool:
                self.broken = True
        return b

    def _finish(self, b: _Batch) -> tuple[Chunk, PhoneColumns]:
        if b.future is not None and not self.broken:
            try:
                answer = b.future.result()
            except BrokenProcessPool:
                self.broken = True  # a worker died (out of memory?): carry on here
            else:
                return b.chunk, _columns(answer, b.codes)
        return self.inline(b)
