"""Pure: what a row becomes next, from what just happened to it. No I/O, no clock.

Every rule of a row's life after a gate, an answer or a look-up is one branch
here, tested from a table in tests/test_transitions.py:

    gate: on a do-not-call list    -> suppressed
          outside its hours        -> deferred until they open (invalid if they never can)
          every caller id capped   -> deferred
    answer: accepted               -> sent (call_id)
            refused                -> failed (the API's message)
            retry, attempts spent  -> failed ("gave up after N attempts")
            retry, attempts left   -> pending (tried again after a backoff)
            unknown                -> unknown; in call mode counted and looked up
    look-up: found                 -> sent (its call_id), at once
             not found, in grace   -> unknown, looked up again once the grace is over
             not found, capped     -> failed
             not found             -> pending, dialed again
             failed                -> unknown, for a later run's look-up (PostgreSQL: given
                                      back for another run's, after `lookup_backoff`)
    call:    still live           -> no change (followed on)
             final status          -> sent (the report says how it ended)
    redial:  final status named in [redial], fewer than max_calls calls
                                   -> deferred until ended + its wait (`redial_after`,
                                      journaled with the call's final status: once)
             no final status in time -> sent, "never ended: last seen <status> after <time>"
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from dialer.model import FINAL_CALL_STATUSES, CallOutcome, JournalRow, Status

if TYPE_CHECKING:  # the client (httpx) is not needed to reason about its answers
    from dialer.client import Answer

CAPPED = "every caller id has reached its daily cap"


@dataclass(frozen=True, slots=True)
class Policy:
    """What the campaign says about a row's next state."""

    mode: str  # "call" or "chat": only calls can be looked up
    max_attempts: int


@dataclass(frozen=True, slots=True)
class Next:
    """A row's next state, and what the dispatcher does about it."""

    status: Status
    error: str = ""
    call_id: str = ""
    unanswered: bool = False  # one more request that got no answer (the journal counts them)
    settle: bool = False  # hand the row to a look-up
    redial: bool = False  # a look-up found no call: dial the row again


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="minutes").replace("+00:00", "Z")


def never_open_reason(zones: tuple[str, ...]) -> str:
    """A number spanning zones whose windows never overlap (a toll-free number, say)."""
    shown = ", ".join(zones) if len(zones) <= 3 else f"{zones[0]} … {zones[-1]}"
    return (
        f"never inside calling hours in all of its {len(zones)} time zones ({shown});"
        " give it a time zone in the leads file"
    )


def on_suppression_list(source: str) -> Next:
    """Added to a do-not-call list since the import (a re-dial after a look-up, say)."""
    return Next(Status.SUPPRESSED, f"on the do-not-call list {source}")


def outside_hours(zones: tuple[str, ...], next_open: datetime | None, law_conflict: str = "") -> Next:
    """Outside its hours: `deferred` until they open, or `invalid` if they never can
    (`law_conflict`: why, when the campaign's days and the lead's law never overlap)."""
    if next_open is None:
        return Next(Status.INVALID, law_conflict or never_open_reason(zones))
    return Next(Status.DEFERRED, f"outside calling hours in {', '.join(zones)}; due {iso(next_open)}")


def capped(reason: str = CAPPED) -> Next:
    """Every caller id the lead may use is capped for today: `deferred`, saying why."""
    return Next(Status.DEFERRED, reason)


def throttled_out(row: JournalRow, throttles: int) -> Next:
    """Only ever answered 429: nothing was placed, the row keeps its status."""
    return Next(row.status, f"answered 429 {throttles} times in a row; not placed")


def after_answer(answer: Answer, policy: Policy, *, final: bool = True) -> Next:
    """The row's state once the API answered (`final`: no attempt is left for a retry)."""
    if answer.kind == "accepted":
        return Next(Status.SENT, answer.error, call_id=answer.id)
    if answer.kind == "refused":
        return Next(Status.FAILED, answer.error)
    if answer.kind == "retry":
        if not final:
            return Next(Status.PENDING, answer.error)
        return Next(Status.FAILED, f"gave up after {policy.max_attempts} attempts: {answer.error}")
    if answer.kind == "unknown":
        # Only a call can be looked up; a chat stays unknown until --retry-unknown.
        lookup = policy.mode == "call"
        return Next(Status.UNKNOWN, answer.error, unanswered=lookup, settle=lookup)
    raise ValueError(f"no next state for an answer of kind {answer.kind!r}")


