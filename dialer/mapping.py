"""Rows -> leads: column mapping, E.164 phones, time zones, custom variables, duplicates, DNC.

Each row goes through the same checks, in this order, and the first that fails
decides its status and `error`:

1. the row is whole (a CSV row with text beyond the last header is refused, and
   so is an XLSX row whose phone or name is a formula with no saved value),
2. the phone reads as a valid number (E.164 via phonenumbers and `default_region`),
3. its time zone is an IANA name, or can be inferred from the number,
4. it has a name, when the API needs one (mode "call"),
5. the number is not on a do-not-call list (`suppressed`),
6. no earlier dialable row has the same number (`duplicate`).

Phone parsing is the expensive part: ~25 us a number through phonenumbers,
~6 us through the fast path below for the common North American shapes. Large
files are read in chunks whose distinct phone strings are parsed by a pool of
(forked) processes while this process reads the next chunk; this process keeps
the file order and applies duplicates and the do-not-call lists, which need
to see every row in turn.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import sys
import threading
import unicodedata
import zoneinfo
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
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
from phonenumbers.phonenumberutil import _number_type_helper
from phonenumbers.timezone import (
    UNKNOWN_TIMEZONE,
    time_zones_for_geographical_number,
    time_zones_for_number,
)

from dialer.config import Campaign
from dialer.errors import LeadsFileError
from dialer.load import Chunk, LeadsFile, open_leads

MappedStatus = Literal["pending", "invalid", "duplicate", "suppressed"]

CHUNK_ROWS = 50_000
INFERRED = "(inferred from the number)"


@dataclass(frozen=True)
class ColumnMap:
    """Which header of the leads file feeds which field. Names are headers as in the file."""

    phone: str
    name: tuple[str, ...]  # one column, or ("First Name", "Last Name") joined by a space
    timezone: str | None
    email: str | None
    variables: tuple[str, ...]  # custom variables, in file order

    def describe(self) -> list[tuple[str, str]]:
        """(field, column(s)) pairs for `validate` to print."""
        return [
            ("phone", self.phone),
            ("name", " + ".join(self.name) if self.name else "(none)"),
            ("timezone", self.timezone or INFERRED),
            ("email", self.email or "(none)"),
            ("variables", ", ".join(self.variables) if self.variables else "(none)"),
        ]


@dataclass(frozen=True, slots=True)
class Lead:
    """One data row of the leads file, mapped.

    `row` is the spreadsheet row number: the header is row 1, so the first data
    row is 2 (what Excel shows; used in every message). Blank rows are skipped
    but counted, so `row` is the number Excel shows for the row.
    """

    row: int
    values: tuple[str, ...]  # the original cells, in header order, as read
    status: MappedStatus
    error: str = ""  # why, for invalid / duplicate / suppressed
    phone: str = ""  # E.164, "" when it could not be read
    name: str = ""
    email: str = ""
    timezones: tuple[str, ...] = ()  # IANA names: the column's value, or inferred from the number
    variables: dict[str, str] = field(default_factory=dict)


# --- columns -------------------------------------------------------------------------

# Common header names, best first, compared after _compact() (accents, case,
# spaces and punctuation removed: "E-mail" and "e_mail" are both "email").
PHONE_NAMES = (
    "phone",
    "phonenumber",
    "phoneno",
    "mobile",
    "mobilenumber",
    "mobilephone",
    "cell",
    "cellphone",
    "cellnumber",
    "tel",
    "telephone",
    "telephonenumber",
    "contactnumber",
    "contactphone",
    "whatsapp",
    "whatsappnumber",
    "msisdn",
    "telefono",
    "celular",
    "movil",
    "handy",
    "number",
)
NAME_NAMES = (
    "name",
    "fullname",
    "contactname",
    "leadname",
    "customername",
    "clientname",
    "contact",
)
FIRST_NAMES = ("firstname", "first", "givenname", "forename", "fname")
LAST_NAMES = ("lastname", "last", "surname", "familyname", "lname")
TIMEZONE_NAMES = ("timezone", "tz", "timezonename", "ianatimezone")
EMAIL_NAMES = ("email", "emailaddress", "mail", "mailaddress")
# A header holding one of these words is probably a phone even when not named
# exactly ("Primary Phone"), unless it is about the phone ("Phone Type").
_PHONE_WORDS = ("phone", "mobile", "cell")
_NOT_PHONE_WORDS = ("type", "ext", "status", "country", "code", "verified", "carrier")


def _compact(header: str) -> str:
    decomposed = unicodedata.normalize("NFKD", header.casefold())
    return "".join(ch for ch in decomposed if ch.isalnum() and ch.isascii())


def _listed(headers: Sequence[str], limit: int = 25) -> str:
    shown = ", ".join(f'"{h}"' for h in headers[:limit])
    return shown + (f", ... ({len(headers)} in all)" if len(headers) > limit else "")


def _find(path: Path, headers: Sequence[str], wanted: str, key: str) -> str:
    """The header named `wanted`: exactly, else ignoring case and surrounding spaces."""
    if wanted in headers:
        return wanted
    folded = wanted.strip().casefold()
    for header in headers:
        if header.strip().casefold() == folded:
            return header
    raise LeadsFileError(f'{path}: column "{wanted}" ({key}) not found; headers are: {_listed(headers)}')


def _guess(headers: Sequence[str], names: Sequence[str], used: set[str]) -> str | None:
    """The free header matching the best-ranked common name."""
    compacted = [(_compact(h), h) for h in headers if h not in used]
    for name in names:
        for compact, header in compacted:
            if compact == name.replace(" ", ""):
                return header
    return None


def _guess_phone(headers: Sequence[str], used: set[str]) -> str | None:
    found = _guess(headers, PHONE_NAMES, used)
    if found is not None:
        return found
    for header in headers:
        compact = _compact(header)
        if (
            header not in used
            and any(word in compact for word in _PHONE_WORDS)
            and not any(word in compact for word in _NOT_PHONE_WORDS)
        ):
            return header
    return None


def _optional_column(
    path: Path,
    headers: Sequence[str],
    given: str | None,
    key: str,
    names: Sequence[str],
    used: set[str],
) -> str | None:
    """The [columns] entry if set (it must exist), else a header with a common name, or None."""
    if given is not None:
        column: str | None = _find(path, headers, given, f"columns.{key}")
    else:
        column = _guess(headers, names, used)
    if column is not None:
        used.add(column)
    return column


def resolve_columns(campaign: Campaign, headers: list[str]) -> ColumnMap:
    """Map headers to fields from [columns] or by common names; LeadsFileError names a missing column.

    Keys set in [columns] must name existing headers (case and surrounding
    spaces do not matter); keys left out are matched by common names. A phone
    column is always required, a name column in mode "call" (the API needs it).
    """
    path, given = campaign.leads, campaign.columns
    used: set[str] = set()

    if given.phone is not None:
        phone: str | None = _find(path, headers, given.phone, "columns.phone")
    else:
        phone = _guess_phone(headers, used)
    if phone is None:
        raise LeadsFileError(
            f"{path}: no phone column found; set [columns] phone to one of the headers: {_listed(headers)}"
        )
    used.add(phone)

    name: tuple[str, ...]
    if given.name is not None:
        wanted = [given.name] if isinstance(given.name, str) else given.name
        name = tuple(_find(path, headers, n, "columns.name") for n in wanted)
    else:
        full = _guess(headers, NAME_NAMES, used)
        first = _guess(headers, FIRST_NAMES, used)
        last = _guess(headers, LAST_NAMES, used | ({first} if first else set()))
        if first is not None:
            # "First Name" + "Last Name" beats a "Name" column only when both halves exist:
            # a lone "First Name" beside a "Name" column is usually a nickname.
            name = (first, last) if last else ((full,) if full else (first,))
        else:
            name = (full,) if full else ()
    if not name and campaign.mode == "call":
        raise LeadsFileError(
            f"{path}: no name column found and the API requires a name; set [columns] name "
            f'to a header or a list like ["First Name", "Last Name"]; headers are: '
            f"{_listed(headers)}"
        )
    used.update(name)

    timezone = _optional_column(path, headers, given.timezone, "timezone", TIMEZONE_NAMES, used)
    email = _optional_column(path, headers, given.email, "email", EMAIL_NAMES, used)

    if given.variables is not None:
        listed = {_find(path, headers, v, "columns.variables") for v in given.variables}
        variables = tuple(h for h in headers if h in listed)
    else:
        variables = tuple(h for h in headers if h not in used)
    return ColumnMap(phone=phone, name=name, timezone=timezone, email=email, variables=variables)


# --- phones and time zones -----------------------------------------------------------

# (E.164, time zones inferred from the number, error). The zones are those of
# phonenumbers' map, ("Etc/Unknown",) when it has none; "" error when valid.
PhoneResult = tuple[str, tuple[str, ...], str]

# "1.23457E+10" is what Excel writes for a long number in a General cell saved
# as CSV: the digits after the sixth are gone for good.
_SCIENTIFIC = re.compile(r"^[+-]?\d+(?:[.,]\d+)?[eE][+-]?\d+$")
# "4155550141.0": a number column that went through a float on its way out.
_INTEGRAL_FLOAT = re.compile(r"^(\+?\d+)\.0+$")
_UNKNOWN_ZONES = (UNKNOWN_TIMEZONE,)

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

# Repeated phone strings across chunks (the same contact exported twice) are
# parsed once; the cache is dropped when full to keep memory flat.
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
    key = (raw, region)
    cached = _phone_cache.get(key)
    if cached is not None:
        return cached
    result = _normalize(raw, region)
    if len(_phone_cache) >= _CACHE_LIMIT:
        _phone_cache.clear()
    _phone_cache[key] = result
    return result


def _normalize(raw: str, region: str) -> PhoneResult:
    value = raw.strip()
    if not value:
        return "", (), "missing phone number"
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
    number = _nanp_number(value, region)
    kind = PhoneNumberType.UNKNOWN if number is None else _nanp_type(number)
    if number is None or kind == PhoneNumberType.UNKNOWN:
        # The general path; also for what the fast one refused, so that
        # messages come from one place.
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
    if phonenumbers.is_number_type_geographical(kind, number.country_code or 0):
        zones = tuple(time_zones_for_geographical_number(number))
    else:
        # Toll-free and other non-geographic numbers: every zone of the country.
        zones = tuple(time_zones_for_number(number))
    return e164, zones, ""


# The fast path. Most numbers in a North American list are written in a handful
# of shapes: "(415) 555-0132", "415.555.0132", "+1 415 555 0132", "14155550132".
# phonenumbers.parse() spends ~12 us on such a string; this regex ~1 us, and
# reads it as the same number (the national prefix 1 of every NANP region is
# dropped, as parse() does). Only a number that then proves valid is taken.
_NANP_SHAPE = re.compile(r"(?:(\+\s*)?(1)[\s.\-]*)?\(?\s*([2-9]\d\d)\s*\)?[\s.\-]*(\d{3})[\s.\-]*(\d{4})")
_NANP_REGIONS = frozenset(COUNTRY_CODE_TO_REGION_CODE.get(1, ()))
_US = PhoneMetadata.metadata_for_region("US")
# number_type() first asks which region a number belongs to, by trying each
# region of its country code in turn; for +1 the US comes first and has no
# leading-digits rule, so a number the US metadata accepts is a US number and
# its type is what the US metadata says. Checked here rather than assumed, so
# a future phonenumbers that changes this quietly turns the shortcut off.
_US_FIRST = (
    COUNTRY_CODE_TO_REGION_CODE.get(1, ("",))[0] == "US" and _US is not None and _US.leading_digits is None
)


def _nanp_number(value: str, region: str) -> PhoneNumber | None:
    match = _NANP_SHAPE.fullmatch(value)
    if match is None:
        return None
    plus, one = match[1], match[2]
    if plus and not one:
        return None
    if not plus and region not in _NANP_REGIONS:
        return None  # "415 555 0132" is a national number of `region`, not +1
    return PhoneNumber(country_code=1, national_number=int(match[3] + match[4] + match[5]))


def _nanp_type(number: PhoneNumber) -> int:
    if _US_FIRST and _US is not None:
        kind = _number_type_helper(str(number.national_number), _US)
        if kind != PhoneNumberType.UNKNOWN:
            return kind
    return phonenumbers.number_type(number)


def _normalize_all(values: Sequence[str], region: str) -> list[PhoneResult]:
    """normalize_phone over a list: the unit of work sent to a pool process."""
    return [normalize_phone(value, region) for value in values]


_zone_names: dict[str, str] = {}


def canonical_zone(value: str) -> str | None:
    """The IANA name for `value` ignoring case ("america/new_york" -> "America/New_York"), or None."""
    if not _zone_names:
        _zone_names.update({name.casefold(): name for name in zoneinfo.available_timezones()})
    return _zone_names.get(value.strip().casefold())


# --- the pool ------------------------------------------------------------------------


def _worker_init() -> None:
    # Ctrl-C goes to the whole process group; the parent alone decides what to
    # do (it stops the pool), and a SIGTERM handler inherited by fork must not
    # keep a worker alive.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _default_workers() -> int:
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
    return ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init)


@dataclass
class _Batch:
    chunk: Chunk
    phones: list[str]
    unique: list[str]
    future: Future[list[PhoneResult]] | None = None


def _with_phones(
    chunks: Iterable[Chunk], phone: str, region: str, workers: int
) -> Iterator[tuple[Chunk, list[str], dict[str, PhoneResult]]]:
    """Each chunk, its phone cells and their PhoneResults, in file order.

    A file of one chunk is parsed here; a longer one by `workers` forked
    processes, a few chunks ahead of the caller (or here, see _can_fork).
    """
    it = iter(chunks)

    def batch(chunk: Chunk) -> _Batch:
        phones = chunk.frame[phone].tolist()
        return _Batch(chunk, phones, list(dict.fromkeys(phones)))

    def inline(b: _Batch) -> tuple[Chunk, list[str], dict[str, PhoneResult]]:
        return b.chunk, b.phones, dict(zip(b.unique, _normalize_all(b.unique, region), strict=True))

    first = next(it, None)
    if first is None:
        return
    second = next(it, None)
    if second is None or workers < 2 or not _can_fork():
        yield inline(batch(first))
        if second is not None:
            yield inline(batch(second))
        for chunk in it:
            yield inline(batch(chunk))
        return

    pool = _pool(workers)
    broken = False
    pending: deque[_Batch] = deque()

    def submit(chunk: Chunk) -> None:
        nonlocal broken
        b = batch(chunk)
        if not broken:
            try:
                b.future = pool.submit(_normalize_all, b.unique, region)
            except BrokenProcessPool:
                broken = True
        pending.append(b)

    def finish(b: _Batch) -> tuple[Chunk, list[str], dict[str, PhoneResult]]:
        nonlocal broken
        if b.future is not None and not broken:
            try:
                results = b.future.result()
            except BrokenProcessPool:
                broken = True  # a worker died (out of memory?): carry on here
            else:
                return b.chunk, b.phones, dict(zip(b.unique, results, strict=True))
        return inline(b)

    try:
        submit(first)
        submit(second)
        for chunk in it:
            # Keep every worker busy and one chunk queued behind them.
            while len(pending) > workers:
                yield finish(pending.popleft())
            submit(chunk)
        while pending:
            yield finish(pending.popleft())
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# --- do-not-call lists ---------------------------------------------------------------

_suppression_cache: dict[tuple[object, ...], dict[str, str]] = {}


def _suppression_key(campaign: Campaign) -> tuple[object, ...]:
    stamps: list[object] = [campaign.default_region]
    for path in campaign.suppress:
        try:
            stat = path.stat()
            stamps.append((str(path), stat.st_mtime_ns, stat.st_size))
        except OSError:
            stamps.append((str(path), None))
    return tuple(stamps)


def _suppression_sources(campaign: Campaign, workers: int | None = None) -> dict[str, str]:
    """E.164 -> the name of the first do-not-call file listing it."""
    key = _suppression_key(campaign)
    cached = _suppression_cache.get(key)
    if cached is not None:
        return cached
    numbers: dict[str, str] = {}
    for path in campaign.suppress:
        numbers_in = _read_suppression_file(path, campaign.default_region, workers)
        for number in numbers_in:
            numbers.setdefault(number, path.name)
    _suppression_cache.clear()  # one campaign at a time: keep only the latest
    _suppression_cache[key] = numbers
    return numbers


def _read_suppression_file(path: Path, region: str, workers: int | None) -> Iterator[str]:
    if path.is_file() and path.stat().st_size == 0:
        return  # an empty list: nobody has opted out yet
    try:
        dnc = open_leads(path)
    except LeadsFileError as exc:
        raise LeadsFileError(f"{exc} (a do-not-call list in suppress)") from None
    first_cell = dnc.headers[0]
    headerless = normalize_phone(first_cell, region)[0] != ""
    if headerless:
        # A bare list of numbers: its "header" is the first number.
        column = dnc.headers[0]
        yield normalize_phone(first_cell, region)[0]
    else:
        column = _guess_phone(dnc.headers, set()) or dnc.headers[0]
    try:
        for _, _, results in _with_phones(
            dnc.read(CHUNK_ROWS), column, region, _default_workers() if workers is None else workers
        ):
            for e164, _, error in results.values():
                if not error:
                    yield e164
    except LeadsFileError as exc:
        raise LeadsFileError(f"{exc} (a do-not-call list in suppress)") from None


def suppression_sources(campaign: Campaign) -> dict[str, str]:
    """Every number (as E.164) on the campaign's do-not-call lists -> the list's file name."""
    return _suppression_sources(campaign)


def load_suppression(campaign: Campaign) -> frozenset[str]:
    """Every number (as E.164) on the campaign's do-not-call lists.

    Each file may be CSV or XLSX, with a header (the phone column is found by
    common names, else the first column is used) or a bare list of numbers.
    Numbers in any format are read with `default_region`; cells that are not
    valid numbers are ignored. A missing file is a LeadsFileError.
    """
    return frozenset(_suppression_sources(campaign))


# --- the mapping ---------------------------------------------------------------------


def map_leads(
    campaign: Campaign,
    leads: LeadsFile,
    columns: ColumnMap,
    *,
    chunk_rows: int = CHUNK_ROWS,
    workers: int | None = None,
) -> Iterator[Lead]:
    """Every row of the file as a Lead, in file order, with duplicates and DNC applied.

    Streams: memory holds a few chunks and the numbers seen so far. `workers`
    is how many processes parse phones (default: one per CPU, at most 2); a
    file of a single chunk, or a process with threads running, parses them
    in this process. Pass workers=1 to never start a process.
    """
    workers = _default_workers() if workers is None else workers
    mapper = _Mapper(campaign, leads, columns, _suppression_sources(campaign, workers))
    stream = _with_phones(leads.read(chunk_rows), columns.phone, campaign.default_region, workers)
    for chunk, phones, results in stream:
        yield from mapper.chunk(chunk, phones, results)


class _Mapper:
    """The checks of the module docstring, with what they remember across chunks."""

    def __init__(
        self, campaign: Campaign, leads: LeadsFile, columns: ColumnMap, suppressed: dict[str, str]
    ) -> None:
        self.headers = leads.headers
        at = {header: i for i, header in enumerate(leads.headers)}
        self.name_at = [at[h] for h in columns.name]
        self.zone_at = at[columns.timezone] if columns.timezone is not None else None
        self.email_at = at[columns.email] if columns.email is not None else None
        self.variable_names = columns.variables
        self.variable_at = [at[h] for h in columns.variables]
        self.phone = columns.phone
        self.name_columns = columns.name
        self.needs_name = campaign.mode == "call"
        self.delimiter = leads.delimiter or ","
        self.suppressed = suppressed
        self.first_rows = _FirstRows()  # the one memory that grows with the file
        self.zones: dict[str, str | None] = {}  # the time-zone column's texts, checked

    def chunk(self, chunk: Chunk, phones: list[str], results: dict[str, PhoneResult]) -> Iterator[Lead]:
        """The Leads of one chunk, in file order."""
        frame = chunk.frame
        count = len(frame)
        if not count:
            return
        rows_at = (frame.index + 2).tolist()  # spreadsheet rows (blank rows leave gaps)
        # Column-wise first: a list comprehension per column is several times
        # cheaper than the same work done cell by cell inside the row loop.
        cells = [frame[h].tolist() for h in self.headers]
        names = _join_names([cells[i] for i in self.name_at], count)
        emails = [v.strip() for v in cells[self.email_at]] if self.email_at is not None else [""] * count
        zone_texts = cells[self.zone_at] if self.zone_at is not None else [""] * count
        if self.variable_at:
            variable_rows: Iterable[tuple[str, ...]] = zip(*(cells[i] for i in self.variable_at), strict=True)
        else:
            variable_rows = [()] * count
        verdicts = self._verdicts(chunk, rows_at, phones, results, names, zone_texts)
        names_of = self.variable_names
        rows = zip(zip(*cells, strict=True), names, emails, variable_rows, verdicts, strict=True)
        for offset, (values, name, email, variables, verdict) in enumerate(rows):
            status, error, e164, zones = verdict
            yield Lead(
                row=rows_at[offset],
                values=values,
                status=status,
                error=error,
                phone=e164,
                name=name,
                email=email,
                timezones=zones if status != "invalid" else (),
                variables=dict(zip(names_of, variables, strict=True)),
            )

    def _verdicts(
        self,
        chunk: Chunk,
        rows_at: list[int],
        phones: list[str],
        results: dict[str, PhoneResult],
        names: list[str],
        zone_texts: list[str],
    ) -> list[_Verdict]:
        """(status, error, E.164, zones) of each row of a chunk, in the order of the module docstring."""
        verdicts: list[_Verdict] = []
        dialable: list[int] = []  # offsets of the rows only a duplicate could still stop
        for offset, (phone, name, zone_text) in enumerate(zip(phones, names, zone_texts, strict=True)):
            e164, zones, error = results[phone]
            if chunk.unsaved and rows_at[offset] - 2 in chunk.unsaved:
                error = self._unsaved(chunk.unsaved[rows_at[offset] - 2]) or error
            if chunk.overflow and rows_at[offset] - 2 in chunk.overflow:
                error = (
                    f"the row has {chunk.overflow[rows_at[offset] - 2]} cells but the header has "
                    f"{len(self.headers)}: a value may hold an unquoted {self.delimiter!r}"
                )
            elif not error:
                error, zones = self._check(e164, zones, zone_text, name)
                if not error:
                    source = self.suppressed.get(e164)
                    if source is not None:
                        verdicts.append(("suppressed", f"on the do-not-call list {source}", e164, zones))
                        continue
                    dialable.append(offset)
                    verdicts.append(("pending", "", e164, zones))
                    continue
            verdicts.append(("invalid", error, e164, zones))
        if dialable:
            firsts = self.first_rows.claim(
                [int(verdicts[i][2][1:]) for i in dialable], [rows_at[i] for i in dialable]
            )
            for offset, first in zip(dialable, firsts, strict=True):
                if first:
                    _, _, e164, zones = verdicts[offset]
                    verdicts[offset] = ("duplicate", f"same number as row {first}", e164, zones)
        return verdicts

    def _unsaved(self, formulas: list[str]) -> str:
        """The error of a row whose phone or name is a formula with no saved value (see dialer.load)."""
        needed = [h for h in formulas if h == self.phone or h in self.name_columns]
        if not needed:
            return ""
        return (
            f"{' and '.join(needed)}: a formula with no saved value (the file was written without"
            " computing it); open and save it in Excel, or paste the values"
        )

    def _check(
        self, e164: str, zones: tuple[str, ...], zone_text: str, name: str
    ) -> tuple[str, tuple[str, ...]]:
        """(error, time zones) of a row whose phone is valid: its zone, then its name."""
        zone_text = zone_text.strip()
        if zone_text:
            zone = self.zones.get(zone_text, "")
            if zone == "":
                if len(self.zones) >= _CACHE_LIMIT:
                    self.zones.clear()  # a column of free text, mapped as zones by mistake
                zone = self.zones[zone_text] = canonical_zone(zone_text)
            if zone is None:
                return f'unknown time zone "{zone_text}" (use an IANA name like America/New_York)', zones
            zones = (zone,)
        elif zones == _UNKNOWN_ZONES:
            return f"cannot infer a time zone for {e164}; add a time zone column", zones
        if self.needs_name and not name:
            return "missing name (the API requires one)", zones
        return "", zones


# (status, error, E.164, time zones) of one row
_Verdict = tuple[MappedStatus, str, str, tuple[str, ...]]


class _FirstRows:
    """Each E.164 number seen so far with the row that claimed it: two sorted numpy arrays.

    16 bytes a number where a dict of strings takes ~170, so that memory stays
    flat as the file grows (16 MB for a million distinct numbers). Numbers are
    the E.164 digits as integers (15 digits at most: they fit in 64 bits).
    """

    def __init__(self) -> None:
        self.numbers = np.empty(0, dtype=np.int64)
        self.rows = np.empty(0, dtype=np.int64)

    def claim(self, numbers: Sequence[int], rows: Sequence[int]) -> list[int]:
        """For each (number, row), in file order: 0 if it is the first with that number, else
        the first row with it. The new numbers are remembered with their first row."""
        wanted = np.asarray(numbers, dtype=np.int64)
        at_rows = np.asarray(rows, dtype=np.int64)
        firsts = np.zeros(len(wanted), dtype=np.int64)
        known = np.zeros(len(wanted), dtype=bool)
        if len(self.numbers):
            at = np.minimum(np.searchsorted(self.numbers, wanted), len(self.numbers) - 1)
            known = self.numbers[at] == wanted
            firsts[known] = self.rows[at[known]]
        new = np.flatnonzero(~known)
        if len(new):
            # np.unique's index is each value's first occurrence: the earliest row.
            unique, first_at, inverse = np.unique(wanted[new], return_index=True, return_inverse=True)
            first_rows = at_rows[new][first_at]
            owner = first_rows[inverse.ravel()]
            firsts[new] = np.where(at_rows[new] == owner, 0, owner)
            where = np.searchsorted(self.numbers, unique)
            self.numbers = np.insert(self.numbers, where, unique)
            self.rows = np.insert(self.rows, where, first_rows)
        return [int(first) for first in firsts]


def _join_names(columns: list[list[str]], count: int) -> list[str]:
    """The name of each row: its name cells, trimmed, joined by a space."""
    if not columns:
        return [""] * count
    if len(columns) == 1:
        return [v.strip() for v in columns[0]]
    parts = [[v.strip() for v in column] for column in columns]
    return [" ".join(p for p in row if p) for row in zip(*parts, strict=True)]
