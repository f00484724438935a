"""The calls table (schema 3): each call the API accepted, followed to its end.

Writes for `JournalWriter` (a call placed, a call seen by a poll) and the reads that
follow.py, `status` and the report need. A row is live while its latest call
(`leads.call_id`) has final = 0.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dialer.model import CallOutcome, Status
from dialer.store.writes import Write, utc_now_iso


@dataclass(frozen=True, slots=True)
class LiveCall:
    """A call placed and not seen to end: what follow.py polls for."""

    call_id: str
    lead_id: int
    placed_at: float  # epoch seconds
    status: str  # last seen ('' before any poll)


def placed(row_id: int, at: float) -> list[Write]:
    """The row's call (its `call_id`, just committed) was accepted: a new live call.

    Placed at the row's intent time (a second before the API took it, at most), or `at`.
    ON CONFLICT DO NOTHING (both stores' SQL): the same call found again by a look-up is one call.
    """
    return [
        Write(
            "INSERT INTO calls (call_id, lead_id, ordinal, from_number, placed_at)"
            " SELECT call_id, id, (SELECT count(*) FROM calls WHERE lead_id = ?) + 1, from_number,"
            " COALESCE(intent_at, ?) FROM leads WHERE id = ? AND call_id != ''"
            " ON CONFLICT (call_id) DO NOTHING",
            (row_id, at, row_id),
        )
    ]


def seen(call: CallOutcome, *, final: bool, timed_out: bool = False, at: float | None = None) -> list[Write]:
    """What a poll showed of a call; `final` with `at`, the moment its end was seen.

    Only while the call is live (`final = 0`): two runs of a shared campaign may follow one
    call, and the later poll of the two must not undo what the first saw end.
    """
    if not final:
        return [
            Write("UPDATE calls SET status = ? WHERE call_id = ? AND final = 0", (call.status, call.call_id))
        ]
    return [
        Write(
            "UPDATE calls SET status = ?, final = 1, timed_out = ?, ended_at = ?, duration = ?,"
            " end_reason = ?, recording_url = ?, collected = ? WHERE call_id = ? AND final = 0",
            (
                call.status,
                int(timed_out),
                at,
                call.duration,
                call.end_reason,
                call.recording_url,
                json.dumps(call.collected, ensure_ascii=False),
                call.call_id,
            ),
        )
    ]


def ended(lead_id: int, call_id: str, status: Status, error: str) -> list[Write]:
    """The lead's outcome from how `call_id` ended (failed, given up): only while that call
    is the lead's latest and the row `sent`. The row may have moved on since: another run of
    a shared campaign saw the call end first and redialed the lead."""
    return [
        Write(
            "UPDATE leads SET status = ?, error = ?, updated_at = ? WHERE id = ? AND call_id = ?"
            " AND status = 'sent'",
            (status, error, utc_now_iso(), lead_id, call_id),
        )
    ]


def redial(lead_id: int, call_id: str, due: float, error: str) -> list[Write]:
    """[redial]: the lead is called again at epoch `due`; committed with its call's final
    status (`seen`), so the decision is made once. Only while `call_id` is the lead's latest
    call and the row is `sent` (an opt-out or a later call leave it alone)."""
    return [
        Write(
            "UPDATE leads SET status = 'deferred', error = ?, redial_at = ?, updated_at = ?"
            " WHERE id = ? AND call_id = ? AND status = 'sent'",
            (error, due, utc_now_iso(), lead_id, call_id),
        )
    ]


def opted_out(lead_id: int, call_id: str, said: str, *, cancel: bool) -> list[Write]:
    """The person asked not to be called again on `call_id`: the row says so; `cancel`: the
    redial that call would have had is not made (the row is `suppressed`, no redial due)."""
    status = "suppressed" if cancel else "sent"
    return [
        Write(
            "UPDATE leads SET status = ?, error = ?, redial_at = NULL, updated_at = ?"
            " WHERE id = ? AND call_id = ? AND status = 'sent'",
            (status, said, utc_now_iso(), lead_id, call_id),
        )
    ]


# [redial]'s reads, in SQL both stores run (`?` becomes `%s` for PostgreSQL).
RECENT_BY_CALLER_SQL = (
    "SELECT from_number, status, duration FROM calls WHERE placed_at > ? AND final = 1"
    " AND timed_out = 0 AND from_number != '' ORDER BY placed_at DESC"
)
PLACED_COUNT_SQL = "SELECT count(*) FROM calls WHERE lead_id = ?"
# A call's placed_at is the intent_at of the request that placed it (`placed`): those before
# the lead's latest intent are earlier requests' calls. Not the latest's own (a journal may
# hold it with the row still `unknown`), nor any when intent_at is NULL: never passed over.
EARLIER_CALLS_SQL = (
    "SELECT c.call_id FROM calls c JOIN leads l ON l.id = c.lead_id"
    " WHERE c.lead_id = ? AND c.placed_at < l.intent_at"
)
BY_ATTEMPT_SQL = (
    "SELECT ordinal, sum(CASE WHEN status = 'completed' THEN 1 ELSE 0 END), count(*) FROM calls"
    " WHERE final = 1 AND timed_out = 0 GROUP BY ordinal ORDER BY ordinal"
)
WAITING_SQL = (
    "SELECT count(*), min(redial_at) FROM leads WHERE status = 'deferred' AND redial_at > ?"
    " AND position IS NOT NULL"
)


def recent_from(rows: Iterable[Sequence[Any]]) -> dict[str, list[tuple[str, float | None]]]:
    """Per caller id, its calls placed since epoch `since` that ended, newest first, as
    (final status, duration): what caller-id health reads (RECENT_BY_CALLER_SQL's rows)."""
    found: dict[str, list[tuple[str, float | None]]] = {}
    for number, status, duration in rows:
        found.setdefault(str(number), []).append((str(status), None if duration is None else float(duration)))
    return found


def recent_by_caller(conn: sqlite3.Connection, since: float) -> dict[str, list[tuple[str, float | None]]]:
    return recent_from(conn.execute(RECENT_BY_CALLER_SQL, (since,)))


def placed_count(conn: sqlite3.Connection, lead_id: int) -> int:
    """Calls placed for the lead in all (redials included): what max_calls counts."""
    return int(conn.execute(PLACED_COUNT_SQL, (lead_id,)).fetchone()[0])


def earlier_call_ids(conn: sqlite3.Connection, lead_id: int) -> set[str]:
    """The lead's calls placed by its requests before the latest: a look-up passes them over."""
    return {str(call_id) for (call_id,) in conn.execute(EARLIER_CALLS_SQL, (lead_id,))}


# The reads, in SQL both stores run (the collected names' excepted: JSON is each one's own).
LIVE_SQL = (
    "SELECT c.call_id, c.lead_id, c.placed_at, c.status FROM calls c"
    " JOIN leads l ON l.id = c.lead_id AND l.call_id = c.call_id"
    " WHERE c.final = 0 ORDER BY c.placed_at"
)
# Ordered: `status` lists ties in this order, whichever store (PostgreSQL's groups come unordered).
FIGURES_SQL = (
    "SELECT status, final, timed_out, count(*) FROM calls GROUP BY status, final, timed_out"
    " ORDER BY status, final, timed_out"
)
COLLECTED_SQL = (
    "SELECT DISTINCT j.key FROM calls, json_each(calls.collected) AS j WHERE calls.collected != '{}'"
    " ORDER BY j.key"
)
PG_COLLECTED_SQL = (
    "SELECT DISTINCT j.key FROM calls, jsonb_each(calls.collected::jsonb) AS j"
    " WHERE calls.collected != '{}' ORDER BY j.key"
)


def live_from(rows: Iterable[Sequence[Any]]) -> list[LiveCall]:
    return [LiveCall(str(a), int(b), float(c), str(d)) for a, b, c, d in rows]


def live_calls(conn: sqlite3.Connection) -> list[LiveCall]:
    """Every row's latest call still live, oldest first."""
    return live_from(conn.execute(LIVE_SQL))


@dataclass(frozen=True, slots=True)
class CallFigures:
    """For `status` and the summary: final calls per status, calls live, the pick-up rate."""

    by_status: Counter[str]
    live: int
    timed_out: int
    # Per attempt number (1: the first call, 2: the first redial ...): (completed, ended).
    by_attempt: dict[int, tuple[int, int]] = field(default_factory=dict)
    redials_waiting: int = 0  # rows whose next call ([redial]) is not due yet
    next_redial: float | None = None  # epoch seconds the soonest of them is due

    def pick_up_rate_of(self, attempt: int) -> float | None:
        """Calls `completed` among the ended calls that were the lead's `attempt`-th."""
        completed, ended = self.by_attempt.get(attempt, (0, 0))
        return completed / ended if ended else None

    @property
    def placed(self) -> int:
        return sum(self.by_status.values()) + self.live + self.timed_out

    @property
    def pick_up_rate(self) -> float | None:
        """Calls `completed` among calls with a final status (timed-out ones left out)."""
        ended = sum(self.by_status.values())
        return self.by_status.get("completed", 0) / ended if ended else None


def figures_from(
    rows: Iterable[Sequence[Any]],
    by_attempt_rows: Iterable[Sequence[Any]] = (),
    waiting: Sequence[Any] | None = None,
) -> CallFigures:
    """The figures from FIGURES_SQL's rows, BY_ATTEMPT_SQL's, and WAITING_SQL's one row."""
    by_status: Counter[str] = Counter()
    live = timed_out = 0
    for status, final, gave_up, n in rows:
        if not final:
            live += n
        elif gave_up:
            timed_out += n
        else:
            by_status[str(status)] += n
    by_attempt = {int(ordinal): (int(completed), int(ended)) for ordinal, completed, ended in by_attempt_rows}
    count, soonest = waiting if waiting is not None else (0, None)
    return CallFigures(
        by_status, live, timed_out, by_attempt, int(count), None if soonest is None else float(soonest)
    )


def call_figures(conn: sqlite3.Connection, now: float | None = None) -> CallFigures:
    """The figures; `now` (epoch seconds, the dispatcher's clock): redials not due by then."""
    return figures_from(
        conn.execute(FIGURES_SQL),
        conn.execute(BY_ATTEMPT_SQL).fetchall(),
        conn.execute(WAITING_SQL, (time.time() if now is None else now,)).fetchone(),
    )


def collected_names(conn: sqlite3.Connection) -> list[str]:
    """Every collected variable any call returned, sorted: a report column each."""
    return [str(name) for (name,) in conn.execute(COLLECTED_SQL)]