def after_lookup(row: JournalRow, call_id: str | None, policy: Policy, *, grace_over: bool = True) -> Next:
    """The row's state once a look-up said whether its last request placed a call.

    `row.unanswered` counts its requests that got no answer, over every run. `grace_over`:
    the look-up was made `settle_after_seconds` or more after the request; the API may list
    a call a little after placing it, so only then is "not found" trusted.
    """
    if call_id:
        return Next(Status.SENT, call_id=call_id)
    if not grace_over:
        return Next(Status.UNKNOWN, row.error, settle=True)  # look again once the grace is over
    if row.unanswered >= policy.max_attempts:
        return Next(Status.FAILED, f"no answer to {row.unanswered} attempts, and no call was placed")
    return Next(Status.PENDING, "no answer, and no call was placed", redial=True)


def lookup_failed(error: str) -> Next:
    """No look-up could be made: the row stays `unknown` for a later run to settle."""
    return Next(Status.UNKNOWN, f"unsettled: {error}")


def lookup_backoff(failed_in_a_row: int, base: float, cap: float) -> float:
    """Seconds before another run may look up a row whose look-up just failed, after
    `failed_in_a_row` failed look-ups (this one included; whatever their rows: the API's
    look-ups are what fails): base * 2^(n-1), at most `cap`. No jitter: each run looks a
    row up once at most, so no crowd of tries comes at once to be spread."""
    return min(cap, base * 2.0 ** (min(failed_in_a_row, 64) - 1))


@dataclass(frozen=True, slots=True)
class CallNext:
    """What a call's latest sighting makes of its row; `ended`: the call is no longer live."""

    ended: bool
    status: Status = Status.SENT
    error: str = ""
    timed_out: bool = False
    failed: bool = False  # the call ended `failed`: it counts against stop_when_failed


def _span(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:g}h"
    if seconds >= 60:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"


def after_call(seen: CallOutcome | None, age: float, give_up_after: float) -> CallNext:
    """A live call's row after a poll: `seen` as the API showed it (None: not shown at all),
    `age` seconds since it was placed; a call with no final status after `give_up_after`
    is given up, reported with its last status."""
    status = seen.status if seen is not None else ""
    if status in FINAL_CALL_STATUSES:
        return CallNext(ended=True, failed=status == "failed")
    if age < give_up_after:
        return CallNext(ended=False)
    shown = f"last seen {status!r}" if status else "never shown by the API"
    return CallNext(
        ended=True,
        error=f"the call never ended: {shown} {_span(give_up_after)} after it was placed",
        timed_out=True,
    )


@dataclass(frozen=True, slots=True)
class RedialPolicy:
    """`[redial]`: the wait (seconds) per final call status; calls per lead in all."""

    waits: Mapping[str, float] = field(default_factory=dict)
    max_calls: int = 3


@dataclass(frozen=True, slots=True)
class Redial:
    """A lead's next call: due at epoch `due`; the row is `deferred`, saying why, until then."""

    due: float
    error: str
    status: Status = Status.DEFERRED


def _at(epoch: float) -> str:
    # To the second: a wait may be "90s".
    moment = datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")
    return moment.replace("+00:00", "Z")


def redial_after(call_status: str, calls_placed: int, ended_at: float, policy: RedialPolicy) -> Redial | None:
    """Whether a lead whose latest call ended `call_status` at epoch `ended_at`, after
    `calls_placed` calls in all (that one included), is called again, and when. None: not
    again (the status is not named, or max_calls are spent): the row stays `sent`."""
    wait = policy.waits.get(call_status)
    if wait is None or calls_placed >= policy.max_calls:
        return None
    due = ended_at + wait
    return Redial(due, f"{call_status} at {_at(ended_at)}; next call due {_at(due)}")


def redial_waits(row: JournalRow, now: datetime) -> bool:
    """The row's next call ([redial]) is not due yet at `now`: nothing is done with it."""
    return row.redial_at is not None and row.status == Status.DEFERRED and now.timestamp() < row.redial_at
