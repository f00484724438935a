"""The campaign page's figures, aggregated in SQL: a million rows become a few hundred groups.

Every query here groups inside the database and hands Python only the groups (caller
ids, attempts, statuses, hours, reasons), so the page of a million-row campaign takes
seconds and flat memory. The statements are one text for both stores (qmark style: the
PostgreSQL store turns `?` into `%s`), run through a `Reader` each store makes; the one
expression the two engines write differently, a call's time bucket, is a pair side by side
(`SQLITE_BUCKET`, `PG_BUCKET`). A store's `page_figures` reads them all in one snapshot.

The calls per final status, the pick-up rate, the calls live and those given up on are
`dialer.store.calls.figures_from`'s, the function `dialer status` and the run's summary
print through, fed here with the same counts rolled up from finer groups, so the page and
`status` cannot disagree. The pick-up rate per group (hour, caller id, attempt) is the same
ratio: calls that ended `completed` over calls with a final status that did not time out.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dialer.model import Status
from dialer.store.calls import CallFigures, figures_from

# Statuses whose rows the page lists by reason.
PROBLEM_STATUSES = (Status.FAILED, Status.INVALID)
EXAMPLES_PER_REASON = 3

_VARYING = re.compile(r"""("[^"]*"|'[^']*'|\+?\d[\d.,E+\-]*)""")


def reason_kind(error: str) -> str:
    """Group similar errors: values, numbers and rows become `…`.

    'invalid phone number '555-01': too short' -> 'invalid phone number …: too short';
    'same number as row 3' -> 'same number as row …'. `validate` groups its reasons so too.
    """
    return _VARYING.sub("…", error).strip() or error


Rows = Callable[[str, Sequence[Any]], Iterable[Sequence[Any]]]


@dataclass(frozen=True)
class Reader:
    """How a store runs this module's statements."""

    rows: Rows  # a statement in qmark style and its parameters -> its rows, read to the end
    bucket: str  # SQL for `calls.placed_at` in whole buckets of `?` seconds (SQLITE_BUCKET, PG_BUCKET)


# A call's time bucket, an integer. SQLite's CAST truncates toward zero, which for the
# positive times read (placed_at > 0) is the floor; PostgreSQL's CAST rounds to nearest, so
# it takes the floor first. SQLite's floor() needs a build with its math functions: not relied on.
SQLITE_BUCKET = "CAST(calls.placed_at / ? AS INTEGER)"
PG_BUCKET = "CAST(floor(calls.placed_at / ?) AS BIGINT)"


@dataclass
class Rates:
    """Calls and pick-ups in one group (an hour, a weekday, a caller id, an ordinal)."""

    calls: int = 0
    completed: int = 0
    basis: int = 0  # calls with a final status that did not time out

    @property
    def rate(self) -> float | None:
        return self.completed / self.basis if self.basis else None

    def add(self, calls: int, completed: int, basis: int) -> None:
        self.calls += calls
        self.completed += completed
        self.basis += basis


@dataclass
class CallTotals:
    """The headline's call figures that `status` does not print (those it does are `CallFigures`)."""

    calls: int = 0
    leads_called: int = 0  # leads with at least one call
    leads_reached: int = 0  # leads with at least one call that ended `completed`
    talk_seconds: float = 0.0


@dataclass
class CallerId:
    number: str
    rates: Rates
    rested_days: int  # local days on which the number reached the daily cap


@dataclass
class CallCharts:
    """Everything the page says about calls, from two scans of the calls table.

    One GROUP BY (caller id, attempt, status, final, timed_out) gives the rates per caller id
    and attempt, the talk time and `status`'s figures; it streams in the order of the
    `calls_outcome` index (schema 8) where SQLite would otherwise sort the table. The other,
    (lead's zone, time bucket), gives the time charts; and the completed calls alone, the leads
    reached. Their groups are few (a few per status, caller id, attempt, hour and zone).
    """

    totals: CallTotals
    figures: CallFigures  # as `dialer status` prints them: per final status, live, given up, pick-up rate
    callers: list[CallerId]
    by_ordinal: dict[int, Rates]  # pick-ups by attempt (1 = the lead's first call)
    per_lead: dict[int, int]  # leads per number of calls they had
    step: float  # seconds per bucket of `over_time`
    over_time: list[tuple[datetime, Rates]]  # UTC
    by_hour: dict[int, Rates]  # the lead's local hour, 0-23
    by_weekday: dict[int, Rates]  # the lead's local weekday, 0 = Monday


@dataclass
class Reason:
    status: str
    reason: str  # the error with its values elided (reason_kind)
    rows: int
    examples: list[int] = field(default_factory=list)  # spreadsheet rows, the first few


@dataclass
class PageFigures:
    """All the page shows of a journal, read in one snapshot (`JournalStore.page_figures`)."""

    counts: dict[str, int]  # rows per dialer_status, as `dialer status` prints them
    calls: CallCharts | None  # None: no call placed or followed yet
    problems: list[Reason]
    first_request: datetime | None
    last_request: datetime | None
    source: str  # the journal as the page's footer names it (never a password or a host)


