"""Rows -> leads: each row of the leads file checked and mapped, duplicates found, DNC applied.

The columns come from dialer.columns, phones and their zones from dialer.phones,
the do-not-call numbers from dialer.suppress; this module joins them. Each row
goes through the same checks, in this order, and the first that fails decides
its status and `error`:

1. the row is whole (a CSV row with text beyond the last header is refused, and
   so is an XLSX row whose phone or name is a formula with no saved value),
2. the phone reads as a valid number (E.164 via phonenumbers and `default_region`),
3. its time zone is an IANA name, or can be inferred from the number,
   and its state, when the file has a state column, is a US state (for the law),
4. it has a name, when the API needs one (mode "call"),
5. the number is not on a do-not-call list (`suppressed`),
6. no earlier dialable row has the same number (`duplicate`).

Phones are parsed a chunk ahead, by a pool of processes for a large file;
this process keeps the file order and applies duplicates and the do-not-call
lists, which need to see every row in turn.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from dialer.columns import ColumnMap
from dialer.config import Campaign
from dialer.law import parse_state
from dialer.load import Chunk, LeadsFile
from dialer.model import Lead, LeadRows, Status
from dialer.phones import (
    CHUNK_ROWS,
    PhoneColumns,
    default_workers,
    with_phone_columns,
)
from dialer.suppress import suppression_sources
from dialer.zones import UNKNOWN_ZONES, zones_named

# The time-zone column's distinct texts are checked once each; a column of free
# text mapped as zones by mistake must not grow the memory without end.
_ZONE_CACHE_LIMIT = 50_000
_NO_NAME = "missing name (the API requires one)"


def map_leads(
    campaign: Campaign,
    leads: LeadsFile,
    columns: ColumnMap,
    *,
    chunk_rows: int | None = None,
    workers: int | None = None,
) -> Iterator[Lead]:
    """Every row of the file as a Lead, in file order, with duplicates and DNC applied.

    Streams: memory holds a few chunks and the numbers seen so far. `workers`
    is how many processes parse phones (default: one per CPU, at most 2); a
    file of a single chunk, or a process with threads running, parses them
    in this process. Pass workers=1 to never start a process.
    """
    for rows in map_rows(campaign, leads, columns, chunk_rows=chunk_rows, workers=workers):
        yield from rows.leads()


def map_rows(
    campaign: Campaign,
    leads: LeadsFile,
    columns: ColumnMap,
    *,
    chunk_rows: int | None = None,
    workers: int | None = None,
) -> Iterator[LeadRows]:
    """map_leads, a chunk at a time and column by column (no Lead object per row)."""
    workers = default_workers() if workers is None else workers
    mapper = _Mapper(campaign, leads, columns, suppression_sources(campaign, workers))
    chunks = leads.read(chunk_rows or CHUNK_ROWS)
    stream = with_phone_columns(chunks, columns.phone, campaign.default_region, workers)
    for chunk, parsed in stream:
        if len(chunk.frame):
            yield mapper.chunk(chunk, parsed)


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
        self.state_at = at[columns.state] if columns.state is not None else None
        self.state_column = columns.state
        self.states: dict[str, str] = {}  # the state column's texts -> "" or their error
        self.variable_names = columns.variables
        self.variable_at = [at[h] for h in columns.variables]
        self.phone = columns.phone
        self.name_columns = columns.name
        self.needs_name = campaign.mode == "call"
        self.delimiter = leads.delimiter or ","
        self.suppressed = suppressed
        self.first_rows = _FirstRows()  # the one memory that grows with the file
        self.zones: dict[str, tuple[str, ...] | None] = {}  # the time-zone column's texts, checked

    def chunk(self, chunk: Chunk, parsed: PhoneColumns) -> LeadRows:
        """The mapped rows of one chunk, in file order, column by column.

        A list comprehension per column, and numpy masks for the checks, cost several
        times less than the same work done row by row: only the rows a check refuses
        (a few in a hundred) are looked at one by one.
        """
        frame = chunk.frame
        count = len(frame)
        rows_at = (frame.index + 2).tolist()  # spreadsheet rows (blank rows leave gaps)
        cells = [frame[h].tolist() for h in self.headers]
        names = _join_names([cells[i] for i in self.name_at], count)
        emails = _stripped(cells, self.email_at, count)
        states = _stripped(cells, self.state_at, count)
        verdicts = self._verdicts(chunk, rows_at, parsed, names, cells, states)
        return LeadRows(
            row=rows_at,
            cells=cells,
            status=verdicts.status,
            error=verdicts.error,
            phone=verdicts.phone,
            name=names,
            email=emails,
            timezones=verdicts.zones,
            state=states,
            variable_names=self.variable_names,
            variable_cells=[cells[i] for i in self.variable_at],
        )

    def _verdicts(
        self,
        chunk: Chunk,
        rows_at: list[int],
        parsed: PhoneColumns,
        names: list[str],
        cells: list[list[str]],
        states: list[str],
    ) -> _Verdicts:
        """Status, error, E.164 and zones of each row of a chunk, in the order of the module docstring.

        `ok` holds the rows no check has refused yet; each check looks only at those.
        An invalid row's zones are () (a Lead shows no zones it will not be called in)."""
        count = len(rows_at)
        e164s, zones = parsed.e164, parsed.zones
        errors = np.array(parsed.errors, dtype=object)
        ok = errors == ""
        if chunk.unsaved or chunk.overflow:  # 1. the row is whole
            for offset, error in self._refused_rows(chunk, rows_at).items():
                errors[offset], ok[offset] = error, False
        self._check_zones(ok, errors, e164s, zones, cells)  # 3. its time zone
        if self.needs_name:  # 4. its name (checked before the state: its error comes first)
            unnamed = ok & (np.array(names, dtype=object) == "")
            errors[unnamed], ok[unnamed] = _NO_NAME, False
        if self.state_at is not None:  # 3. its state, when the file has a state column
            for offset in np.flatnonzero(ok & (np.array(states, dtype=object) != "")).tolist():
                error = self._state_error(states[offset])
                if error:
                    errors[offset], ok[offset] = error, False
        status = np.empty(count, dtype=object)  # np.full of an object is ten times slower
        status[:] = Status.PENDING
        status[~ok] = Status.INVALID
        self._dialable(ok, status, errors, e164s, rows_at)
        for offset in np.flatnonzero(status == Status.INVALID).tolist():
            zones[offset] = ()
        return _Verdicts(status.tolist(), errors.tolist(), e164s, zones)

    def _dialable(
        self,
        ok: npt.NDArray[np.bool_],
        status: npt.NDArray[np.object_],
        errors: npt.NDArray[np.object_],
        e164s: list[str],
        rows_at: list[int],
    ) -> None:
        """Steps 5 and 6 for the rows still `ok`: do-not-call lists, then duplicates."""
        if self.suppressed:
            for offset in np.flatnonzero(ok).tolist():
                source = self.suppressed.get(e164s[offset])
                if source is not None:
                    status[offset], ok[offset] = Status.SUPPRESSED, False
                    errors[offset] = f"on the do-not-call list {source}"
        dialable = np.flatnonzero(ok).tolist()
        if not dialable:
            return
        # int() reads E.164's "+" as a sign: the digits as a number, without a slice per row.
        numbers = list(map(int, [e164s[i] for i in dialable]))
        firsts = self.first_rows.claim(numbers, [rows_at[i] for i in dialable])
        for offset, first in zip(dialable, firsts, strict=True):
            if first:
                status[offset], errors[offset] = Status.DUPLICATE, f"same number as row {first}"

    def _check_zones(
        self,
        ok: npt.NDArray[np.bool_],
        errors: npt.NDArray[np.object_],
        e164s: list[str],
        zones: list[tuple[str, ...]],
        cells: list[list[str]],
    ) -> None:
        """Step 3 for the rows still `ok`: the zone column's text (trimmed) when there is one,
        else the zones inferred from the number; refused rows leave `ok`."""
        given = np.zeros(len(e164s), dtype=bool)
        if self.zone_at is not None:
            texts = cells[self.zone_at]
            given = np.array(texts, dtype=object) != ""
            for offset in np.flatnonzero(ok & given).tolist():
                text = texts[offset].strip()
                if not text:  # spaces only: as an empty cell
                    given[offset] = False
                    continue
                named = self._zones_named(text)
                if named is None:
                    errors[offset] = f'unknown time zone "{text}" (use an IANA name like America/New_York)'
                    ok[offset] = False
                else:
                    zones[offset] = named
        inferred = np.flatnonzero(ok & ~given).tolist()
        for offset in [i for i in inferred if zones[i] == UNKNOWN_ZONES]:
            errors[offset] = f"cannot infer a time zone for {e164s[offset]}; add a time zone column"
            ok[offset] = False

    def _zones_named(self, text: str) -> tuple[str, ...] | None:
        """zones_named, once per distinct text of the zone column."""
        if text not in self.zones:
            if len(self.zones) >= _ZONE_CACHE_LIMIT:
                self.zones.clear()  # a column of free text, mapped as zones by mistake
            self.zones[text] = zones_named(text)
        return self.zones[text]

    def _refused_rows(self, chunk: Chunk, rows_at: list[int]) -> dict[int, str]:
        """Offset -> error of the rows refused whole (step 1 of the module docstring). A row whose
        formulas with no saved value are in neither the phone nor the name is not refused."""
        refused: dict[int, str] = {}
        for offset, row in enumerate(rows_at):
            if chunk.overflow and row - 2 in chunk.overflow:
                refused[offset] = (
                    f"the row has {chunk.overflow[row - 2]} cells but the header has "
                    f"{len(self.headers)}: a value may hold an unquoted {self.delimiter!r}"
                )
            elif chunk.unsaved and row - 2 in chunk.unsaved:
                error = self._unsaved(chunk.unsaved[row - 2])
                if error:
                    refused[offset] = error
        return refused

    def _unsaved(self, formulas: list[str]) -> str:
        """The error of a row whose phone or name is a formula with no saved value (see dialer.load)."""
        needed = [h for h in formulas if h == self.phone or h in self.name_columns]
        if not needed:
            return ""
        return (
            f"{' and '.join(needed)}: a formula with no saved value (the file was written without"
            " computing it); open and save it in Excel, or paste the values"
        )

    def _state_error(self, state: str) -> str:
        """'' when the state column is blank or names a US state, else why not (checked once per text)."""
        if not state:
            return ""
        error = self.states.get(state)
        if error is None:
            if len(self.states) >= _ZONE_CACHE_LIMIT:
                self.states.clear()  # a column of free text, mapped as the state by mistake
            try:
                parse_state(state)
                error = ""
            except ValueError as exc:
                error = f"{self.state_column}: {exc}"
            self.states[state] = error
        return error


class _Verdicts(NamedTuple):
    """The verdict columns of a chunk."""

    status: list[Status]
    error: list[str]
    phone: list[str]
    zones: list[tuple[str, ...]]


def _stripped(cells: list[list[str]], at: int | None, count: int) -> list[str]:
    """The column at `at`, each cell trimmed; "" for each row when there is no such column."""
    return [v.strip() for v in cells[at]] if at is not None else [""] * count


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
    if len(parts) == 2:  # first and last name: the common case, without a generator per row
        return [f"{a} {b}" if a and b else a or b for a, b in zip(*parts, strict=True)]
    return [" ".join(p for p in row if p) for row in zip(*parts, strict=True)]
