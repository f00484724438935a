"""`dialer validate`: every row read and mapped as `run` would, counted; nothing sent.

The mapped rows come a chunk at a time as columns (mapping.map_rows); the counts, the
calling-hours check and the examples are made per chunk, looking one by one only at the
rows not dialed (a few in a hundred).
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dialer.bookkeeping import Clock, utc_now
from dialer.config import Campaign
from dialer.hours import CallingHours
from dialer.law import LawRules, rules_for
from dialer.model import JournalRow, Lead, LeadRows, Status
from dialer.transitions import never_open_reason

# The stages that pull in pandas, numpy, phonenumbers, httpx or xlsxwriter are imported
# where a function needs them: `status` and `report` need none of them (issue 10: a
# `status` that took 3-4 s to start).
if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from dialer.columns import ColumnMap
    from dialer.numbers import ForeignCallers


def with_leads(campaign: Campaign, override: Path | None) -> Campaign:
    """The campaign with `--leads` applied, so every message names the file really read."""
    return campaign.model_copy(update={"leads": override}) if override else campaign


@dataclass
class Validation:
    """What `validate` found: the mapping, outcomes per row, examples of what would be sent."""

    path: Path
    columns: ColumnMap
    counts: Counter[str]
    reasons: Counter[str]
    examples: list[dict[str, Any]]
    problems: list[tuple[int, str, str]]  # (row, status, error), the first few
    next_due: datetime | None
    due_now: int
    # Dialable rows strategy "local" must call from another country's number, per lead country.
    foreign: Counter[str] = field(default_factory=Counter)
    # Dialable rows per state rule that applies to them (the federal rule alone is not listed).
    laws: Counter[LawRules] = field(default_factory=Counter)


_VARYING = re.compile(r"""("[^"]*"|'[^']*'|\+?\d[\d.,E+\-]*)""")


def _reason_kind(error: str) -> str:
    """Group similar errors: values, numbers and rows become `…`.

    'invalid phone number '555-01': too short' -> 'invalid phone number …: too short';
    'same number as row 3' -> 'same number as row …'.
    """
    return _VARYING.sub("…", error).strip() or error


def _example_body(campaign: Campaign) -> Callable[[JournalRow], dict[str, Any]]:
    """The request body `run` would send for a row, caller ids taken in turn."""
    from dialer import client as api

    body = api.call_body if campaign.mode == "call" else api.chat_body
    pool = campaign.numbers.pool
    cycle = itertools.cycle(pool) if pool else None
    return lambda row: body(campaign, row, next(cycle) if cycle else "")


def validate_campaign(campaign: Campaign, *, leads: Path | None = None, clock: Clock = utc_now) -> Validation:
    """Read and map every row as `run` would; send nothing."""
    from dialer.columns import resolve_columns
    from dialer.load import open_leads
    from dialer.mapping import map_rows
    from dialer.numbers import ForeignCallers

    campaign = with_leads(campaign, leads)
    path = campaign.leads
    opened = open_leads(path, encoding=campaign.encoding, sheet=campaign.sheet)
    columns = resolve_columns(campaign, opened.headers)
    tally = _Tally(_DueCheck(CallingHours(campaign.hours), clock()), ForeignCallers(campaign.numbers))
    example = _example_body(campaign)
    for rows in map_rows(campaign, opened, columns):
        for lead in tally.add(rows, want_examples=3 - len(tally.examples)):
            tally.examples.append(example(_as_row(lead, opened.headers)))
    counts, reasons, examples, problems = tally.counts, tally.reasons, tally.examples, tally.problems
    due, foreign = tally.due, tally.foreign
    return Validation(
        path=path,
        columns=columns,
        counts=counts,
        reasons=reasons,
        examples=examples,
        problems=problems,
        next_due=due.next_due(),
        due_now=due.due_now,
        foreign=foreign.rows,
        laws=due.laws,
    )


