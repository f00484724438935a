"""The vocabulary every stage shares: a row's status, the sets the stages reason with, and
the plain records that cross from one stage to the next (a journal row, a row's outcome).

Plain data only: no stage-specific behaviour lives here, so any module may import it
without pulling in another stage.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy is the mapping's: `status` and `report` never load it
    import numpy as np
    import numpy.typing as npt


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


# The verdicts of the mapping as small ints (LeadRows.codes): a chunk's statuses are then
# counted and compared by numpy, not one Status object at a time.
STATUS_CODES: tuple[Status, ...] = (Status.PENDING, Status.INVALID, Status.DUPLICATE, Status.SUPPRESSED)
PENDING_CODE, INVALID_CODE, DUPLICATE_CODE, SUPPRESSED_CODE = range(len(STATUS_CODES))


class LeadRows:
    """A chunk of mapped leads column by column: a Lead's fields, one list per field.

    What the mapping hands validate and the import, which take a million rows: a Python
    object per row cost them more than all their own work. `leads()` gives the same
    rows as Leads, for everything else.

    The verdicts come as numpy arrays too (`codes`, `numbers`), for validate's counts.
    The columns validate does not read (cells, names, emails) are built on first use:
    `cells`, `name` and `email` call the functions the mapping gave, once.
    """

    def __init__(
        self,
        *,
        rows: npt.NDArray[np.int64],
        codes: npt.NDArray[np.int8],
        numbers: npt.NDArray[np.int64],
        errors: npt.NDArray[np.object_],
        phone: list[str],
        timezones: list[tuple[str, ...]],
        state: list[str],
        cells: Callable[[], list[list[str]]],
        name: Callable[[], list[str]],
        email: Callable[[], list[str]],
        variable_names: tuple[str, ...],
        variable_at: list[int],
    ) -> None:
        self.rows = rows  # the spreadsheet rows, as `row`
        self.codes = codes  # each row's status, an index into STATUS_CODES
        self.numbers = numbers  # the E.164 digits as an integer; 0 for a row not dialable
        self.errors = errors  # each row's `error`, as `error`
        self.phone = phone
        self.timezones = timezones
        self.state = state
        self.variable_names = variable_names
        self._cells, self._name, self._email = cells, name, email
        self._variable_at = variable_at

    def __len__(self) -> int:
        return len(self.rows)

    @cached_property
    def row(self) -> list[int]:
        return self.rows.tolist()  # type: ignore[no-any-return]

    @cached_property
    def status(self) -> list[Status]:
        return list(map(STATUS_CODES.__getitem__, self.codes.tolist()))

    @cached_property
    def error(self) -> list[str]:
        return self.errors.tolist()  # type: ignore[no-any-return]

    @cached_property
    def cells(self) -> list[list[str]]:
        """One list per header, in header order: the rows' `values`."""
        return self._cells()

    @cached_property
    def name(self) -> list[str]:
        return self._name()

    @cached_property
    def email(self) -> list[str]:
        return self._email()

    @property
    def variable_cells(self) -> list[list[str]]:
        """One list per variable name."""
        return [self.cells[i] for i in self._variable_at]

    def values(self) -> Iterator[tuple[str, ...]]:
        """Each row's cells, in header order (a Lead's `values`)."""
        return zip(*self.cells, strict=True)

    def variables(self) -> list[dict[str, str]]:
        """Each row's custom variables (a Lead's `variables`)."""
        names = self.variable_names
        if not names:
            return [{} for _ in self.rows]
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
