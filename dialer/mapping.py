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

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import pandas as pd

from dialer.columns import ColumnMap
from dialer.config import Campaign
from dialer.law import parse_state
from dialer.load import Chunk, LeadsFile
from dialer.model import DUPLICATE_CODE, INVALID_CODE, PENDING_CODE, SUPPRESSED_CODE, Lead, LeadRows
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

        numpy masks for the checks, and pandas' factorize for the columns checked once per
        distinct text (zones, states), cost several times less than the same work done row
        by row: only the rows a check refuses (a few in a hundred) are looked at one by one.
        The columns no check reads (names, emails, every cell) are left to LeadRows to build
        when they are asked for: validate never asks.
        """
        frame = chunk.frame
        columns: list[npt.NDArray[np.object_]] = [frame[h].to_numpy() for h in self.headers]
        rows_at = frame.index.to_numpy() + 2  # spreadsheet rows (blank rows leave gaps)
        e164s, zones = parsed.e164, parsed.zones
        errors = np.array(parsed.errors, dtype=object)
        states = self._states(columns)
        codes, numbers = self._verdicts(chunk, rows_at, e164s, zones, errors, columns, states)
        name_columns = [columns[i] for i in self.name_at]
        email_column = columns[self.email_at] if self.email_at is not None else None
        count = len(rows_at)
        return LeadRows(
            rows=rows_at,
            codes=codes,
            numbers=numbers,
            errors=errors,
            phone=e164s,
            timezones=zones,
            state=states.trimmed if states is not None else [""] * count,
            cells=lambda: [column.tolist() for column in columns],
            name=lambda: _join_names([column.tolist() for column in name_columns], count),
            email=lambda: list(map(str.strip, email_column)) if email_column is not None else [""] * count,
            variable_names=self.variable_names,
            variable_at=self.variable_at,
        )

    def _verdicts(
        self,
        chunk: Chunk,
        rows_at: npt.NDArray[np.int64],
        e164s: list[str],
        zones: list[tuple[str, ...]],
        errors: npt.NDArray[np.object_],
        columns: list[npt.NDArray[np.object_]],
        states: _States | None,
    ) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.int64]]:
        """Each row's status code and number (0 when not dialable), in the order of the module
        docstring; `errors` and `zones` are filled in place.

        `ok` holds the rows no check has refused yet; each check looks only at those.
        An invalid row's zones are () (a Lead shows no zones it will not be called in)."""
        ok = errors == ""
        if chunk.unsaved or chunk.overflow:  # 1. the row is whole
            for offset, error in self._refused_rows(chunk, rows_at).items():
                errors[offset], ok[offset] = error, False
        self._check_zones(ok, errors, e164s, zones, columns)  # 3. its time zone
        if self.needs_name:  # 4. its name (checked before the state: its error comes first)
            unnamed = ok.copy()
            for at in self.name_at:
                unnamed &= _blank(columns[at])
            errors[unnamed], ok[unnamed] = _NO_NAME, False
        if states is not None:  # 3. its state, when the file has a state column
            self._check_states(ok, errors, states)
        codes = np.where(ok, PENDING_CODE, INVALID_CODE).astype(np.int8)
        numbers = self._dialable(ok, codes, errors, e164s, rows_at)
        for offset in np.flatnonzero(codes == INVALID_CODE).tolist():
            zones[offset] = ()
        return codes, numbers

    def _dialable(
        self,
        ok: npt.NDArray[np.bool_],
        codes: npt.NDArray[np.int8],
        errors: npt.NDArray[np.object_],
        e164s: list[str],
        rows_at: npt.NDArray[np.int64],
    ) -> npt.NDArray[np.int64]:
        """Steps 5 and 6 for the rows still `ok`: do-not-call lists, then duplicates. The
        numbers of the rows that pass both (and of their duplicates), 0 for the others."""
        numbers = np.zeros(len(ok), dtype=np.int64)
        phones = np.array(e164s, dtype=object)
        if self.suppressed:
            looked = np.flatnonzero(ok)
            found = np.fromiter(map(self.suppressed.__contains__, phones[looked]), bool, len(looked))
            for offset in looked[found].tolist():
                codes[offset], ok[offset] = SUPPRESSED_CODE, False
                errors[offset] = f"on the do-not-call list {self.suppressed[e164s[offset]]}"
        dialable = np.flatnonzero(ok)
        if not len(dialable):
            return numbers
        # int() reads E.164's "+" as a sign: the digits as a number, without a slice per row.
        numbers[dialable] = np.fromiter(map(int, phones[dialable]), np.int64, len(dialable))
        firsts = self.first_rows.claim(numbers[dialable], rows_at[dialable])
        repeated = np.flatnonzero(firsts)
        codes[dialable[repeated]] = DUPLICATE_CODE
        for offset, first in zip(dialable[repeated].tolist(), firsts[repeated].tolist(), strict=True):
            errors[offset] = f"same number as row {first}"
        return numbers

    def _check_zones(
        self,
        ok: npt.NDArray[np.bool_],
        errors: npt.NDArray[np.object_],
        e164s: list[str],
        zones: list[tuple[str, ...]],
        columns: list[npt.NDArray[np.object_]],
    ) -> None:
        """Step 3 for the rows still `ok`: the zone column's text (trimmed) when there is one,
        else the zones inferred from the number; refused rows leave `ok`. Each distinct
        text of the column is read once."""
        given = np.zeros(len(e164s), dtype=bool)
        if self.zone_at is not None:
            texts = columns[self.zone_at]
            given = texts != ""
            looked = np.flatnonzero(ok & given)
            at, distinct = pd.factorize(texts[looked])
            trimmed = [text.strip() for text in distinct]
            named = [self._zones_named(text) if text else None for text in trimmed]
            for offset, j in zip(looked.tolist(), at.tolist(), strict=True):
                found = named[j]
                if found is not None:
                    zones[offset] = found
                elif not trimmed[j]:  # spaces only: as an empty cell
                    given[offset] = False
                else:
                    errors[offset] = (
                        f'unknown time zone "{trimmed[j]}" (use an IANA name like America/New_York)'
                    )
                    ok[offset] = False
        inferred = np.flatnonzero(ok & ~given).tolist()
        for offset in [i for i in inferred if zones[i] == UNKNOWN_ZONES]:
            errors[offset] = f"cannot infer a time zone for {e164s[offset]}; add a time zone column"
            ok[offset] = False

    def _states(self, columns: list[npt.NDArray[np.object_]]) -> _States | None:
        """The state column's cells, trimmed (each distinct text once); None without one."""
        if self.state_at is None:
            return None
        at, distinct = pd.factorize(columns[self.state_at])
        trimmed = np.array([text.strip() for text in distinct], dtype=object)
        return _States(trimmed[at].tolist(), at, trimmed.tolist())

    def _check_states(
        self, ok: npt.NDArray[np.bool_], errors: npt.NDArray[np.object_], states: _States
    ) -> None:
        """Step 3's state for the rows still `ok`: each distinct text checked once."""
        refused = [self._state_error(state) for state in states.distinct]
        if not any(refused):
            return
        looked = np.flatnonzero(ok)
        for offset, j in zip(looked.tolist(), states.at[looked].tolist(), strict=True):
            if refused[j]:
                errors[offset], ok[offset] = refused[j], False

    def _zones_named(self, text: str) -> tuple[str, ...] | None:
        """zones_named, once per distinct text of the zone column."""
        if text not in self.zones:
            if len(self.zones) >= _ZONE_CACHE_LIMIT:
                self.zones.clear()  # a column of free text, mapped as zones by mistake
            self.zones[text] = zones_named(text)
        return self.zones[text]

    def _refused_rows(self, chunk: Chunk, rows_at: npt.NDArray[np.int64]) -> dict[int, str]:
        """Offset -> error of the rows refused whole (step 1 of the module docstring). A row whose
        formulas with no saved value are in neither the phone nor the name is not refused."""
        refused: dict[int, str] = {}
        for at, cells in chunk.overflow.items():
            refused[_offset(rows_at, at + 2)] = (
                f"the row has {cells} cells but the header has "
                f"{len(self.headers)}: a value may hold an unquoted {self.delimiter!r}"
            )
        for at, formulas in chunk.unsaved.items():
            error = self._unsaved(formulas)
            if error and at not in chunk.overflow:
                refused[_offset(rows_at, at + 2)] = error
        refused.pop(-1, None)  # a row not in the chunk (none is)
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


