"""The feeder and the worker pool: rows from the journal to `send`, lost answers to `settle`.

    feeder   settles what earlier runs left `unknown`, then queues every dialable row in
             file order (rows outside their hours are deferred here, in batches), up to
             --limit distinct rows
    workers  four per connection lane: each takes a row, `Sender.dial`s it, hands a
             row whose answer was lost to a `Settler`, and an accepted call to the
             `Follower`, which holds its live-call slot until the call ends
    follower polls the live calls (those of earlier runs too) until they end; once every
             row is dialed the run waits for them, unless --no-wait
    no slot  a shared live-call limit full for good (every slot filling it held for a call
             that may be live and that nothing this run waits for can settle: a look-up
             failed): no more rows taken; the run ends with them left (`_no_room`)
    stop     a signal, a refused key or an internal error: idle workers and those waiting
             for a send slot go at once (their rows stay as they were); requests in flight
             may finish within drain_seconds, so their answers are saved

Nothing here sleeps to pace: waiting is the pacer's job, so stopping is quick.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from dialer.bookkeeping import Clock, Progress, Run, RunStats, utc_now
from dialer.caps import WINDOW, rested_callers
from dialer.client import SynthflowClient
from dialer.config import Campaign
from dialer.follow import Follower
from dialer.hours import CallingHours
from dialer.law import rules_for
from dialer.model import DIALABLE, JournalRow, Status
from dialer.numbers import NumberPool
from dialer.pacing import LiveCeiling, Pacer
from dialer.send import Sender
from dialer.settle import Settler
from dialer.store import JournalStore, Write, outcome
from dialer.store.callerdays import shared_days
from dialer.store.claims import Claims
from dialer.store.liveslots import NoRoom
from dialer.transitions import CAPPED, Next, redial_waits

log = structlog.get_logger("dialer")


def rested_now(journal: JournalStore) -> dict[str, str]:
    """Caller ids whose calls of the last 24 hours keep failing: not used this run, saying why.
    On the wall clock: calls are stamped with it when placed."""
    rested = rested_callers(journal.recent_by_caller(time.time() - WINDOW.total_seconds()))
    for number, why in rested.items():
        log.warning("caller_id.rested", number=number, reason=why)
    return rested


# Deferrals the feeder gathers before committing them.
DEFER_BATCH = 2000


@dataclass
class DispatchOptions:
    limit: int | None = None
    clock: Clock = utc_now
    progress: Progress = field(default_factory=Progress)
    wait_for_calls: bool = True  # False: --no-wait, live calls left to a later run


class Dispatcher:
    """Dials every due row of the journal once, within rate, hours and caps."""

    def __init__(
        self,
        campaign: Campaign,
        journal: JournalStore,
        client: SynthflowClient,
        options: DispatchOptions,
        suppressed: Mapping[str, str],
    ) -> None:
        """`suppressed`: the do-not-call numbers of this run (number -> list), read once by the run."""
        self.campaign = campaign
        self.journal = journal
        self.options = options
        self.limits = campaign.limits
        self.hours = CallingHours(campaign.hours)
        # Several runs may share a PostgreSQL campaign: this run's claims (None: it is alone).
        self.claims = journal.claims(self.limits.claim_lease_seconds)
        self.run_state = Run(journal, journal.writer(), options.progress, campaign.limits.stop_when_failed)
        self.stats = self.run_state.stats
        self.stop = self.run_state.stop
        # A restart keeps the window of the run before it: no burst right after a crash. The
        # window is the whole rate period (1/rate seconds at a rate under one a second).
        window = Pacer.window_for(self.limits.rate_per_second)
        pacer = Pacer(
            self.limits.rate_per_second,
            self.limits.min_rate_per_second,
            recent=journal.recent_sends(window + 1.0),
            # The loop's clock, as aiolimiter reads it (time.monotonic on asyncio's own loop).
            clock=asyncio.get_running_loop().time,
        )
        self.pacer = pacer
        # Caller-id counts shared with the campaign's other runs and its account (None: alone).
        self.pool = NumberPool(
            campaign.numbers, journal.number_usage(), rested_now(journal), shared=shared_days(campaign)
        )
        # The window shared with other runs and the account's other campaigns (None: alone).
        self.gate = journal.rate_gate(campaign)
        self.ceiling: LiveCeiling | None = None
        self.follower: Follower | None = None
        # Live-call slots shared with other runs and the account's campaigns (None: alone).
        self.shared_live = journal.live_slots(campaign) if campaign.mode == "call" else None
        if campaign.mode == "call":
            # Calls an earlier run left live hold their slots from the start.
            live = journal.live_calls()
            self.ceiling = LiveCeiling(self.limits.max_live_calls, held=len(live))
            self.follower = Follower(
                self.run_state,
                campaign,
                client,
                self.ceiling,
                redial_clock=lambda: options.clock().timestamp(),
                slots=self.shared_live,
            )
            self.follower.load(live)
            if self.shared_live is not None:
                self.shared_live.watch_orphans(self._take_over)
                self.shared_live.watch_unsettled(self._may_settle, self._no_room)
        self.sender = Sender(
            self.run_state,
            campaign,
            client,
            pacer,
            self.pool,
            options.clock,
            suppressed,
            self.ceiling,
            gate=self.gate,
            shared_live=self.shared_live,
            claims=self.claims,
        )
        self.settler = (
            Settler(self.run_state, campaign, client, self._redial, self.claims)
            if campaign.mode == "call"
            else None
        )
        self._queue: asyncio.Queue[JournalRow] = asyncio.Queue(self.limits.concurrency * 4)
        # Rows queued, in flight or being settled: the feeder skips them, so none is queued twice.
        self._owned: set[int] = set()
        self._dialed: set[int] = set()  # rows taken this run, for --limit
        self._feeding = True
        self._busy: set[asyncio.Task[Any]] = set()  # workers with a row in hand
        self._idle = asyncio.Event()
        self._settlers: set[asyncio.Task[None]] = set()
        self._said_waiting = -math.inf  # when the feeder last said it waits for other runs' rows
        self._feeder: asyncio.Task[None] | None = None
        self._lookup_failed: set[int] = set()  # rows this run could not look up: a later run's
        self._out_of_slots = False  # a live-call limit full for good: no more rows taken

    # -- the run ----------------------------------------------------------------

    async def run(self) -> RunStats:
        """Settle what earlier runs left `unknown`, then dial every due row."""
        # Four workers per lane: while some wait on the journal, others send.
        workers = [asyncio.create_task(self._worker()) for _ in range(4 * self.limits.concurrency)]
        feeder = self._feeder = asyncio.create_task(self._feed())
        renewer = asyncio.create_task(self._renew_claims())
        follower = asyncio.create_task(self.follower.follow()) if self.follower else None
        ticker = asyncio.create_task(self._tick_progress())
        try:
            await self._until_done_or_stopped()
            feeder.cancel()
            await self._wind_down(workers)
            if follower is not None:
                follower.cancel()
            await asyncio.gather(*workers, feeder, *self._settlers, return_exceptions=True)
            if follower is not None:
                await asyncio.gather(follower, return_exceptions=True)
        finally:
            renewer.cancel()
            ticker.cancel()
            await self.run_state.writer.close()
            if self.gate is not None:
                await self.gate.close()
            if self.shared_live is not None:
                await self.shared_live.close()  # after the writer: its hand-over reads the journal
            if self.pool.shared is not None:
                await self.pool.shared.close()
            if self.claims is not None:
                self.claims.release()
            self.stats.finished = time.monotonic()
            self.stats.throttled = self.pacer.throttled
            if self.ceiling is not None:
                self.stats.most_live = max(self.stats.most_live, self.ceiling.most_held)
            self.options.progress.tick(self.stats)  # the last figures, however short the run
        if self.stats.pool_exhausted:
            self.journal.defer_dialable(CAPPED)
        if self.run_state.fatal is not None:
            raise self.run_state.fatal
        return self.stats

    async def _tick_progress(self) -> None:
        """Progress on time, not on outcomes: a run waiting on look-ups or backoffs shows it."""
        progress = self.options.progress
        while True:
            await asyncio.sleep(progress.every)
            progress.tick(self.stats)

    async def _until_done_or_stopped(self) -> None:
        """Every row dialed (and, unless --no-wait, every call ended), or a stop."""
        await self._first(self._idle.wait())
        if self.follower is not None and self.options.wait_for_calls:
            if self.claims is not None and not self.stop.is_set():
                # Several runs share the campaign: the live calls of the others (a dead one's
                # above all) are waited for too, so the campaign's last run leaves none live.
                self.follower.adopt(self.journal.live_calls())
            self.follower.hurry()
            await self._first(self.follower.drained.wait())
        self.stop.set()

    async def _first(self, waited: Any) -> None:
        """Wait for `waited` or a stop, whichever comes first."""
        done_waiter = asyncio.create_task(waited)
        stop_waiter = asyncio.create_task(self.stop.wait())
        await asyncio.wait({done_waiter, stop_waiter}, return_when=asyncio.FIRST_COMPLETED)
        done_waiter.cancel()
        stop_waiter.cancel()

    async def _wind_down(self, workers: list[asyncio.Task[None]]) -> None:
        """Idle workers go at once, and so do those still waiting for a send slot (their rows
        go back as they were); in-flight requests may finish (bounded), so their answers are
        saved."""
        for task in workers:
            if task not in self._busy or task in self.sender.pacing:
                task.cancel()
        _, late = await asyncio.wait(workers, timeout=self.limits.drain_seconds)
        for task in late:
            task.cancel()
        for task in list(self._settlers):
            task.cancel()

    def _within_limit(self, row: JournalRow) -> bool:
        """`--limit N`: at most N distinct rows dialed this run (a re-dial is the same row)."""
        if row.id in self._dialed:
            return True
        if self.options.limit is not None and len(self._dialed) >= self.options.limit:
            return False
        self._dialed.add(row.id)
        return True

    def _enter(self, row: JournalRow) -> None:
        self._owned.add(row.id)

    def _leave(self, row: JournalRow) -> None:
        self._owned.discard(row.id)
        if not self._owned and not self._feeding:
            self._idle.set()

    # -- the feeder ---------------------------------------------------------------

    async def _feed(self) -> None:
        try:
            if self.claims is None:
                self._settle_earlier_runs()
                await self._feed_dialable()
            else:
                await self._feed_claimed(self.claims)
        except Exception as exc:  # an internal error must stop the run, not end it quietly
            self.run_state.fail(exc)
        finally:
            self._feeding = False
            if not self._owned:
                self._idle.set()

    async def _feed_dialable(self) -> None:
        deferred: list[tuple[JournalRow, Next]] = []
        try:
            for row in self.journal.rows_with_status(DIALABLE):
                if not await self._offer(row, deferred):
                    break
        finally:
            if deferred:  # also when a stop cancels the feeder: what is counted is what the journal gets
                self.run_state.writer.submit(self._deferrals(deferred))

    def _deferrals(self, batch: list[tuple[JournalRow, Next]]) -> list[Write]:
        """The writes of rows outside their hours, counted here: the caller queues them at once."""
        writes: list[Write] = []
        for row, closed in batch:
            writes += outcome(row.id, closed.status, error=closed.error)
            self.run_state.count(closed.status, row, log_it=False)
        return writes

    async def _offer(self, row: JournalRow, deferred: list[tuple[JournalRow, Next]]) -> bool:
        """Queue one due row (or defer it, its hours closed); False: the feed must stop."""
        if self.stop.is_set() or self.stats.pool_exhausted:
            return False
        if row.id in self._owned:
            return True
        now = self.options.clock()
        if redial_waits(row, now):
            return True  # [redial]: its next call is not due yet; it stays as it is
        law = rules_for(row.phone, row.state)  # cached per (area-code state, state column)
        if not self.hours.is_open(row.timezones, now, law):
            deferred.append((row, self.sender.closed(row, now, law)))
            if len(deferred) >= DEFER_BATCH:
                batch = list(deferred)
                deferred.clear()
                await self.run_state.writer.commit(self._deferrals(batch))
            return True
        if not self._within_limit(row):
            return False
        self._enter(row)
        try:
            await self._queue.put(row)
        except asyncio.CancelledError:
            self._leave(row)  # never queued (the feeder cancelled): not owned, or the run never idles
            raise
        return True

    async def _feed_claimed(self, claims: Claims) -> None:
        """Several runs on one campaign: rows claimed a few at a time, until none is left to anyone.

        Rows another run left `unknown` and no longer holds are looked up; rows another
        live run holds are its own; a dead run's rows come back when its lease runs out,
        so this run waits for that rather than end with rows nobody will take.
        """
        deferred: list[tuple[JournalRow, Next]] = []
        try:
            while not self.stop.is_set():
                if self.settler is not None:
                    for row in self.journal.rows_by_id(claims.claim_orphans()):
                        self._settle_later(row, row.intent_at or 0.0)
                rows = self.journal.rows_by_id(claims.claim_dialable(self.limits.concurrency))
                if rows:
                    if not await self._offer_all(rows, deferred):
                        break
                    continue
                held = claims.held_by_others()
                if held is None:
                    break
                self._say_waiting(*held)
                await self._pause(min(held[1] + 0.05, 1.0))
        finally:
            if deferred:
                self.run_state.writer.submit(self._deferrals(deferred))

    def _say_waiting(self, rows: int, lease_ends_in: float) -> None:
        """The run waits for rows other runs hold (live runs renew their leases; a dead one's
        run out): said when the wait begins, then at every progress tick, never silent."""
        now = time.monotonic()
        if now - self._said_waiting < self.options.progress.every:
            return
        self._said_waiting = now
        log.info(
            "run.waiting",
            reason="rows other runs hold: theirs to dial, or any run's once a lease runs out",
            rows=rows,
            first_lease_ends_in=round(lease_ends_in, 1),
        )

    async def _offer_all(self, rows: list[JournalRow], deferred: list[tuple[JournalRow, Next]]) -> bool:
        for row in rows:
            if not await self._offer(row, deferred):
                return False
        return True

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), timeout=seconds)

    async def _renew_claims(self) -> None:
        """Keep this run's leases alive while it runs (a third of the lease between renewals).
        A renewal that fails stops the run: its rows would go to other runs while it works
        on them (and nobody awaits this task before the end)."""
        if self.claims is None:
            return
        try:
            while True:
                await asyncio.sleep(self.limits.claim_lease_seconds / 3)
                await self.run_state.writer.commit([self.claims.renewal()])
                self.claims.renewed()
        except Exception as exc:
            self.run_state.fail(exc)

    def _settle_earlier_runs(self) -> None:
        """Rows an earlier run left `unknown` (it crashed, or got no answer): look them up."""
        if self.settler is None:
            return
        for row in list(self.journal.rows_with_status({Status.UNKNOWN})):
            if self.stop.is_set():
                return
            self._settle_later(row, row.intent_at or 0.0)

    # -- the workers ----------------------------------------------------------------

    async def _worker(self) -> None:
        """Dial rows from the queue, one at a time."""
        me = asyncio.current_task()
        assert me is not None
        while not self.stop.is_set():
            row = await self._queue.get()
            self._busy.add(me)
            handed_on = False
            try:
                if self.stop.is_set() or self._out_of_slots:
                    continue  # never started: the row stays as the journal has it
                handed_on = await self.dial(row)
            except Exception as exc:  # a refused key, or an internal error: stop the run
                self.run_state.fail(exc)
            finally:
                self._busy.discard(me)
                if not handed_on:
                    self._leave(row)

    async def dial(self, row: JournalRow) -> bool:
        """Dial one row to an outcome; True when it was handed to a look-up, which now owns it."""
        next_state = await self.sender.dial(row)
        # Where a row goes after its POST: an accepted call to follow.py (its live-call
        # slot with it), a lost answer to a look-up (settle.py).
        if next_state is not None and next_state.status == Status.SENT:
            if self.follower is not None and next_state.call_id:
                self.follower.track(row.id, next_state.call_id, time.time())
            elif self.follower is None:
                self.run_state.call_result(None)  # a chat: accepted is as far as it goes
        if next_state is None or not next_state.settle:
            return False
        self._settle_later(row, self.sender.intent_at.pop(row.id, time.time()))
        return True

    def _take_over(self, call_ids: list[str]) -> None:
        """Live calls of this campaign whose run stopped (their slots held for them): followed
        here, their slots with them, so they end in the journal and free their slots."""
        assert self.follower is not None
        wanted = set(call_ids)
        for call in self.journal.live_calls():
            if call.call_id in wanted:
                self.follower.track(call.lead_id, call.call_id, call.placed_at, take_slot=True)

    def _may_settle(self, lead_id: int) -> bool:
        """May this run still decide the lead of an unbound live-call slot of the campaign?
        Its own row in hand (in flight, being looked up), or, several runs sharing the
        campaign, a row some run may still take to look up; not a row whose look-up failed
        here (this run never looks it up again)."""
        if lead_id in self._owned:
            return True
        return self.claims is not None and lead_id not in self._lookup_failed

    def _no_room(self, why: NoRoom) -> None:
        """A live-call limit is full for good, of calls that may be live and that nothing
        this run waits for can settle: waiting would be for ever. The run takes no more
        rows (the queued ones, and the waiting one whose task this is, stay as the journal
        has them), finishes what it has in hand and ends with rows left, for a later run."""
        if not self._out_of_slots:
            self._out_of_slots = True
            log.warning(
                "run.no_live_slot",
                limit=why.limit,
                slots=why.slots,
                reason="the live-call limit is full of calls that may be live whose look-up failed"
                " (or that no run holds now); no more rows this run: a later run looks them up",
            )
            if self._feeder is not None:
                self._feeder.cancel()
            while not self._queue.empty():
                self._leave(self._queue.get_nowait())
        waiting = asyncio.current_task()
        if waiting is not None:
            waiting.cancel()  # a take's wait, as a stop cancels it: its row goes back as it was

    # -- look-ups -------------------------------------------------------------------

    def _settle_later(self, row: JournalRow, intent_at: float) -> None:
        self._enter(row)
        task = asyncio.create_task(self._settle(row, intent_at))
        self._settlers.add(task)
        task.add_done_callback(self._settlers.discard)

    async def _settle(self, row: JournalRow, intent_at: float) -> None:
        assert self.settler is not None
        requeued = False
        try:
            requeued = await self.settler.settle(row, intent_at)
            settled = self.journal.row(row.id)
            if not requeued and settled.status == Status.SENT and settled.call_id and self.follower:
                # The look-up found the call: it may be live, and is followed like any other.
                self.follower.track(row.id, settled.call_id, intent_at, take_slot=True)
            elif self.shared_live is not None:
                if settled.status != Status.UNKNOWN:
                    self.shared_live.give_back(row.id)  # no call: the unanswered POST's slot is free
                    return
                # Its slot stays held (the call may be live), and this run never looks the row
                # up again: a full limit of such slots is not waited for (`_no_room`).
                self._lookup_failed.add(row.id)
                if self.claims is not None:
                    # Still unknown, the row given back (a failed look-up): the run whose
                    # look-up decides it gets the slot with it.
                    self.shared_live.hand_over(row.id)
        except Exception as exc:  # an internal error must stop the run, not end it quietly
            self.run_state.fail(exc)
        finally:
            if not requeued:
                self._leave(row)

    async def _redial(self, row: JournalRow) -> bool:
        """A look-up found no call: dial the row again, still owned, so the feeder cannot
        queue it a second time."""
        if self._out_of_slots or not self._within_limit(row):
            self.run_state.count(Status.PENDING, row)
            return False  # --limit reached, or no live-call slot to be had: a later run dials it
        await self._queue.put(self.journal.row(row.id))
        return True
