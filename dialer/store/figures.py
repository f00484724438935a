"""The campaign page's figures, aggregated in SQL: a million rows become a few hundred groups.

Every query here groups inside SQLite and hands Python only the groups (statuses, hours,
caller ids, reasons), so the page of a million-row campaign takes seconds and flat memory.
The call sections read the `calls` table (one row per call the API accepted; migration
2 -> 3 of issue 12) when the journal has it; a journal without it has "no calls followed yet".

The calls per final status, the pick-up rate, the calls live and those given up on are
not counted here: they are `dialer.store.calls.call_figures`, the function `dialer status`
and the run's summary print, so the page and `status` cannot disagree. The pick-up rate
per group (hour, caller id, attempt) is the same ratio: calls that ended `completed` over
calls with a final status that did not time out.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dialer.model import Status
from dialer.store.calls import CallFigures, call_figures

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


def has_calls(conn: sqlite3.Connection) -> bool:
    found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'calls'").fetchone()
    return found is not None


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
    """Everything the page says about calls, from two sorts of the calls table.

    Each GROUP BY is one sort of the table, the costly part on a million rows (about a
    second each), so the figures are read from as few as can be: `call_figures`' (status,
    final, timed_out) for what `status` prints, (caller id, attempt) for the rates, (lead's
    zone, time bucket) for the time charts, and the completed calls alone for the leads
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


_COMPLETED = "coalesce(sum(status = 'completed'), 0)"
_BASIS = "coalesce(sum(final = 1 AND timed_out = 0), 0)"
# Seconds per bar: a demo's minute of calls gets bars of 5 s, a month's of days.
STEPS = (5, 10, 30, 60, 300, 900, 3600, 3 * 3600, 6 * 3600, 86400, 7 * 86400, 30 * 86400)
BARS = 60  # calls over time: at most about this many bars


def call_charts(conn: sqlite3.Connection, daily_cap: int | None) -> CallCharts:
    totals = CallTotals()
    callers: dict[str, Rates] = {}
    by_ordinal: dict[int, Rates] = {}
    rows = conn.execute(
        f"SELECT from_number, ordinal, count(*), {_COMPLETED}, {_BASIS}, coalesce(sum(duration), 0.0)"
        " FROM calls GROUP BY from_number, ordinal"
    )
    for number, ordinal, n, done, basis, talk in rows:
        callers.setdefault(str(number), Rates()).add(int(n), int(done), int(basis))
        by_ordinal.setdefault(int(ordinal), Rates()).add(int(n), int(done), int(basis))
        totals.calls += int(n)
        totals.talk_seconds += float(talk)
    # Ordinals run 1, 2, ... per lead (1 = its first call): the leads with k calls are those
    # with a call k and none k + 1, which spares a scan grouped by lead.
    ordinals = sorted(by_ordinal)
    per_lead = {
        k: by_ordinal[k].calls - (by_ordinal[k + 1].calls if k + 1 in by_ordinal else 0) for k in ordinals
    }
    per_lead = {k: n for k, n in per_lead.items() if n > 0}
    totals.leads_called = by_ordinal[1].calls if 1 in by_ordinal else 0
    reached = conn.execute("SELECT count(DISTINCT lead_id) FROM calls WHERE status = 'completed'").fetchone()
    totals.leads_reached = int(reached[0])
    step, over_time, by_hour, by_weekday = _in_time(conn)
    return CallCharts(
        totals=totals,
        figures=call_figures(conn),
        callers=_callers(conn, callers, daily_cap),
        by_ordinal=dict(sorted(by_ordinal.items())),
        per_lead=per_lead,
        step=step,
        over_time=over_time,
        by_hour=by_hour,
        by_weekday=by_weekday,
    )