def read_page(reader: Reader, counts: dict[str, int], daily_cap: int | None, source: str) -> PageFigures:
    """The page's figures; `counts` the store's own (`JournalStore.counts`)."""
    calls = call_charts(reader, daily_cap)
    first, last = first_and_last_request(reader)
    return PageFigures(
        counts=counts,
        calls=calls if calls.totals.calls else None,
        problems=problems(reader),
        first_request=first,
        last_request=last,
        source=source,
    )


# Seconds per bar: a demo's minute of calls gets bars of 5 s, a month's of days.
STEPS = (5, 10, 30, 60, 300, 900, 3600, 3 * 3600, 6 * 3600, 86400, 7 * 86400, 30 * 86400)
BARS = 60  # calls over time: at most about this many bars

_COMPLETED = "coalesce(sum(CASE WHEN calls.status = 'completed' THEN 1 ELSE 0 END), 0)"
_BASIS = "coalesce(sum(CASE WHEN calls.final = 1 AND calls.timed_out = 0 THEN 1 ELSE 0 END), 0)"
# In the order of the calls_outcome index, so SQLite reads the groups off it without a sort.
OUTCOME_GROUPS_SQL = (
    "SELECT from_number, ordinal, status, final, timed_out, count(*), coalesce(sum(duration), 0.0)"
    " FROM calls GROUP BY from_number, ordinal, status, final, timed_out"
)
REACHED_SQL = "SELECT count(DISTINCT lead_id) FROM calls WHERE status = 'completed'"


def call_charts(reader: Reader, daily_cap: int | None) -> CallCharts:
    totals = CallTotals()
    callers: dict[str, Rates] = {}
    by_ordinal: dict[int, Rates] = {}
    # Rolled up as `status` reads them (calls.FIGURES_SQL, calls.BY_ATTEMPT_SQL).
    by_status: dict[tuple[str, int, int], int] = {}
    by_attempt: dict[int, list[int]] = {}
    for number, ordinal, status, final, timed_out, n, talk in reader.rows(OUTCOME_GROUPS_SQL, ()):
        n, ordinal, final, timed_out = int(n), int(ordinal), int(final), int(timed_out)
        ended = final == 1 and timed_out == 0
        done = n if status == "completed" else 0
        basis = n if ended else 0
        callers.setdefault(str(number), Rates()).add(n, done, basis)
        by_ordinal.setdefault(ordinal, Rates()).add(n, done, basis)
        key = (str(status), final, timed_out)
        by_status[key] = by_status.get(key, 0) + n
        if ended:
            attempt = by_attempt.setdefault(ordinal, [0, 0])
            attempt[0] += done
            attempt[1] += n
        totals.calls += n
        totals.talk_seconds += float(talk)
    # Ordinals run 1, 2, ... per lead (1 = its first call): the leads with k calls are those
    # with a call k and none k + 1, which spares a scan grouped by lead.
    ordinals = sorted(by_ordinal)
    per_lead = {
        k: by_ordinal[k].calls - (by_ordinal[k + 1].calls if k + 1 in by_ordinal else 0) for k in ordinals
    }
    per_lead = {k: n for k, n in per_lead.items() if n > 0}
    totals.leads_called = by_ordinal[1].calls if 1 in by_ordinal else 0
    totals.leads_reached = int(_one(reader, REACHED_SQL)[0])
    step, over_time, by_hour, by_weekday = _in_time(reader)
    # Ties in `status`'s order (most calls first) fall in the order of the statuses' names.
    rolled = sorted((*key, n) for key, n in by_status.items())
    attempts = [(k, done, ended) for k, (done, ended) in sorted(by_attempt.items())]
    return CallCharts(
        totals=totals,
        figures=figures_from(rolled, attempts),
        callers=_callers(reader, callers, daily_cap),
        by_ordinal=dict(sorted(by_ordinal.items())),
        per_lead=per_lead,
        step=step,
        over_time=over_time,
        by_hour=by_hour,
        by_weekday=by_weekday,
    )


def _one(reader: Reader, statement: str, params: Sequence[Any] = ()) -> Sequence[Any]:
    """The one row of an aggregate without GROUP BY."""
    return next(iter(list(reader.rows(statement, params))))