class _Tally:
    """validate's counts over the mapped rows, a chunk at a time: only the rows not dialed,
    a few in a hundred, are looked at one by one."""

    def __init__(self, due: _DueCheck, foreign: ForeignCallers) -> None:
        self.due = due
        self.foreign = foreign
        self.counts: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()
        self.examples: list[dict[str, Any]] = []
        self.problems: list[tuple[int, str, str]] = []
        self._kinds: dict[str, str] = {}  # error -> _reason_kind(error), for errors that repeat

    def add(self, rows: LeadRows, want_examples: int) -> list[Lead]:
        """Count a chunk's rows; return its first `want_examples` dialable rows, as Leads."""
        import numpy as np  # here: `status` and `report` never load it (see the imports)

        from dialer.model import PENDING_CODE, STATUS_CODES

        codes = rows.codes
        for code, n in enumerate(np.bincount(codes, minlength=len(STATUS_CODES)).tolist()):
            if n:
                self.counts[STATUS_CODES[code]] += n
        pending = np.flatnonzero(codes == PENDING_CODE)
        # As `run` will: a lead whose hours (zones, law) never open is not dialable.
        never = self.due.check_rows(rows, pending)
        if never:
            self.counts[Status.PENDING] -= len(never)
            self.counts[Status.INVALID] += len(never)
            dialed = np.ones(len(codes), dtype=bool)
            dialed[list(never)] = False
            not_dialed = np.flatnonzero((codes != PENDING_CODE) | ~dialed).tolist()
            dialable = pending[dialed[pending]].tolist()
        else:
            not_dialed = np.flatnonzero(codes != PENDING_CODE).tolist()
            dialable = pending.tolist()
        errors, statuses = rows.errors, rows.codes
        for offset in not_dialed:
            reason = never.get(offset)
            status = Status.INVALID if reason is not None else STATUS_CODES[statuses[offset]]
            error = reason if reason is not None else errors[offset]
            self.reasons[f"{status}: {self._kind(error)}"] += 1
            if len(self.problems) < 10:
                self.problems.append((rows.row[offset], status, error))
        if self.foreign.active:
            for offset in dialable:
                self.foreign.count(rows.phone[offset])
        return [rows.lead(i) for i in dialable[: max(0, want_examples)]]

    def _kind(self, error: str) -> str:
        """_reason_kind, once per distinct error text (bounded: numbers and rows vary)."""
        kind = self._kinds.get(error)
        if kind is None:
            if len(self._kinds) >= 10_000:
                self._kinds.clear()
            kind = self._kinds[error] = _reason_kind(error)
        return kind


class _DueCheck:
    """validate's hours check, once per (time zones, law) group, not per row."""

    def __init__(self, hours: CallingHours, now: datetime) -> None:
        self.hours = hours
        self.now = now
        self.due_now = 0
        self.laws: Counter[LawRules] = Counter()  # dialable rows under a state's rule
        # (zones, the law's states) -> (law, open now, "" or why the hours never open)
        self._groups: dict[tuple[tuple[str, ...], tuple[str, ...]], tuple[LawRules, bool, str]] = {}
        # (zones, E.164's first 5 characters and length, state) -> what check() found for it
        self._alike: dict[tuple[tuple[str, ...], str, int, str], tuple[LawRules, bool, str]] = {}

    def check_rows(self, rows: LeadRows, pending: npt.NDArray[np.intp]) -> dict[int, str]:
        """Count the pending rows of a chunk; the offsets of those whose hours never open, and why.

        Rows are grouped by what decides their law (rules_for reads a number's first five
        characters and its length, and the state column) and their zones, each group
        checked once: numpy finds the groups, from each row's number (its length and first
        four digits: those five characters of its E.164) and ids for its zones and state."""
        import numpy as np

        if not len(pending):
            return {}
        first, group, sizes = _groups(_alike_keys(rows, pending))
        never: list[str] = []
        for sample, n in zip(pending[first].tolist(), sizes.tolist(), strict=True):
            law, is_open, reason = self._verdict(
                rows.timezones[sample], rows.phone[sample], rows.state[sample]
            )
            never.append(reason)
            if reason:
                continue
            if law.states:
                self.laws[law] += n
            if is_open:
                self.due_now += n
        if not any(never):
            return {}
        refused = np.flatnonzero(np.array(never, dtype=bool)[group])
        return {int(pending[i]): never[group[i]] for i in refused.tolist()}

    def _verdict(self, zones: tuple[str, ...], phone: str, state: str) -> tuple[LawRules, bool, str]:
        """check()'s answer for leads alike in zones, law and state, found once."""
        key = (zones, phone[:5], len(phone), state)
        found = self._alike.get(key)
        if found is None:
            if len(self._alike) >= 100_000:
                self._alike.clear()  # a state column of free text (no such file seen)
            law = rules_for(phone, state)  # the mapping checked the state column
            found = self._alike[key] = (law, *self._group(zones, law)[1:])
        return found

    def _group(self, zones: tuple[str, ...], law: LawRules) -> tuple[LawRules, bool, str]:
        key = (zones, law.states)
        group = self._groups.get(key)
        if group is None:
            is_open = self.hours.is_open(zones, self.now, law)
            never = ""
            if not is_open and self.hours.next_open(zones, self.now, law) is None:
                never = self.hours.law_conflict(law) or never_open_reason(zones)
            group = self._groups[key] = (law, is_open, never)
        return group

    def check(self, zones: tuple[str, ...], phone: str, state: str, n: int = 1) -> str:
        """Count `n` pending leads alike; '' when they are dialable, else why their hours never open."""
        law, is_open, never = self._verdict(zones, phone, state)
        if never:
            return never
        if law.states:
            self.laws[law] += n
        if is_open:
            self.due_now += n
        return ""

    def next_due(self) -> datetime | None:
        moments = [
            self.hours.next_open(zones, self.now, law)
            for (zones, _), (law, is_open, never) in self._groups.items()
            if not is_open and not never
        ]
        found = [m for m in moments if m is not None]
        return min(found) if found else None


