"""transitions.py from a table: (what happened, policy) -> the row's next state."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from dialer.client import Answer
from dialer.model import JournalRow, Status
from dialer.transitions import (
    Next,
    Policy,
    after_answer,
    after_lookup,
    capped,
    lookup_failed,
    on_suppression_list,
    outside_hours,
    throttled_out,
)

CALL = Policy(mode="call", max_attempts=3)
CHAT = Policy(mode="chat", max_attempts=3)


def row(status: Status = Status.UNKNOWN, unanswered: int = 1) -> JournalRow:
    return JournalRow(
        id=7,
        position=9,
        phone="+12125550101",
        name="Ann",
        email="",
        timezones=("America/New_York",),
        variables={},
        status=status,
        attempts=unanswered,
        intent_at=1.0,
        from_number="",
        call_id="",
        error="",
        unanswered=unanswered,
    )


@pytest.mark.parametrize(
    ("answer", "policy", "final", "expected"),
    [
        pytest.param(
            Answer("accepted", id="c-1"), CALL, True, Next(Status.SENT, call_id="c-1"), id="accepted"
        ),
        pytest.param(
            Answer("accepted", id="c-1", error="warned"),
            CALL,
            True,
            Next(Status.SENT, "warned", call_id="c-1"),
            id="accepted-with-a-note",
        ),
        pytest.param(
            Answer("refused", error="HTTP 400: bad"),
            CALL,
            True,
            Next(Status.FAILED, "HTTP 400: bad"),
            id="refused",
        ),
        pytest.param(
            Answer("retry", error="HTTP 503"), CALL, False, Next(Status.PENDING, "HTTP 503"), id="retry-left"
        ),
        pytest.param(
            Answer("retry", error="HTTP 503"),
            CALL,
            True,
            Next(Status.FAILED, "gave up after 3 attempts: HTTP 503"),
            id="retry-spent",
        ),
        pytest.param(
            Answer("unknown", error="no answer"),
            CALL,
            True,
            Next(Status.UNKNOWN, "no answer", unanswered=True, settle=True),
            id="call-unknown-is-looked-up",
        ),
        pytest.param(
            Answer("unknown", error="no answer"),
            CHAT,
            True,
            Next(Status.UNKNOWN, "no answer"),
            id="chat-unknown-waits-for-retry-unknown",
        ),
    ],
)
def test_after_answer(answer: Answer, policy: Policy, final: bool, expected: Next) -> None:
    assert after_answer(answer, policy, final=final) == expected


@pytest.mark.parametrize("kind", ["auth", "throttled"])
def test_answers_that_never_reach_a_next_state_are_refused(kind: str) -> None:
    with pytest.raises(ValueError, match=kind):
        after_answer(Answer(kind), CALL)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("call_id", "unanswered", "expected"),
    [
        pytest.param("c-9", 1, Next(Status.SENT, call_id="c-9"), id="found"),
        pytest.param("c-9", 5, Next(Status.SENT, call_id="c-9"), id="found-even-past-the-cap"),
        pytest.param(
            None, 1, Next(Status.PENDING, "no answer, and no call was placed", redial=True), id="not-found"
        ),
        pytest.param(
            None,
            2,
            Next(Status.PENDING, "no answer, and no call was placed", redial=True),
            id="not-found-under-cap",
        ),
        pytest.param(
            None,
            3,
            Next(Status.FAILED, "no answer to 3 attempts, and no call was placed"),
            id="not-found-capped",
        ),
        pytest.param(
            None,
            0,
            Next(Status.PENDING, "no answer, and no call was placed", redial=True),
            id="left-by-a-crash",
        ),
    ],
)
def test_after_lookup(call_id: str | None, unanswered: int, expected: Next) -> None:
    assert after_lookup(row(unanswered=unanswered), call_id, CALL) == expected


def test_gates_and_give_ups() -> None:
    due = datetime(2026, 12, 2, 13, 0, tzinfo=UTC)
    zones = ("America/New_York",)
    assert outside_hours(zones, due) == Next(
        Status.DEFERRED, "outside calling hours in America/New_York; due 2026-12-02T13:00Z"
    )
    assert outside_hours(("Pacific/Kiritimati", "Pacific/Pago_Pago"), None).status == Status.INVALID
    assert on_suppression_list("dnc.csv") == Next(Status.SUPPRESSED, "on the do-not-call list dnc.csv")
    assert capped() == Next(Status.DEFERRED, "every caller id has reached its daily cap")
    assert throttled_out(row(Status.DEFERRED), 100) == Next(
        Status.DEFERRED, "answered 429 100 times in a row; not placed"
    )
    assert lookup_failed("look-up failed: HTTP 500") == Next(
        Status.UNKNOWN, "unsettled: look-up failed: HTTP 500"
    )


def test_a_not_found_within_the_grace_is_looked_up_again_not_redialed() -> None:
    early = row(unanswered=1)
    assert after_lookup(early, None, CALL, grace_over=False) == Next(Status.UNKNOWN, early.error, settle=True)
    # A call found is found, in the grace or not.
    assert after_lookup(early, "c-1", CALL, grace_over=False) == Next(Status.SENT, call_id="c-1")


# -- a live call's row after a poll: (what the API showed, its age) -> the row ----------

from dialer.model import FINAL_CALL_STATUSES, CallOutcome  # noqa: E402
from dialer.transitions import CallNext, after_call  # noqa: E402

HOUR = 3600.0


@pytest.mark.parametrize(
    ("shown", "age", "expected"),
    [
        *[
            pytest.param(status, 60.0, CallNext(ended=True, failed=status == "failed"), id=status)
            for status in sorted(FINAL_CALL_STATUSES)
        ],
        *[
            pytest.param(status, 60.0, CallNext(ended=False), id=f"{status}-live")
            for status in ("pending", "ringing", "in-progress", "registered", "paused", "on-hold", "")
        ],
        pytest.param(None, 60.0, CallNext(ended=False), id="not-shown-yet"),
        pytest.param(
            "in-progress",
            4 * HOUR,
            CallNext(
                ended=True,
                error="the call never ended: last seen 'in-progress' 4h after it was placed",
                timed_out=True,
            ),
            id="stuck-in-progress-given-up",
        ),
        pytest.param(
            None,
            5 * HOUR,
            CallNext(
                ended=True,
                error="the call never ended: never shown by the API 4h after it was placed",
                timed_out=True,
            ),
            id="never-shown-given-up",
        ),
        pytest.param("completed", 9 * HOUR, CallNext(ended=True), id="late-but-final"),
    ],
)
def test_after_call(shown: str | None, age: float, expected: CallNext) -> None:
    seen = None if shown is None else CallOutcome("c-1", shown)
    next_state = after_call(seen, age, 4 * HOUR)
    assert next_state == expected
    assert next_state.status == Status.SENT  # no [redial] yet: a sent row stays sent