class _States(NamedTuple):
    """The state column of a chunk: each row's text trimmed, and its distinct texts."""

    trimmed: list[str]
    at: npt.NDArray[np.intp]  # each row's index into `distinct`
    distinct: list[str]


def _offset(rows_at: npt.NDArray[np.int64], row: int) -> int:
    """The offset of spreadsheet row `row` in a chunk's (increasing) rows; -1 if not there."""
    offset = int(np.searchsorted(rows_at, row))
    return offset if offset < len(rows_at) and rows_at[offset] == row else -1


def _blank(column: npt.NDArray[np.object_]) -> npt.NDArray[np.bool_]:
    """Which cells of a column are empty or spaces only (as their trimmed text is empty)."""
    blank: npt.NDArray[np.bool_] = np.fromiter(map(str.isspace, column), bool, len(column))
    blank |= column == ""
    return blank


class _FirstRows:
    """Each E.164 number seen so far with the row that claimed it: sorted numpy arrays.

    16 bytes a number where a dict of strings takes ~170, so that memory stays
    flat as the file grows (16 MB for a million distinct numbers). Numbers are
    the E.164 digits as integers (15 digits at most: they fit in 64 bits).

    Two levels: the new numbers of each chunk go into a small sorted side (`recent`),
    and the side goes into the big arrays only when it holds a quarter as many (at
    least _RECENT_ROWS), so that the big arrays are copied a few times for a file
    rather than once per chunk. A number is in one level or the other, never both.
    """

    def __init__(self) -> None:
        self.numbers = np.empty(0, dtype=np.int64)
        self.rows = np.empty(0, dtype=np.int64)
        self.recent = (np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64))

    def remembered(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Every number seen and its first row, sorted by number (both levels merged)."""
        self._fold()
        return self.numbers, self.rows

    def claim(self, numbers: npt.ArrayLike, rows: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """For each (number, row), rows in increasing order: 0 if it is the first with that
        number, else the first row with it. The new numbers are remembered with their first row.

        The chunk's numbers are sorted first: looked up in that order, the binary searches
        walk the remembered numbers from left to right (several times faster than in file
        order), and the new ones go in by one merge."""
        wanted = np.asarray(numbers, dtype=np.int64)
        at_rows = np.asarray(rows, dtype=np.int64)
        firsts = np.zeros(len(wanted), dtype=np.int64)
        if not len(wanted):
            return firsts
        order = np.argsort(wanted)
        ordered, ordered_rows = wanted[order], at_rows[order]
        starts = np.ones(len(ordered), dtype=bool)
        starts[1:] = ordered[1:] != ordered[:-1]
        run = np.cumsum(starts) - 1  # each number's run of equal numbers
        unique = ordered[starts]
        unique_rows = np.minimum.reduceat(ordered_rows, np.flatnonzero(starts))  # each run's first row
        owner = unique_rows.copy()
        new = np.ones(len(unique), dtype=bool)
        for level_numbers, level_rows in ((self.numbers, self.rows), self.recent):
            where = np.searchsorted(level_numbers, unique)
            known = where < len(level_numbers)
            known[known] = level_numbers[where[known]] == unique[known]
            owner[known] = level_rows[where[known]]
            new &= ~known
        owners = owner[run]
        firsts[order] = np.where(ordered_rows == owners, 0, owners)
        added = np.searchsorted(self.recent[0], unique[new])
        recent_numbers, recent_rows = _merged(self.recent, added, (unique[new], unique_rows[new]))
        self.recent = (recent_numbers, recent_rows)
        if len(recent_numbers) >= max(_RECENT_ROWS, len(self.numbers) // 4):
            self._fold()
        return firsts

    def _fold(self) -> None:
        """The recent numbers into the big arrays, by one merge."""
        if not len(self.recent[0]):
            return
        where = np.searchsorted(self.numbers, self.recent[0])
        self.numbers, self.rows = _merged((self.numbers, self.rows), where, self.recent)
        self.recent = (np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64))


# The side of _FirstRows goes into its big arrays when it holds this many numbers
# (or a quarter as many as they do, when more).
_RECENT_ROWS = 20_000


def _merged(
    into: tuple[npt.NDArray[np.int64], ...],
    where: npt.NDArray[np.intp],
    values: tuple[npt.NDArray[np.int64], ...],
) -> tuple[npt.NDArray[np.int64], ...]:
    """np.insert(into[i], where, values[i]) of each array for an increasing `where`, with one
    mask for all (np.insert sorts `where` again, for each array)."""
    at = where + np.arange(len(where))
    kept = np.ones(len(into[0]) + len(where), dtype=bool)
    kept[at] = False
    merged = []
    for old, new in zip(into, values, strict=True):
        both = np.empty(len(kept), dtype=np.int64)
        both[at] = new
        both[kept] = old
        merged.append(both)
    return tuple(merged)


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
