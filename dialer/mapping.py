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

import numpy as np

from dialer.columns import ColumnMap
from dialer.config import Campaign
from dialer.law import parse_state
from dialer.load import Chunk, LeadsFile
from dialer.model import Lead, Status
from dialer.phones import (
    CHUNK_ROWS,
    PhoneResult,
    default_workers,
    with_phones,
)
from dialer.suppress import suppression_sources
from dialer.zones import UNKNOWN_ZONES, zones_named

# The time-zone column's distinct texts are checked once each; a column of free
# text mapped as zones by mistake must not grow the memory without end.
_ZONE_CACHE_LIMIT = 50_000


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
    workers = default_workers() if workers is None else workers
    mapper = _Mapper(campaign, leads, columns, suppression_sources(campaign, workers))
    chunks = leads.read(chunk_rows or CHUNK_ROWS)
    stream = with_phones(chunks, columns.phone, campaign.default_region, workers)
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
        zone_texts = [v.strip() for v in cells[self.zone_at]] if self.zone_at is not None else [""] * count
        states = [v.strip() for v in cells[self.state_at]] if self.state_at is not None else [""] * count
        verdicts = self._verdicts(
            chunk, rows_at, [results[phone] for phone in phones], names, zone_texts, states
        )
        names_of = self.variable_names
        if self.variable_at:
            columns = (cells[i] for i in self.variable_at)
            variables = [dict(zip(names_of, row, strict=True)) for row in zip(*columns, strict=True)]
        else:
            variables = [{} for _ in range(count)]
        rows = zip(rows_at, zip(*cells, strict=True), verdicts, names, emails, variables, states, strict=True)
        # Positional: a Lead is a frozen dataclass, and keywords cost a third more.
        for row, values, (status, error, e164, zones), name, email, row_variables, state in rows:
            yield Lead(row, values, status, error, e164, name, email, zones, row_variables, state)

    def _verdicts(
        self,
        chunk: Chunk,
        rows_at: list[int],
        parsed: list[PhoneResult],
        names: list[str],
        zone_texts: list[str],
        states: list[str],
    ) -> list[_Verdict]:
        """(status, error, E.164, zones) of each row of a chunk, in the order of the module docstring.

        An invalid row's zones are () (a Lead shows no zones it will not be called in)."""
        verdicts: list[_Verdict] = []
        dialable: list[int] = []  # offsets of the rows only a duplicate could still stop
        refused = self._refused_rows(chunk, rows_at) if chunk.unsaved or chunk.overflow else {}
        invalid, pending, suppressed = Status.INVALID, Status.PENDING, Status.SUPPRESSED
        for offset, ((e164, zones, error), name, zone_text, state) in enumerate(
            zip(parsed, names, zone_texts, states, strict=True)
        ):
            if refused and offset in refused:
                error = refused[offset]
            elif not error:
                error, zones = self._check(e164, zones, zone_text, name)
                error = error or self._state_error(state)
                if not error:
                    source = self.suppressed.get(e164)
                    if source is not None:
                        verdicts.append((suppressed, f"on the do-not-call list {source}", e164, zones))
                        continue
                    dialable.append(offset)
                    verdicts.append((pending, "", e164, zones))
                    continue
            verdicts.append((invalid, error, e164, ()))
        if dialable:
            firsts = self.first_rows.claim(
                [int(verdicts[i][2][1:]) for i in dialable], [rows_at[i] for i in dialable]
            )
            for offset, first in zip(dialable, firsts, strict=True):
                if first:
                    _, _, e164, zones = verdicts[offset]
                    verdicts[offset] = (Status.DUPLICATE, f"same number as row {first}", e164, zones)
        return verdicts

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

    def _check(
        self, e164: str, zones: tuple[str, ...], zone_text: str, name: str
    ) -> tuple[str, tuple[str, ...]]:
        """(error, time zones) of a row whose phone is valid: its zone (the cell, trimmed), then its name."""
        if zone_text:
            if zone_text not in self.zones:
                if len(self.zones) >= _ZONE_CACHE_LIMIT:
                    self.zones.clear()  # a column of free text, mapped as zones by mistake
                self.zones[zone_text] = zones_named(zone_text)
            named = self.zones[zone_text]
            if named is None:
                return f'unknown time zone "{zone_text}" (use an IANA name like America/New_York)', zones
            zones = named
        elif zones == UNKNOWN_ZONES:
            return f"cannot infer a time zone for {e164}; add a time zone column", zones
        if self.needs_name and not name:
            return "missing name (the API requires one)", zones
        return "", zones


# (status, error, E.164, time zones) of one row
_Verdict = tuple[Status, str, str, tuple[str, ...]]


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
