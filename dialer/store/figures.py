"""The campaign page's figures, aggregated in SQL: a million rows become a few hundred groups.

Every query here groups inside SQLite and hands Python only the groups (statuses, hours,
caller ids, reasons), so the page of a million-row campaign takes seconds and flat memory.
The call sections read the `calls` table (one row per call the API accepted; migration
2 -> 3 of issue 12) when the journal has it; a journal without it has "no calls followed yet".

Pick-up rate is the contract's: calls that ended `completed` over calls with a final
status that did not time out.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dialer.model import Status

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
class CallTotals:
    """The calls of a campaign in a few numbers (the headline's call half)."""

    calls: int = 0
    leads_called: int = 0  # leads with at least one call
    leads_reached: int = 0  # leads with at least one call that ended `completed`
    completed: int = 0
    answered_basis: int = 0  # calls with a final status that did not time out
    live: int = 0  # the latest call of a lead still without a final status
    timed_out: int = 0
    talk_seconds: float = 0.0

    @property
    def pickup_rate(self) -> float | None:
        return self.completed / self.answered_basis if self.answered_basis else None


def call_totals(conn: sqlite3.Connection) -> CallTotals:
    row = conn.execute(
        "SELECT count(*), count(DISTINCT lead_id),"
        " count(DISTINCT CASE WHEN status = 'completed' THEN lead_id END),"
        " coalesce(sum(status = 'completed'), 0),"
        " coalesce(sum(final = 1 AND timed_out = 0), 0),"
        " coalesce(sum(timed_out), 0),"
        " coalesce(sum(duration), 0.0)"
        " FROM calls"
    ).fetchone()
    live = conn.execute(
        "SELECT count(*) FROM leads JOIN calls ON calls.call_id = leads.call_id"
        " WHERE leads.position IS NOT NULL AND calls.final = 0"
    ).fetchone()[0]
    return CallTotals(
        calls=int(row[0]),
        leads_called=int(row[1]),
        leads_reached=int(row[2]),
        completed=int(row[3]),
        answered_basis=int(row[4]),
        timed_out=int(row[5]),
        talk_seconds=float(row[6]),
        live=int(live),
    )


def call_statuses(conn: sqlite3.Connection) -> dict[str, int]:
    """Calls per status the API last gave ('' before the first poll shows as 'placed')."""
    rows = conn.execute("SELECT status, count(*) FROM calls GROUP BY status ORDER BY count(*) DESC")
    return {(str(status) or "placed"): int(n) for status, n in rows}


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


_RATES = "count(*), coalesce(sum(status = 'completed'), 0), coalesce(sum(final = 1 AND timed_out = 0), 0)"


def calls_over_time(conn: sqlite3.Connection) -> tuple[float, list[tuple[datetime, Rates]]]:
    """Calls placed per time bucket (UTC), the bucket chosen so the chart has at most ~60 bars."""
    first, last = conn.execute("SELECT min(placed_at), max(placed_at) FROM calls").fetchone()
    if first is None:
        return 60.0, []
    span = max(float(last) - float(first), 1.0)
    steps = (60, 300, 900, 3600, 3 * 3600, 6 * 3600, 86400, 7 * 86400)
    step = next((s for s in steps if span / s <= 60), 30 * 86400)
    rows = conn.execute(
        f"SELECT CAST(placed_at / ? AS INTEGER) AS bucket, {_RATES} FROM calls GROUP BY bucket ORDER BY bucket",
        (step,),
    )
    return float(step), [
        (datetime.fromtimestamp(bucket * step, tz=timezone.utc), Rates(int(n), int(done), int(basis)))
        for bucket, n, done, basis in rows
    ]


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def by_local_time(conn: sqlite3.Connection) -> tuple[dict[int, Rates], dict[int, Rates]]:
    """Pick-ups by the lead's local hour (0-23) and weekday (0 = Monday).

    SQLite knows no time zones, so it groups by (the lead's first zone, UTC hour); each
    group, a few thousand at most, is turned into the zone's local hour here (the middle
    of the UTC hour, so a half-hour offset such as India's falls in its right hour).
    """
    rows = conn.execute(
        "SELECT substr(leads.timezones, 1, instr(leads.timezones || ' ', ' ') - 1) AS zone,"
        f" CAST(calls.placed_at / 3600 AS INTEGER) AS hour, {_RATES.replace('status', 'calls.status')}"
        " FROM calls JOIN leads ON leads.id = calls.lead_id GROUP BY zone, hour"
    )
    hours: dict[int, Rates] = {h: Rates() for h in range(24)}
    days: dict[int, Rates] = {d: Rates() for d in range(7)}
    zones: dict[str, ZoneInfo] = {}
    for zone, hour, n, done, basis in rows:
        tz = zones.get(zone) or zones.setdefault(zone, _zone(str(zone or "UTC")))
        local = datetime.fromtimestamp(hour * 3600 + 1800, tz=timezone.utc).astimezone(tz)
        hours[local.hour].add(int(n), int(done), int(basis))
        days[local.weekday()].add(int(n), int(done), int(basis))
    return hours, days


@dataclass
class CallerId:
    number: str
    rates: Rates
    rested_days: int  # local days on which the number reached the daily cap


def by_caller_id(conn: sqlite3.Connection, daily_cap: int | None) -> list[CallerId]:
    rows = conn.execute(
        f"SELECT from_number, {_RATES} FROM calls GROUP BY from_number ORDER BY count(*) DESC, from_number"
    ).fetchall()
    rested: dict[str, int] = {}
    if daily_cap:
        rested = {
            str(number): int(n)
            for number, n in conn.execute(
                "SELECT number, count(*) FROM number_usage WHERE calls >= ? GROUP BY number", (daily_cap,)
            )
        }
    return [
        CallerId(str(number) or "(none)", Rates(int(n), int(done), int(basis)), rested.get(str(number), 0))
        for number, n, done, basis in rows
    ]


def attempts(conn: sqlite3.Connection) -> tuple[dict[int, int], dict[int, Rates]]:
    """Leads per number of calls they had, and pick-ups by the call's ordinal (1 = first call)."""
    per_lead = {
        int(calls): int(leads)
        for calls, leads in conn.execute(
            "SELECT n, count(*) FROM (SELECT count(*) AS n FROM calls GROUP BY lead_id) GROUP BY n ORDER BY n"
        )
    }
    by_ordinal = {
        int(ordinal): Rates(int(n), int(done), int(basis))
        for ordinal, n, done, basis in conn.execute(
            f"SELECT ordinal, {_RATES} FROM calls GROUP BY ordinal ORDER BY ordinal"
        )
    }
    return per_lead, by_ordinal


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
        return None if value is None else datetime.fromtimestamp(float(value), tz=timezone.utc)

    return moment(first), moment(last)


__all__ = [
    "CallTotals",
    "CallerId",
    "Rates",
    "Reason",
    "attempts",
    "by_caller_id",
    "by_local_time",
    "call_statuses",
    "call_totals",
    "calls_over_time",
    "first_and_last_request",
    "has_calls",
    "problems",
    "reason_kind",
    "requests_per_row",
]
