"""The vocabulary every stage shares: a row's status, the sets the stages reason with, and
the plain records that cross from one stage to the next (a journal row, a row's outcome).

Plain data only: no stage-specific behaviour lives here, so any module may import it
without pulling in another stage.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum


class Status(StrEnum):
    """A row's `dialer_status` (interface.md, "The report"). A StrEnum: it is its own text."""

    PENDING = "pending"  # not tried yet
    DEFERRED = "deferred"  # outside its calling hours, capped caller ids, or a redial not yet due
    SENT = "sent"  # the API accepted it
    FAILED = "failed"  # refused for good, or every attempt failed
    INVALID = "invalid"  # cannot be dialed as written
    DUPLICATE = "duplicate"  # same number as an earlier row
    SUPPRESSED = "suppressed"  # on a do-not-call or opt-out list
    UNKNOWN = "unknown"  # may have reached the API; held until a look-up settles it


# Statuses a run may dial.
DIALABLE: frozenset[Status] = frozenset({Status.PENDING, Status.DEFERRED})
# Statuses that say a request may have placed a call or chat for the row's number.
MAY_HAVE_CALLED: frozenset[Status] = frozenset({Status.SENT, Status.UNKNOWN})
# Statuses a later run still has work for (exit 75 while any row holds one).
REMAINING: frozenset[Status] = frozenset({Status.PENDING, Status.DEFERRED, Status.UNKNOWN})
# Statuses no later run changes on its own (flags like --retry-failed aside).
SETTLED: frozenset[Status] = frozenset(Status) - REMAINING
# A call's final statuses (the API's own words): anything else, an unknown word included,
# means the call may still be live.
FINAL_CALL_STATUSES: frozenset[str] = frozenset(
    {
        "completed",
        "no-answer",
        "busy",
        "failed",
        "canceled",
        "user-canceled",
        "hangup_on_voicemail",
        "left_voicemail",
        "spam",
    }
)
# A chat's final statuses (`chat_status`); `ongoing` and anything else is not final.
FINAL_CHAT_STATUSES: frozenset[str] = frozenset({"completed", "cancelled"})
# Verdicts of the mapping: a row with one of these is never dialed.
NEVER_DIALED: frozenset[Status] = frozenset({Status.INVALID, Status.DUPLICATE, Status.SUPPRESSED})


@dataclass(frozen=True, slots=True)
class Lead:
    """One data row of the leads file, mapped: what the mapping hands the journal.

    `row` is the spreadsheet row number: the header is row 1, so the first data
    row is 2 (what Excel shows; used in every message). Blank rows are skipped
    but counted, so `row` is the number Excel shows for the row.
    """

    row: int
    values: tuple[str, ...]  # the original cells, in header order, as read
    status: Status  # PENDING, or one of NEVER_DIALED
    error: str = ""  # why, for invalid / duplicate / suppressed
    phone: str = ""  # E.164, "" when it could not be read
    name: str = ""
    email: str = ""
    timezones: tuple[str, ...] = ()  # IANA names: the column's value, or inferred from the number
    variables: dict[str, str] = field(default_factory=dict)
    state: str = ""  # the state column's text as written ("" when none), for the law


@dataclass(frozen=True, slots=True)
class LeadRows:
    """A chunk of mapped leads column by column: a Lead's fields, one list per field.

    What the mapping hands validate and the import, which take a million rows: a Python
    object per row cost them more than all their own work. `leads()` gives the same
    rows as Leads, for everything else.
    """

    row: list[int]
    cells: list[list[str]]  # one list per header, in header order: the rows' `values`
    status: list[Status]
    error: list[str]
    phone: list[str]
    name: list[str]
    email: list[str]
    timezones: list[tuple[str, ...]]
    state: list[str]
    variable_names: tuple[str, ...]
    variable_cells: list[list[str]]  # one list per variable name

    def __len__(self) -> int:
        return len(self.row)

    def values(self) -> Iterator[tuple[str, ...]]:
        """Each row's cells, in header order (a Lead's `values`)."""
        return zip(*self.cells, strict=True)

    def variables(self) -> list[dict[str, str]]:
        """Each row's custom variables (a Lead's `variables`)."""
        names = self.variable_names
        if not names:
            return [{} for _ in self.row]
        return [dict(zip(names, row, strict=True)) for row in zip(*self.variable_cells, strict=True)]

    def lead(self, offset: int) -> Lead:
        """The row at `offset` of the chunk as a Lead."""
        variables = dict(
            zip(self.variable_names, (cells[offset] for cells in self.variable_cells), strict=True)
        )
        return Lead(
            self.row[offset],
            tuple(cells[offset] for cells in self.cells),
            self.status[offset],
            self.error[offset],
            self.phone[offset],
            self.name[offset],
            self.email[offset],
            self.timezones[offset],
            variables,
            self.state[offset],
        )

    def leads(self) -> Iterator[Lead]:
        """The rows as Leads, in file order."""
        fields = (self.row, self.values(), self.status, self.error, self.phone, self.name, self.email)
        rest = (self.timezones, self.variables(), self.state)
        # Positional: a Lead is a frozen dataclass, and keywords cost a third more.
        for args in zip(*fields, *rest, strict=True):
            yield Lead(*args)


@dataclass(frozen=True, slots=True)
class JournalRow:
    """A lead as the journal holds it and the dispatcher needs it."""

    id: int
    position: int
    phone: str
    name: str
    email: str
    timezones: tuple[str, ...]
    variables: dict[str, str]
    status: Status
    attempts: int
    intent_at: float | None
    from_number: str
    call_id: str
    error: str
    # Requests that got no answer (left `unknown` for a look-up): caps the re-dials after a
    # look-up found no call, counted in the journal so the cap holds across crashes and runs.
    unanswered: int = 0
    # Every cell of the row by header (the latest import's), for {Column} placeholders.
    cells: dict[str, str] = field(default_factory=dict)
    # The state column's text ("" when none): with the number's area code, it decides the law.
    state: str = ""
    # [redial]: epoch seconds the lead's next call is due (None: no redial was decided).
    redial_at: float | None = None


@dataclass(frozen=True, slots=True)
class CallOutcome:
    """One call (or chat) as the API last showed it: what follow.py reads from a GET."""

    call_id: str
    status: str  # the API's word, as given ('' when it gave none)
    duration: float | None = None  # seconds
    end_reason: str = ""
    recording_url: str = ""
    collected: dict[str, str] = field(default_factory=dict)  # flattened, values as text


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one row, as the report shows it."""

    status: str
    id: str = ""
    from_number: str = ""
    attempts: int = 0
    error: str = ""
    updated_at: str = ""  # UTC, ISO 8601
    # The row's latest call, as last seen (empty before a call), and its calls in all.
    call_status: str = ""
    end_reason: str = ""
    duration: float | None = None
    calls: int = 0
    recording_url: str = ""
    collected: dict[str, str] = field(default_factory=dict)
