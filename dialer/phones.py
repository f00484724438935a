"""Phone cells -> E.164 numbers and the time zones they imply, parsed in parallel for large files.

Phone parsing is the expensive part of mapping a file: ~25 us a number through
phonenumbers, ~6 us through the fast path below for the common North American
shapes (test_fast_path_agrees_with_phonenumbers holds the two to the same
answers). Large files are read in chunks whose distinct phone strings are
parsed by a pool of (forked) processes while the caller reads the next chunk.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from functools import cache

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
    # The fast path first: the shapes it takes hold no "E" and end in a digit, so neither
    # check below could have refused or changed them.
    fast = _nanp_result(value, region)
    if fast is not None:
        return fast
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
        fast = _nanp_result(value, region)
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
_NANP_SHAPE = re.compile(
    r"(?:(\+\s*)?(1)[\s.\-]*)?\(?\s*([2-9]\d\d)\s*\)?[\s.\-]*(\d{3})[\s.\-]*(\d{4})"
    # An extension written the common ways ("ext. 12", "x12"): phonenumbers drops it
    # before it reads the number, as the dialer does (test_fast_path_reads_extensions).
    r"(?:[ \t]*(?:ext\.?|x)[ \t]*\d{1,6})?"
)
_NANP_REGIONS = frozenset(COUNTRY_CODE_TO_REGION_CODE.get(1, ()))
# The number types phonenumbers.is_number_type_geographical calls geographical for +1.
_GEOGRAPHICAL = frozenset(
    kind
    for kind in vars(PhoneNumberType).values()
    if isinstance(kind, int) and phonenumbers.is_number_type_geographical(kind, 1)
)


def _nanp_result(value: str, region: str) -> PhoneResult | None:
    """The result of a valid NANP number in a common shape (~3 us), or None: the general path decides.

    The same answer as the general path, reached without phonenumbers' per-call
    overhead: the shape regex, each NANP region's types in one compiled regex
    (_NanpTypes), and the time zones from the prefix table phonenumbers itself uses.
    """
    match = _NANP_SHAPE.fullmatch(value)
    if match is None:
        return None
    plus, one = match[1], match[2]
    if (plus and not one) or (not plus and region not in _NANP_REGIONS):
        return None
    national = match[3] + match[4] + match[5]
    kind = _nanp_types().number_type(national)
    if kind == PhoneNumberType.UNKNOWN:
        return None  # invalid: the general path says why
    if kind not in _GEOGRAPHICAL:
        number = PhoneNumber(country_code=1, national_number=int(national))
        return "+1" + national, number_zones(number, kind), ""
    return "+1" + national, _area_zones("1" + national), ""


class _RegionTypes:
    """phonenumbers' _number_type_helper for one region's metadata and a 10-digit national number."""

    def __init__(self, metadata: PhoneMetadata) -> None:
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
        self.kinds = [(kind, text) for kind, desc in ordered if (text := _pattern(desc)) is not None]
        general = _pattern(metadata.general_desc)
        mobile = None if same else _pattern(metadata.mobile)
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


def _pattern(desc: object) -> str | None:
    """A number description's pattern, None when it cannot match a 10-digit number
    (_is_number_matching_desc: no description, no pattern, or other possible lengths)."""
    lengths = getattr(desc, "possible_length", ())
    text = getattr(desc, "national_number_pattern", None)
    if desc is None or not text or (lengths and 10 not in lengths):
        return None
    return str(text)


class _NanpTypes:
    """phonenumbers.number_type of a +1 number: its region found as region_code_for_number does
    (each region in turn: by its leading digits if it has them, else by being valid there),
    then its type in that region's metadata."""

    def __init__(self) -> None:
        self.regions: list[_RegionTypes] = []
        for code in COUNTRY_CODE_TO_REGION_CODE.get(1, ()):
            metadata = PhoneMetadata.metadata_for_region(code.upper(), None)
            if metadata is not None:
                self.regions.append(_RegionTypes(metadata))

    def number_type(self, national: str) -> int:
        for region in self.regions:
            if region.leading is not None:
                if region.leading.match(national):
                    return region.number_type(national)
                continue
            kind = region.number_type(national)
            if kind != PhoneNumberType.UNKNOWN:
                return kind
        return PhoneNumberType.UNKNOWN


@cache
def _nanp_types() -> _NanpTypes:
    return _NanpTypes()  # on first use: loading the metadata of every +1 region takes a moment


