"""Claims: several runs, on one host or many, dial one PostgreSQL campaign at once.

A run takes rows in small batches (`claim_dialable`): one transaction marks them
`claimed_by` this run with a lease (`claim_until`, on the database's clock), the
rows chosen with FOR UPDATE SKIP LOCKED so two runs never wait on each other nor
take the same row. The at-most-once rule does not rest on the claim alone: a
row's intent (writes.intent, made `guarded`) is committed only WHERE the row is
still claimed by this run, so a run whose lease ran out and whose row another
run took cannot send it (the writer reports `ClaimLost` and the sender drops it).

Every other write to a row is guarded the same way, or is harmless by construction
(on SQLite the campaign's lock made one run the only writer; here several runs write):
  - outcomes and restores (`Write.held`) apply only while this run holds the row: a run
    that stalled past its lease cannot write its late answer over the look-up of the run
    that took the row over, nor put a row another run sent back to `pending`;
  - the intent applies only to a row still due (another run's start may have suppressed
    it) and renews the row's lease;
  - what a poll saw (calls.seen) only while the call is live, and a call's end decides the
    lead's outcome only while it is the lead's latest call (calls.ended, calls.redial):
    two runs may follow one call;
  - `--retry-unknown`/`--retry-failed` leave the rows another live run holds.
And right before a request leaves, the sender asks `still_ours(row)`: a run woken from a
stall longer than the row's lease does not send it late (another run may have looked it
up, found nothing yet, and dialed it). That question never waits on a row lock: the
journal's connection is synchronous, and the lock may be the run's own writer's.

The run renews its leases while it lives (`renewal`) and gives its claims back when
it ends (`release`). A run that dies (kill -9, a lost host) leaves claims whose
lease runs out:
  - rows still `pending`/`deferred` never left: another run claims them again;
  - rows `unknown` may have left: another run takes them over to *look them up*
    (`claim_orphans`, then settle.py as after any crash), never to send them blindly.

A row whose look-up failed (the API erred or timed out) is given back at once
(`give_back`), still `unknown`: held to the run's end, two runs each holding one while
waiting for the other's waited on each other until one was stopped. No run is named on
it then, and its `claim_until` says when another run may look it up again (its backoff).
Not this run: like a SQLite run, which leaves such a row to the next run, it neither
looks the row up again nor waits for it, so a run whose look-ups keep failing still ends.

How procrastinate and pgqueuer claim work, and why we do not copy them whole:
both pick with `... FOR UPDATE SKIP LOCKED` and set the job `doing`/`picked` in
the same statement, as we do. But a job whose worker stops answering is run
again: procrastinate's stalled-job retry and pgqueuer's re-pick of a job whose
heartbeat is older than its retry timer. For a job that is a retry; for us it is
a second phone call to a person whose first call may have rung. Here an expired
lease on a row that may have left only ever leads to a look-up. And SKIP LOCKED
protects rows, not a rate: the account's budget needs one serialisation point
(pgrate.py). No session advisory locks on rows either: they die with a
PgBouncer-pooled connection's owner only when the server notices, and outlive a
dead client for as long as its TCP connection lingers; a lease is plain data.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dialer.model import DIALABLE, Status
from dialer.store.db import sql_list
from dialer.store.writes import Write

if TYPE_CHECKING:
    import psycopg  # psycopg loads libpq: only PostgreSQL campaigns pay for it

NOW = "extract(epoch from clock_timestamp())::float8"
# How long `still_ours` lets the loop turn before asking again of a locked row (seconds).
LOCKED_PAUSE = 0.01


class ClaimLost(Exception):
    """The row's claim went to another run (this run's lease ran out): it must not be sent."""


class Claims:
    """This run's claims on a campaign's rows (one per run: `owner` names it)."""

    def __init__(
        self,
        conn: psycopg.Connection[tuple[Any, ...]],
        lease_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        url: str = "",
    ) -> None:
        """`url`: the journal's, for the one line a lost database gives (its password cut)."""
        self.conn = conn
        self._url = url
        self.lease = lease_seconds
        self.owner = uuid.uuid4().hex
        self._after = -1  # the position of the last row claimed in this pass over the file
        self._clock = clock
        # Per row this run has intended (its request may leave), on this host's clock: until
        # when the row is surely still this run's. From the moment the intent's commit (which
        # renewed the row's lease, only if still ours) *started*, so never later than the
        # database's own claim_until; a renewal started before that moves it on.
        self._sure_until: dict[int, float] = {}
        self._renewing: float | None = None
        # `unknown` rows this run could not look up and gave back: another run's, or a later one's.
        self._given_back: set[int] = set()

    def _lost(self) -> contextlib.AbstractContextManager[None]:
        from dialer.store.pgdb import lost_as_journal_error

        return lost_as_journal_error(self._url)

    async def still_ours(self, row_id: int, stop: asyncio.Event | None = None) -> bool:
        """`fresh(row)`, waiting while the row is locked: by this run's own writer above all,
        whose transaction (a renewal) holds every row of this run's until it commits, and it
        commits only while the loop turns. False once `stop` is set: the request stays home."""
        while True:
            found = self.fresh(row_id)
            if found is not None:
                return found
            if stop is not None and stop.is_set():
                return False
            await asyncio.sleep(LOCKED_PAUSE)

    def fresh(self, row_id: int) -> bool | None:
        """True while the row is surely this run's: its request may leave. False once a stall
        (a stopped process, a frozen host, a loop blocked) outlasted its lease, even if a
        renewal ran since, and the database says another run took the row: its request must
        not leave late. (A request that leaves late anyway meets the other run's look-up grace.)
        None: the database could not say at once, the row locked by a transaction under way
        (`still_ours` asks again)."""
        until = self._sure_until.get(row_id)
        if until is not None and self._clock() < until:
            return True
        return self._confirm(row_id)

    def _confirm(self, row_id: int) -> bool | None:
        """Past its sure time (a stall, or a renewal late on a loaded host): ask the database,
        renewing the lease in the same transaction if the row is still this run's, so no other
        run can take it between this answer and the request.

        NOWAIT: this connection is synchronous, it blocks the loop while it waits, and the
        lock may be this run's own writer's (a renewal committed on the loop): waiting for it
        here would wait for ever, the loop frozen (None instead: ask again). Another run's
        claim of the row holds its lock for one statement; once it commits the row is theirs."""
        import psycopg

        started = self._clock()
        with self._lost():
            try:
                with self.conn.transaction():
                    found = self.conn.execute(
                        "SELECT claimed_by FROM leads WHERE id = %s FOR UPDATE NOWAIT", (row_id,)
                    ).fetchone()
                    if found is None or found[0] != self.owner:
                        return False
                    self.conn.execute(
                        f"UPDATE leads SET claim_until = {NOW} + %s WHERE id = %s", (self.lease, row_id)
                    )
            except psycopg.errors.LockNotAvailable:
                return None
        self.intended(row_id, started)
        return True

    def intended(self, row_id: int, started: float) -> None:
        """The row's intent committed, in a transaction started at `started` (this clock)."""
        self._sure_until[row_id] = started + self.lease

    def settled(self, row_id: int) -> None:
        """The row's outcome is written: a next request for it comes with a next intent."""
        self._sure_until.pop(row_id, None)

    def claim_dialable(self, limit: int) -> list[int]:
        """Up to `limit` due rows in file order, free or whose claim ran out; claimed for this run.

        Read on from the last row claimed (keyset on position): rows this run holds but
        could not dial yet (hours closed) are not scanned again at every batch. At the end
        of the file, once more from the top, for rows given back since (a dead run's).
        """
        ids = self._claim_after(self._after, limit)
        if not ids and self._after >= 0:
            self._after = -1
            ids = self._claim_after(-1, limit)
        return ids

    def _claim_after(self, after: int, limit: int) -> list[int]:
        with self._lost(), self.conn.transaction():
            rows = self.conn.execute(
                (
                    f"WITH picked AS (SELECT id FROM leads WHERE status IN ({sql_list(DIALABLE)})"
                    " AND position > %s"
                    f" AND (claimed_by IS NULL OR claim_until < {NOW})"
                    " ORDER BY position LIMIT %s FOR UPDATE SKIP LOCKED)"
                    f" UPDATE leads SET claimed_by = %s, claim_until = {NOW} + %s"
                    " FROM picked WHERE leads.id = picked.id RETURNING leads.id, leads.position"
                ).encode(),
                (after, limit, self.owner, self.lease),
            ).fetchall()
        if rows:
            self._after = max(self._after, *(int(r[1]) for r in rows))
        return [int(r[0]) for r in sorted(rows, key=lambda r: int(r[1]))]

    def claim_orphans(self) -> list[int]:
        """`unknown` rows no run holds (their run died or ended): this run looks them up.

        Not this run's own, even past their lease (a renewal late behind a slow commit): an
        `unknown` row of this run's is in its hands already (its request in flight, or its
        look-up), and a second look-up beside it could dial it again. Nor a row given back
        after a failed look-up before its backoff is over (its `claim_until`, no run named),
        nor one this run gave back itself.
        """
        with self._lost(), self.conn.transaction():
            rows = self.conn.execute(
                (
                    "WITH picked AS (SELECT id FROM leads WHERE status = %s AND position IS NOT NULL"
                    f" AND coalesce(claim_until, 0) < {NOW} AND (claimed_by IS NULL OR claimed_by != %s)"
                    " AND id != ALL(%s) FOR UPDATE SKIP LOCKED)"
                    f" UPDATE leads SET claimed_by = %s, claim_until = {NOW} + %s"
                    " FROM picked WHERE leads.id = picked.id RETURNING leads.id"
                ).encode(),
                (Status.UNKNOWN.value, self.owner, sorted(self._given_back), self.owner, self.lease),
            ).fetchall()
        return sorted(int(r[0]) for r in rows)

    def give_back(self, row_id: int, after: float) -> Write:
        """The row's look-up failed: it goes back, still `unknown`, for another run to look up
        once `after` seconds have passed; this run leaves it. As a write for the run's writer,
        after the row's outcome: it applies only while this run still holds the row."""
        self._given_back.add(row_id)
        self._sure_until.pop(row_id, None)
        return Write(
            f"UPDATE leads SET claimed_by = NULL, claim_until = {NOW} + ? WHERE id = ? AND claimed_by = ?",
            (after, row_id, self.owner),
        )

    def others_hold(self) -> float | None:
        """Seconds until the first lease of another run on a row it may still dial runs out; None: none."""
        held = self.held_by_others()
        return None if held is None else held[1]

    def held_by_others(self) -> tuple[int, float] | None:
        """(rows, seconds until the first of their leases runs out): the rows other runs hold
        that they may still dial, which this run waits for; None: none.

        `pending` and `unknown` rows only: a `deferred` row another run holds was tried by it
        this run (its hours were closed), and waiting for it could make two runs wait on each
        other for ever. A due row nobody holds counts too (its wait 0): the claims skipped it
        because a transaction had it locked (another run's re-import of the file, or its
        claim under way), so it is to be claimed in a moment, not left behind. So does a row
        another run gave back after a failed look-up (its wait: the backoff's end), but not
        one this run gave back: its look-up is another run's, or a later one's.
        """
        with self._lost():
            row = self.conn.execute(
                (
                    f"SELECT count(*), min(coalesce(claim_until, 0)) - {NOW} FROM leads"
                    f" WHERE status IN ({sql_list({Status.PENDING, Status.UNKNOWN})})"
                    " AND position IS NOT NULL AND (claimed_by IS NULL OR claimed_by != %s)"
                    " AND NOT (status = %s AND id = ANY(%s))"
                ).encode(),
                (self.owner, Status.UNKNOWN.value, sorted(self._given_back)),
            ).fetchone()
        if row is None or not row[0]:
            return None
        return int(row[0]), max(0.0, float(row[1]))

    def renewal(self) -> Write:
        """The leases renewed, as a write for the run's writer: its transaction may hold locks
        on this run's rows, and a renewal on another connection would wait on it for ever.
        `renewed()` once it is committed."""
        self._renewing = self._clock()
        return Write(
            f"UPDATE leads SET claim_until = {NOW} + ? WHERE claimed_by = ?", (self.lease, self.owner)
        )

    def renewed(self) -> None:
        """The last `renewal()` is committed: every lease holds a whole lease from its start."""
        started = self._renewing
        if started is None:
            return
        # A row whose sure time ran out before the renewal started may have been taken over
        # meanwhile (the renewal only renews rows still ours): it stays stale, and is dropped.
        self._sure_until = {
            row_id: started + self.lease for row_id, until in self._sure_until.items() if until > started
        }

    def release(self) -> None:
        """The run ends: its rows are free for the next one (`unknown` ones to be looked up).
        The database gone meanwhile (the error that stopped the run says so): its leases run
        out by themselves."""
        import psycopg

        with contextlib.suppress(psycopg.Error):
            self.conn.execute(
                "UPDATE leads SET claimed_by = NULL, claim_until = NULL WHERE claimed_by = %s",
                (self.owner,),
            )