def _callers(conn: sqlite3.Connection, callers: dict[str, Rates], daily_cap: int | None) -> list[CallerId]:
    rested: dict[str, int] = {}
    if daily_cap:
        rested = {
            str(number): int(n)
            for number, n in conn.execute(
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
    conn: sqlite3.Connection,
) -> tuple[float, list[tuple[datetime, Rates]], dict[int, Rates], dict[int, Rates]]:
    """Calls over time, and pick-ups by the lead's local hour and weekday, from one scan.

    SQLite knows no time zones, so it groups by (the lead's zones, UTC bucket of at most an
    hour); each group is turned into the local hour of the lead's first zone here, at the middle of
    its bucket (a half-hour offset such as India's falls in its right hour). Calls carried
    over from a journal of schema 2 have no time (placed_at 0) and are left out.
    """
    # Four look-ups in the calls_live index (final, placed_at) instead of a scan.
    ends = [
        conn.execute(
            f"SELECT {end}(placed_at) FROM calls WHERE final = ? AND placed_at > 0", (final,)
        ).fetchone()[0]
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
    bucket = min(step, 3600)  # divides an hour: each bucket lies in one local hour
    rows = conn.execute(
        "SELECT leads.timezones AS zones, CAST(calls.placed_at / ? AS INTEGER) AS bucket, count(*),"
        f" {_COMPLETED.replace('status', 'calls.status')}, {_BASIS}"
        " FROM calls JOIN leads ON leads.id = calls.lead_id WHERE calls.placed_at > 0 GROUP BY zones, bucket",
        (bucket,),
    )
    zones: dict[str, ZoneInfo] = {}
    periods: dict[int, Rates] = {}
    for names, number, n, done, basis in rows:
        tz = zones.get(names) or zones.setdefault(names, _zone((str(names).split() or ["UTC"])[0]))
        local = datetime.fromtimestamp(number * bucket + bucket / 2, tz=UTC).astimezone(tz)
        for group in (by_hour[local.hour], by_weekday[local.weekday()]):
            group.add(int(n), int(done), int(basis))
        periods.setdefault(int(number * bucket // step), Rates()).add(int(n), int(done), int(basis))
    over_time = [
        (datetime.fromtimestamp(period * step, tz=UTC), rates) for period, rates in sorted(periods.items())
    ]
    return float(step), over_time, by_hour, by_weekday


@dataclass
class Reason:
    status: str
    reason: str  # the error with its values elided (reason_kind)
    rows: int
    examples: list[int] = field(default_factory=list)  # spreadsheet rows, the first few


def problems(conn: sqlite3.Connection) -> list[Reason]:
    """Failed and invalid rows grouped by status and reason, with counts and the first rows."""
    conn.create_function("reason_kind", 1, reason_kind, deterministic=True)
    marks = ",".join("?" * len(PROBLEM_STATUSES))
    rows = conn.execute(
        "WITH kinds AS (SELECT status, reason_kind(error) AS kind, position FROM leads"
        f"   WHERE status IN ({marks}) AND position IS NOT NULL),"
        " ranked AS (SELECT status, kind, position,"
        "   row_number() OVER (PARTITION BY status, kind ORDER BY position) AS nth,"
        "   count(*) OVER (PARTITION BY status, kind) AS n FROM kinds)"
        " SELECT status, kind, n, position FROM ranked WHERE nth <= ?"
        " ORDER BY n DESC, status, kind, position",
        (*PROBLEM_STATUSES, EXAMPLES_PER_REASON),
    )
    found: dict[tuple[str, str], Reason] = {}
    for status, kind, n, position in rows:
        reason = found.setdefault((status, kind), Reason(str(status), str(kind), int(n)))
        reason.examples.append(int(position))
    return list(found.values())


def requests_per_row(conn: sqlite3.Connection) -> dict[int, int]:
    """Rows per number of requests made for them (`leads.attempts`), for a journal without calls."""
    rows = conn.execute(
        "SELECT attempts, count(*) FROM leads WHERE position IS NOT NULL AND attempts > 0"
        " GROUP BY attempts ORDER BY attempts"
    )
    return {int(a): int(n) for a, n in rows}


def first_and_last_request(conn: sqlite3.Connection) -> tuple[datetime | None, datetime | None]:
    first, last = conn.execute("SELECT min(intent_at), max(intent_at) FROM leads").fetchone()

    def moment(value: float | None) -> datetime | None:
        return None if value is None else datetime.fromtimestamp(float(value), tz=UTC)

    return moment(first), moment(last)


__all__ = [
    "CallCharts",
    "CallFigures",
    "CallTotals",
    "CallerId",
    "Rates",
    "Reason",
    "call_charts",
    "first_and_last_request",
    "has_calls",
    "problems",
    "reason_kind",
    "requests_per_row",
]