# The lengths of the +1 prefixes phonenumbers has time zones for, longest first: its
# time_zones_for_geographical_number tries every length from its longest down, and a
# length no prefix has cannot match.
_AREA_LENGTHS = sorted({len(prefix) for prefix in TIMEZONE_DATA if prefix.startswith("1")}, reverse=True)
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
    found: tuple[str, ...] = UNKNOWN_ZONES
    for length in _AREA_LENGTHS:
        listed = TIMEZONE_DATA.get(digits[:length])
        if listed is not None:
            found = tuple(listed)
            break
    zones = _shown_zones.get(found)
    if zones is None:
        zones = _shown_zones[found] = lived_in(found, None)
    if area not in _SPLIT_AREAS:
        _by_area[area] = zones
    return zones


def _normalize_all(values: Sequence[str], region: str) -> list[PhoneResult]:
    """normalize_phone over a list: the unit of work sent to a pool process."""
    return [normalize_phone(value, region) for value in values]


# --- the pool of parsing processes ----------------------------------------------------

# prctl(2) option: the signal the kernel sends this process when its parent dies.
_PR_SET_PDEATHSIG = 1
# A lock taken with flock() or as an open-file-description lock belongs to the
# open file, which fork shares with the child: as long as any child keeps its
# copy of the descriptor open, the lock outlives the process that took it.
_SHARED_LOCKS = ("FLOCK", "OFDLCK")


def _worker_init(parent: int) -> None:
    """Prepare a forked worker: die with the parent, hold none of its locks, leave Ctrl-C to it."""
    _die_with(parent)
    _close_inherited_locks()
    # Ctrl-C goes to the whole process group; the parent alone decides what to
    # do (it stops the pool), and a SIGTERM handler inherited by fork must not
    # keep a worker alive.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _die_with(parent: int) -> None:
    """Make sure this worker does not outlive `parent`, even when it is killed with SIGKILL.

    A killed parent runs no clean-up: without this its workers would wait on
    the task queue forever (each holds the queue's write end too, so no EOF comes).
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        armed = libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        armed = False
    if os.getppid() != parent:
        os._exit(1)  # the parent died before the signal was armed
    if not armed:
        # No prctl: watch for the parent's death (the worker is re-parented).
        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(1.0)
            os._exit(1)

        threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def _close_inherited_locks() -> None:
    """Close every descriptor through which this process shares a file lock with its parent.

    The campaign lock is an flock taken before the import: a worker holding a
    copy would keep it after the run died, and every later run would exit 75.
    Only this process's copies are closed; the parent's lock is untouched (no
    unlock is done, which would release it for the parent too).
    """
    try:
        fds = os.listdir("/proc/self/fdinfo")
    except OSError:
        return  # no /proc: workers are forked on Linux only (see _can_fork)
    for name in fds:
        try:
            with open(f"/proc/self/fdinfo/{name}", encoding="ascii") as info:
                locks = [line.split()[2] for line in info if line.startswith("lock:")]
        except (OSError, IndexError):
            continue  # the descriptor listing itself, closed meanwhile
        if any(kind in _SHARED_LOCKS for kind in locks):
            os.close(int(name))


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
    return ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init, initargs=(os.getpid(),))


ParsedChunk = tuple[Chunk, list[str], dict[str, PhoneResult]]  # a chunk, its phone cells, their results


def with_phones(chunks: Iterable[Chunk], phone: str, region: str, workers: int) -> Iterator[ParsedChunk]:
    """Each chunk, its phone cells and their PhoneResults, in file order.

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
    phones: list[str]
    unique: list[str]
    future: Future[list[PhoneResult]] | None = None


class _Parser:
    """Parses the phone column of chunks, here or in a pool that may break (a worker killed)."""

    def __init__(self, phone: str, region: str) -> None:
        self.phone = phone
        self.region = region
        self.broken = False

    def batch(self, chunk: Chunk) -> _Batch:
        phones = chunk.frame[self.phone].tolist()
        return _Batch(chunk, phones, list(dict.fromkeys(phones)))

    def inline(self, b: _Batch) -> ParsedChunk:
        return b.chunk, b.phones, dict(zip(b.unique, _normalize_all(b.unique, self.region), strict=True))

    def pooled(self, head: list[Chunk], rest: Iterator[Chunk], workers: int) -> Iterator[ParsedChunk]:
        pool = _pool(workers)
        pending: deque[_Batch] = deque()
        try:
            for chunk in head:
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
        if not self.broken:
            try:
                b.future = pool.submit(_normalize_all, b.unique, self.region)
            except BrokenProcessPool:
                self.broken = True
        return b

    def _finish(self, b: _Batch) -> ParsedChunk:
        if b.future is not None and not self.broken:
            try:
                results = b.future.result()
            except BrokenProcessPool:
                self.broken = True  # a worker died (out of memory?): carry on here
            else:
                return b.chunk, b.phones, dict(zip(b.unique, results, strict=True))
        return self.inline(b)
