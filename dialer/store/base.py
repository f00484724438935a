"""What the rest of the dialer may ask of a journal, whichever store keeps it.

Two implementations: `sqlite.Journal` (a file per campaign, the default, no
service) and `postgres.PgJournal` (a schema per campaign in a PostgreSQL
database, for several processes or hosts). tests/test_journal.py runs one suite
over both. A change of the journal's behaviour lands in both, or the suite says
which one lags.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from dialer.columns import ColumnMap
from dialer.config import Campaign
from dialer.model import JournalRow, Lead, LeadRows, Outcome, Status
from dialer.store.calls import CallFigures, LiveCall
from dialer.store.claims import Claims
from dialer.store.figures import PageFigures
from dialer.store.importing import ImportSummary
from dialer.store.writes import Write

if TYPE_CHECKING:
    from dialer.store.liveslots import NoRoom


class Writer(Protocol):
    """Commits the dispatcher's `Write`s in groups (see writer.py for the rule)."""

    commits: int

    async def commit(self, writes: list[Write]) -> None: ...

    def submit(self, writes: list[Write]) -> None: ...

    async def close(self) -> None: ...


class RateGrant(Protocol):
    def left(self) -> None:
        """The request's last byte went out (now)."""


class RateGate(Protocol):
    """A send window shared with other runs (pgrate.py): acquire before each POST."""

    async def acquire(self) -> RateGrant: ...

    async def throttled(self) -> None: ...

    async def close(self) -> None: ...


class LiveSlots(Protocol):
    """Live-call slots shared with other runs and campaigns (liveslots.py): `take` before
    each POST; the others say what became of it. Only `take` waits."""

    async def take(self, lead_id: int) -> None: ...

    def placed(self, lead_id: int, call_id: str) -> None: ...

    def give_back(self, lead_id: int) -> None: ...

    def hand_over(self, lead_id: int) -> None: ...

    def found(self, lead_id: int, call_id: str) -> None: ...

    def ended(self, lead_id: int, call_id: str) -> None: ...

    async def refused(self) -> None: ...

    def watch_orphans(self, take_over: Callable[[list[str]], None]) -> None: ...

    def watch_unsettled(self, settles: Callable[[int], bool], no_room: Callable[[NoRoom], None]) -> None: ...

    async def close(self) -> None: ...


class JournalStore(Protocol):
    """A campaign's journal: meta, the import, reads, and whole-table transitions."""

    @property
    def label(self) -> str:
        """Where the journal is, for messages (a path, or a URL without its password)."""

    def close(self) -> None: ...

    def writer(self) -> Writer: ...

    def claims(self, lease_seconds: float) -> Claims | None:
        """This run's claims, when several runs may share the campaign (else None: one run)."""

    def rows_by_id(self, ids: Sequence[int]) -> list[JournalRow]: ...

    def rate_gate(self, campaign: Campaign) -> RateGate | None:
        """The window shared with other runs and campaigns of the account; None: this run alone."""

    def live_slots(self, campaign: Campaign) -> LiveSlots | None:
        """Live-call slots shared with other runs and the account's campaigns; None: this run alone."""

    def get_meta(self, key: str) -> str | None: ...

    def set_meta(self, key: str, value: str) -> None: ...

    @property
    def headers(self) -> list[str]: ...

    @property
    def is_imported(self) -> bool: ...

    def signature(self) -> dict[str, Any] | None: ...

    def import_leads(
        self,
        headers: Sequence[str],
        columns: ColumnMap,
        leads: Iterable[Lead | LeadRows],
        signature: dict[str, Any],
    ) -> ImportSummary: ...

    def counts(self) -> dict[str, int]: ...

    def count_removed(self) -> int: ...

    def rows_with_status(self, statuses: Collection[Status], batch: int = 2000) -> Iterator[JournalRow]: ...

    def row(self, row_id: int) -> JournalRow: ...

    def zone_sets(self, statuses: Collection[Status]) -> dict[tuple[str, ...], int]: ...

    def recent_sends(self, seconds: float = 5.0) -> list[float]: ...

    def number_usage(self) -> dict[tuple[str, str], int]: ...

    def law_groups(self, statuses: Collection[Status]) -> dict[tuple[tuple[str, ...], str, str], int]:
        """Rows in `statuses` by (time zones, US area code or '', state column), with counts."""

    def dialable_dials_since(self, since: float) -> dict[tuple[str, tuple[str, ...], str], list[float]]:
        """(phone, time zones, state column) of each dialable row dialed after `since`: its dials."""

    def dials_since(self, phone: str, since: float) -> list[float]:
        """Epoch seconds of every committed intent to `phone` after `since`, by any row."""

    def live_calls(self) -> list[LiveCall]:
        """Every row's latest call still live, oldest first."""

    def call_figures(self, now: float | None = None) -> CallFigures:
        """Final calls per status, calls live, calls given up, pick-ups by attempt, and the
        redials not due by epoch `now` (default: the time now): for `status` and the summary."""

    def placed_count(self, lead_id: int) -> int:
        """Calls placed for the lead in all (redials included): what [redial] max_calls counts."""

    def earlier_call_ids(self, lead_id: int) -> set[str]:
        """The ids of the lead's calls placed by its requests before the latest: none of them
        is the latest request's call (what a look-up after a lost answer looks for)."""

    def recent_by_caller(self, since: float) -> dict[str, list[tuple[str, float | None]]]:
        """Per caller id, its calls placed after epoch `since` that ended, newest first, as
        (final status, duration): what caller-id health reads."""

    def redials_waiting(self, now: float) -> list[tuple[str, tuple[str, ...], str, float]]:
        """[redial]: rows whose next call is due after epoch `now`, as (phone, time zones,
        state, due), soonest first."""

    def collected_names(self) -> list[str]:
        """Every collected variable any call returned, sorted: a report column each."""

    def page_figures(self, daily_cap: int | None) -> PageFigures:
        """The campaign page's figures (figures.py), every one read in one snapshot of the
        journal, so a run writing meanwhile cannot make two of them disagree."""

    def report_rows(self) -> Iterator[tuple[list[str], Outcome]]: ...

    def defer_dialable(self, reason: str) -> int: ...

    def suppress(self, sources: dict[str, str]) -> int: ...

    def requeue(self, from_status: Status, note: str = "") -> int: ...
