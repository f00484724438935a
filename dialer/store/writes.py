"""The dispatcher's writes: each state change of a row as SQL, for `JournalWriter` to commit.

The rule that keeps people from being rung twice:

    intent committed (status `unknown`, attempts + 1)  ->  request sent
    ->  outcome committed (`sent`, `failed`, `pending` for a retry, or still `unknown`)

so after a crash at any moment the journal either shows the row untouched, or
`unknown` with the time the request may have left (`intent_at`), which a look-up
at the API settles.

And the rule that keeps a number from being rung by two rows: the intent first claims
the row's number in `called` (the first lead to claim it keeps it for good), and the
intent's own UPDATE holds only when the claim is the row's. Another lead's number is
refused in the same transaction: the row becomes `duplicate`, naming the row that
called, and the request never leaves (`NumberTaken`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from dialer.model import JournalRow, Status


@dataclass(frozen=True, slots=True)
class Write:
    sql: str
    params: tuple[Any, ...]
    # A guard: when this statement changes no row, the writes after it in its group are
    # skipped, `refused` is run instead, and the caller's commit raises NumberTaken. With
    # several runs on one campaign (PostgreSQL, claims.py) a guard also holds only while
    # this run holds the row's claim; if it does not, nothing is run and the caller's
    # commit raises ClaimLost.
    guard: bool = False
    refused: tuple[Write, ...] = ()
    # A change to a row the run holds (an outcome, a restore), its `WHERE id = ?` last. With
    # several runs on one campaign (PostgreSQL) it applies only while this run holds the
    # row's claim; if another run took the row meanwhile (this run stalled past its lease),
    # it and the writes after it up to the next `held` one (the same row's) are skipped:
    # the row's state is the other run's. SQLite has one run at a time (its lock).
    held: bool = False


class NumberTaken(Exception):
    """The row's number was already claimed by another row of the campaign: not sent."""

    def __init__(self, row_id: int) -> None:
        super().__init__(f"row id {row_id}: its number was called by another row")
        self.row_id = row_id


# The row that holds a number, as the `duplicate` verdict names it.
HOLDER = (
    # CAST: PostgreSQL's coalesce wants one type (SQLite takes it as well).
    "'same number as row ' || coalesce((SELECT CAST(o.position AS TEXT) FROM leads o WHERE o.id ="
    " (SELECT c.lead_id FROM called c WHERE c.phone = leads.phone)),"
    " 'no longer in the file, already called')"
)


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def intent(
    row_id: int,
    from_number: str,
    usage_day: str | None,
    at: float | None = None,
    dialed_at: float | None = None,
) -> list[Write]:
    """The row is about to be sent (at epoch `at`): `unknown` until an answer says otherwise.

    `dialed_at`: the moment on the dispatcher's clock (default `at`), counted in `dials`
    for the number's per-24-hour cap, keyed by the row's attempt so a restore removes it.
    """
    now = time.time() if at is None else at
    stamp = utc_now_iso()
    writes = [
        # The first lead to claim a number keeps it (the same lead again: a redial, allowed).
        Write(
            "INSERT INTO called (phone, lead_id) SELECT phone, id FROM leads"
            " WHERE id = ? AND phone != '' ON CONFLICT (phone) DO NOTHING",
            (row_id,),
        ),
        Write(
            "UPDATE leads SET status = ?, attempts = attempts + 1, intent_at = ?,"
            " from_number = ?, error = '', updated_at = ? WHERE id = ? AND (phone = '' OR id ="
            " (SELECT lead_id FROM called WHERE called.phone = leads.phone))",
            (Status.UNKNOWN, now, from_number, stamp, row_id),
            guard=True,
            refused=(
                Write(
                    f"UPDATE leads SET status = ?, error = {HOLDER}, updated_at = ? WHERE id = ?",
                    (Status.DUPLICATE, stamp, row_id),
                ),
            ),
        ),
        # After the guard: counted only when the intent holds.
        Write(
            "INSERT INTO dials (phone, at, lead_id, attempt) SELECT phone, ?, id, attempts"
            " FROM leads WHERE id = ?",
            (now if dialed_at is None else dialed_at, row_id),
        ),
    ]
    if from_number and usage_day:
        writes.append(
            Write(
                "INSERT INTO number_usage (number, day, calls) VALUES (?, ?, 1)"
                " ON CONFLICT (number, day) DO UPDATE SET calls = number_usage.calls + 1",
                (from_number, usage_day),
            )
        )
    return writes


def outcome(
    row_id: int, status: Status, *, call_id: str = "", error: str = "", unanswered: bool = False
) -> list[Write]:
    """The answer (or the lack of one) for the row's last request.

    `unanswered`: the request got no answer and a look-up will settle it; counted, so the
    re-dials of a row whose calls are never found stay capped across runs.
    """
    return [
        Write(
            "UPDATE leads SET status = ?, call_id = CASE WHEN ? != '' THEN ? ELSE call_id END,"
            " error = ?, updated_at = ?, unanswered = unanswered + ? WHERE id = ?",
            (status, call_id, call_id, error, utc_now_iso(), int(unanswered), row_id),
            held=True,
        )
    ]


def restore(row: JournalRow, number: str, usage_day: str | None) -> list[Write]:
    """Undo an intent whose request was never sent (the key was refused, the run stopped)."""
    writes = [
        Write(
            "UPDATE leads SET status = ?, attempts = ?, intent_at = ?, from_number = ?, error = ?,"
            " updated_at = ? WHERE id = ?",
            (
                row.status,
                row.attempts,
                row.intent_at,
                row.from_number,
                row.error,
                utc_now_iso(),
                row.id,
            ),
            held=True,
        ),
        # The intents of this dial were never sent: they do not count towards the cap.
        Write("DELETE FROM dials WHERE lead_id = ? AND attempt > ?", (row.id, row.attempts)),
    ]
    if number and usage_day:
        writes.append(
            Write(
                # CASE, not max(): the same text runs on SQLite and PostgreSQL.
                "UPDATE number_usage SET calls = CASE WHEN calls > 0 THEN calls - 1 ELSE 0 END"
                " WHERE number = ? AND day = ?",
                (number, usage_day),
            )
        )
    return writes
