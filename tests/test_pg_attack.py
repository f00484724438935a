"""Attacks on the PostgreSQL journal: two runs interleaved by hand, and whole runs killed.

Two `PgJournal`s on one database are two runs (two connections, two claim owners). A
run whose lease ran out while it stalled, and whose row another run took over, must not
write over the newer state: every write to a lead or call row is either guarded (only
the holder; only a forward transition, in the same statement) or harmless by construction.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from dialer import store as j
from dialer.model import CallOutcome, Status
from dialer.store.claims import ClaimLost, Claims
from dialer.store.postgres import PgJournal
from tests.test_journal import _import, _lead, _status

ANN, BOB = "+12125550101", "+12125550102"
CALLER, DAY = "+14155550100", "2026-12-01"


@pytest.fixture
def runs(pg_url: str) -> Iterator[tuple[PgJournal, PgJournal]]:
    """Run A and run B on one campaign; A's claims lapse at once (it stalled past its lease)."""
    first, second = PgJournal(pg_url, "c"), PgJournal(pg_url, "c")
    _import(first, [_lead(2, "Ann", ANN), _lead(3, "Bob", BOB)], "a")
    first.claims(lease_seconds=-1.0)
    second.claims(lease_seconds=30.0)
    yield first, second
    first.close()
    second.close()


def _claims(journal: PgJournal) -> Claims:
    claims = journal._claims
    assert claims is not None
    return claims


def commit(journal: PgJournal, *groups: list[j.Write]) -> list[BaseException | None]:
    """Each group committed through the run's writer (a commit of its own), what each raised."""

    async def go() -> list[BaseException | None]:
        writer = journal.writer()
        raised: list[BaseException | None] = []
        for writes in groups:
            try:
                await writer.commit(writes)
                raised.append(None)
            except (ClaimLost, j.NumberTaken) as exc:
                raised.append(exc)
        await writer.close()
        return raised

    return asyncio.run(go())


def _lookup_takes_over(first: PgJournal, second: PgJournal) -> None:
    """A claimed row 1 and committed its intent, then stalled; its lease ran out and B took
    the `unknown` row over to look it up, and found A's call."""
    assert _claims(first).claim_dialable(1) == [1]
    assert commit(first, j.intent(1, CALLER, DAY)) == [None]
    assert _claims(second).claim_orphans() == [1]
    commit(second, j.outcome(1, Status.SENT, call_id="c-found") + j.calls.placed(1, 5.0))


def test_a_stalled_runs_late_answer_does_not_overwrite_the_look_up_of_the_run_that_took_over(
    runs: tuple[PgJournal, PgJournal],
) -> None:
    first, second = runs
    _lookup_takes_over(first, second)
    # A wakes up with an answer for its request: the row is B's now, A's write is dropped.
    assert commit(first, j.outcome(1, Status.FAILED, error="late") + j.calls.placed(1, 6.0)) == [None]
    assert _status(second, 1) == ("sent", "", 1)
    assert second.row(1).call_id == "c-found"
    assert [c.call_id for c in second.live_calls()] == ["c-found"]


def test_a_stalled_runs_restore_does_not_make_a_row_another_run_sent_dialable_again(
    runs: tuple[PgJournal, PgJournal],
) -> None:
    first, second = runs
    before = first.row(1)  # the row as A read it, before its intent
    _lookup_takes_over(first, second)
    # A decides its request never left (a stop, a refused key) and puts the row back as it
    # was before its intent: pending, dialable again, a second call to Ann.
    assert commit(first, j.restore(before, CALLER, DAY)) == [None]
    assert _status(second, 1) == ("sent", "", 1)
    assert second.dials_since(ANN, 0.0)  # the dial still counts towards the 24-hour cap
    assert second.number_usage() == {(CALLER, DAY): 1}


def test_a_stalled_runs_deferrals_skip_only_the_rows_it_lost(runs: tuple[PgJournal, PgJournal]) -> None:
    first, second = runs
    assert _claims(first).claim_dialable(2) == [1, 2]  # both outside their hours: to be deferred
    assert _claims(second).claim_dialable(1) == [1]  # A's lease ran out: B takes row 1 and dials it
    assert commit(second, j.intent(1, CALLER, DAY)) == [None]
    deferrals = j.outcome(1, Status.DEFERRED, error="closed") + j.outcome(2, Status.DEFERRED, error="closed")
    assert commit(first, deferrals) == [None]  # one group for both rows, as the feeder sends them
    assert _status(second, 1) == ("unknown", "", 1)  # B's request may be out: never dialable again
    assert _status(second, 2) == ("deferred", "closed", 0)  # A still holds row 2