def _callers(reader: Reader, callers: dict[str, Rates], daily_cap: int | None) -> list[CallerId]:
    rested: dict[str, int] = {}
    if daily_cap:
        rested = {
            str(number): int(n)
            for number, n in reader.rows(
                "SELECT number, count(*) FROM number_usage WHERE calls >= ? GROUP BY number", (daily_cap,)
            )
        }
    ordered = sorted(callers.items(), key=lambda kv: (-kv[1].calls, kv[0]))
    return [CallerId(number or "(none)", rates, rested.get(number, 0)) for number, rates in ordered]


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _in_time(
    reader: Reader,
) -> tuple[float, list[tuple[datetime, Rates]], dict[int, Rates], dict[int, Rates]]:
    """Calls over time, and pick-ups by the lead's local hour and weekday, from one scan.

    SQLite knows no time zones, so both stores group by (the lead's zones, UTC bucket of at
    most a quarter of an hour); each group is turned into the local hour and weekday of the
    lead's first zone here, at the middle of its bucket.
    Calls carried over from a journal of schema 2 have no time (placed_at 0) and are left out.
    """
    # Four look-ups in the calls_live index (final, placed_at) instead of a scan.
    ends = [
        _one(reader, f"SELECT {end}(placed_at) FROM calls WHERE final = ? AND placed_at > 0", (final,))[0]
        for end in ("min", "max")
        for final in (0, 1)
    ]
    first = min((e for e in ends[:2] if e is not None), default=None)
    last = max((e for e in ends[2:] if e is not None), default=None)
    by_hour = {h: Rates() for h in range(24)}
    by_weekday = {d: Rates() for d in range(7)}
    if first is None or last is None:
        return 60.0, [], by_hour, by_weekday
    span = max(float(last) - float(first), 1.0)
    step = next((s for s in STEPS if span / s <= BARS), STEPS[-1])
    # A quarter of an hour divides an hour and every zone's offset from UTC (India's 5:30,
    # Nepal's 5:45): each bucket lies in one local hour of every zone.
    bucket = min(step, 900)
    rows = reader.rows(
        f"SELECT leads.timezones AS zones, {reader.bucket} AS bucket, count(*), {_COMPLETED}, {_BASIS}"
        " FROM calls JOIN leads ON leads.id = calls.lead_id WHERE calls.placed_at > 0"
        " GROUP BY leads.timezones, bucket",
        (bucket,),
    )
    zones: dict[str, ZoneInfo] = {}
    periods: dict[int, Rates] = {}
    for names, number, n, done, basis in rows:
        tz = zones.get(names) or zones.setdefault(names, _zone((str(names).split() or ["UTC"])[0]))
        local = datetime.fromtimestamp(int(number) * bucket + bucket / 2, tz=UTC).astimezone(tz)
        for group in (by_hour[local.hour], by_weekday[local.weekday()]):
            group.add(int(n), int(done), int(basis))
        periods.setdefault(int(number) * bucket // step, Rates()).add(int(n), int(done), int(basis))
    over_time = [
        (datetime.fromtimestamp(period * step, tz=UTC), rates) for period, rates in sorted(periods.items())
    ]
    return float(step), over_time, by_hour, by_weekday


# The first few rows of each distinct error: the same error text is one group in SQL (it
# sorts only the failed and invalid rows), then the errors are grouped by `reason_kind` here,
# the one Python function `validate` groups by too, so both stores group alike by
# construction (a regex of each engine's own would differ on the odd character).
PROBLEMS_SQL = (
    "SELECT status, error, n, nth, position FROM ("
    " SELECT status, error, position, count(*) OVER (PARTITION BY status, error) AS n,"
    "  row_number() OVER (PARTITION BY status, error ORDER BY position) AS nth"
    " FROM leads WHERE status IN ({marks}) AND position IS NOT NULL) AS ranked"
    " WHERE nth <= ?"
)


def problems(reader: Reader) -> list[Reason]:
    """Failed and invalid rows grouped by status and reason, with counts and the first rows."""
    statement = PROBLEMS_SQL.format(marks=", ".join("?" * len(PROBLEM_STATUSES)))
    found: dict[tuple[str, str], Reason] = {}
    for status, error, n, nth, position in reader.rows(statement, (*PROBLEM_STATUSES, EXAMPLES_PER_REASON)):
        kind = reason_kind(str(error))
        reason = found.setdefault((str(status), kind), Reason(str(status), kind, 0))
        if nth == 1:  # the error's first row carries its count
            reason.rows += int(n)
        bisect.insort(reason.examples, int(position))
        del reason.examples[EXAMPLES_PER_REASON:]
    return sorted(found.values(), key=lambda r: (-r.rows, r.status, r.reason))


def first_and_last_request(reader: Reader) -> tuple[datetime | None, datetime | None]:
    first, last = _one(reader, "SELECT min(intent_at), max(intent_at) FROM leads")

    def moment(value: float | None) -> datetime | None:
        return None if value is None else datetime.fromtimestamp(float(value), tz=UTC)

    return moment(first), moment(last)


__all__ = [
    "PG_BUCKET",
    "SQLITE_BUCKET",
    "CallCharts",
    "CallFigures",
    "CallTotals",
    "CallerId",
    "PageFigures",
    "Rates",
    "Reader",
    "Reason",
    "call_charts",
    "first_and_last_request",
    "problems",
    "read_page",
    "reason_kind",
]