def _alike_keys(rows: LeadRows, pending: npt.NDArray[np.intp]) -> npt.NDArray[np.int64]:
    """One integer per pending row, equal for rows alike in zones, law and state (_DueCheck).

    A pending row's number is its E.164 digits (no leading zero: a country code never starts
    with one), so its digit count and first four digits are its E.164's length and first
    five characters. Zones and states get ids by equality, in this chunk."""
    import numpy as np

    numbers = rows.numbers[pending]
    powers = 10 ** np.arange(19, dtype=np.int64)
    digits = np.searchsorted(powers, numbers, side="right")  # 10**(d-1) <= n < 10**d
    head = numbers // powers[np.maximum(digits - 4, 0)]  # the first four digits
    law = digits * 10_000 + head  # < 2**19
    zones, states = _ids(rows.timezones, pending), _ids(rows.state, pending)
    alike = zones * (int(states.max()) + 1) + states
    if int(alike.max()) >= 2**43:  # ~2**21 zones and states in a chunk: cannot be, but stay exact
        alike = np.unique(alike, return_inverse=True)[1].ravel()
    return alike * 2**19 + law


def _groups(
    keys: npt.NDArray[np.int64],
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Each distinct key's first offset and count, and each key's group: np.unique's
    return_index, return_inverse and return_counts, with the groups in order of first
    appearance. By hashing (pandas' factorize), about twice as fast as np.unique's sort
    on a chunk of keys."""
    import numpy as np
    import pandas as pd

    group, _ = pd.factorize(keys)
    # factorize numbers the groups as they first appear: a group starts where the codes rise.
    highest = np.maximum.accumulate(group)
    starts = np.ones(len(group), dtype=bool)
    starts[1:] = highest[1:] > highest[:-1]
    return np.flatnonzero(starts), group, np.bincount(group)


def _ids(column: list[Any], pending: npt.NDArray[np.intp]) -> npt.NDArray[np.int64]:
    """An id per pending row, equal for equal values of `column`: the offset of the value's first row."""
    import numpy as np

    ids: dict[Any, int] = {}
    values = np.fromiter(map(ids.setdefault, column, itertools.count()), np.int64, len(column))
    return values[pending]


def _as_row(lead: Lead, headers: list[str]) -> JournalRow:
    return JournalRow(
        id=0,
        position=lead.row,
        phone=lead.phone,
        name=lead.name,
        email=lead.email,
        timezones=lead.timezones,
        variables=lead.variables,
        status=Status(lead.status),
        attempts=0,
        intent_at=None,
        from_number="",
        call_id="",
        error=lead.error,
        cells=dict(zip(headers, lead.values, strict=False)),
        state=lead.state,
    )