def test_an_intent_after_another_runs_start_suppressed_the_row_is_refused(
    runs: tuple[PgJournal, PgJournal],
) -> None:
    first, second = runs
    _claims(first).lease = 30.0
    assert _claims(first).claim_dialable(1) == [1]  # A read row 1 as pending...
    assert second.suppress({ANN: "dnc.csv"}) == 1  # ...then B started with a new do-not-call list
    assert isinstance(commit(first, j.intent(1, CALLER, DAY))[0], ClaimLost)
    assert _status(second, 1) == ("suppressed", "on the do-not-call list dnc.csv", 0)
    assert second.dials_since(ANN, 0.0) == [] and second.number_usage() == {}


def test_a_run_does_not_take_over_its_own_unknown_rows_for_a_second_look_up(
    runs: tuple[PgJournal, PgJournal],
) -> None:
    first, second = runs
    assert _claims(first).claim_dialable(1) == [1]
    assert commit(first, j.intent(1, CALLER, DAY)) == [None]  # its request in flight, lease run out
    assert _claims(first).claim_orphans() == []  # its own: already in its hands
    assert _claims(second).claim_orphans() == [1]  # another run's to look up


def test_an_intent_renews_its_rows_lease(runs: tuple[PgJournal, PgJournal], pg_url: str) -> None:
    first, second = runs
    _claims(second).claim_dialable(1)
    second.conn.execute("UPDATE leads SET claim_until = extract(epoch from now()) + 1 WHERE id = 1")
    assert commit(second, j.intent(1, CALLER, DAY)) == [None]
    left = second.conn.execute("SELECT claim_until - extract(epoch from now()) FROM leads WHERE id = 1")
    found = left.fetchone()
    assert found is not None and float(found[0]) > 25  # the request leaves with a whole lease ahead


def _placed(journal: PgJournal) -> None:
    """Row 1 sent with call c-1, live (B's, and followed by A too: A adopted it)."""
    assert _claims(journal).claim_dialable(1) == [1]
    commit(
        journal, j.intent(1, CALLER, DAY), j.outcome(1, Status.SENT, call_id="c-1") + j.calls.placed(1, 1.0)
    )


def test_a_late_poll_of_a_call_another_run_saw_end_changes_nothing(runs: tuple[PgJournal, PgJournal]) -> None:
    first, second = runs
    _placed(second)
    ended = CallOutcome("c-1", "busy", 3.0, "busy", "", {})
    # B sees the call end busy and decides a redial; A's poll from before, still ringing, lands after.
    commit(second, j.calls.seen(ended, final=True, at=10.0) + j.calls.redial(1, "c-1", 99.0, "busy"))
    commit(first, j.calls.seen(CallOutcome("c-1", "in-progress"), final=False))
    # And A gives the call up (its clock ran past give_up_after): the row's redial stands.
    commit(
        first,
        j.calls.seen(CallOutcome("c-1", "in-progress"), final=True, timed_out=True, at=11.0)
        + j.calls.ended(1, "c-1", Status.SENT, "the call never ended"),
    )
    row = second.conn.execute("SELECT status, final, timed_out, ended_at FROM calls").fetchall()
    assert row == [("busy", 1, 0, 10.0)]
    assert _status(second, 1) == ("deferred", "busy", 1)


def test_a_failed_calls_outcome_leaves_a_lead_already_dialed_again_alone(
    runs: tuple[PgJournal, PgJournal],
) -> None:
    first, second = runs
    _placed(second)
    # B redials the lead (call c-2 now its latest); A's follower, late, sees c-1 end failed.
    commit(second, j.outcome(1, Status.SENT, call_id="c-2") + j.calls.placed(1, 2.0))
    commit(first, j.calls.ended(1, "c-1", Status.FAILED, "call ended failed"))
    assert _status(second, 1) == ("sent", "", 1)
    assert second.row(1).call_id == "c-2"


def test_retry_unknown_leaves_the_rows_another_live_run_has_in_flight(
    runs: tuple[PgJournal, PgJournal],
) -> None:
    first, second = runs
    for row_id in (1, 2):
        assert _claims(second).claim_dialable(1) == [row_id]
        assert commit(second, j.intent(row_id, CALLER, DAY)) == [None]
    _claims(second).release()  # B ended with row 2 unsettled; row 1 it claims again: in flight
    second.conn.execute(
        "UPDATE leads SET claimed_by = %s, claim_until = 1e12 WHERE id = 1", (_claims(second).owner,)
    )
    assert first.requeue(Status.UNKNOWN, "retried") == 1  # `dialer run --retry-unknown` starting
    assert [_status(first, i)[0] for i in (1, 2)] == ["unknown", "pending"]
