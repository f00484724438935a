"""One row's attempt: gate -> send slot -> intent -> connection lane -> hours -> POST -> next state.

    gate       do-not-call list, calling hours (the campaign's and the law's), the number's
               per-24-hour cap, a caller id under its cap (`_gate`)
    slot       the pacer's permission to send now (`async with self.slot()`)
    intent     committed right before the request: a crash leaves `unknown` only rows
               that may really have left
    lane       one connection; holding it is what "in flight" means
    hours      checked again once the lane is held: waiting for a slot or a lane takes time
               (every hours check uses the lead's law: dialer.law.rules_for, cached)
    POST       429: the pacer slows down and the row is sent again (not an attempt)
    next state `transitions.after_answer`, committed by the caller

A row whose request never left (stopped, hours closed while waiting, cancelled before
the POST, only 429s, a refused key) is restored as it was, caller id count included. So is
a row none of whose tries reached the API when the API seems down (`_not_the_rows_fault`).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from tenacity import AsyncRetrying, retry_if_result, stop_after_attempt

from dialer.bookkeeping import Clock, Run, key_refused, mask, never_reached
from dialer.caps import WINDOW, at_cap, cap_for, due_after_cap
from dialer.client import CALLS, CHATS, Answer, SynthflowClient, call_body, chat_body
from dialer.config import Campaign
from dialer.hours import CallingHours
from dialer.law import LawRules, rules_for
from dialer.model import JournalRow, Status
from dialer.numbers import NumberPool, PoolExhausted
from dialer.pacing import LiveCeiling, Pacer, Ticket
from dialer.store import LiveSlots, NumberTaken, RateGate, RateGrant, intent, restore
from dialer.store.claims import ClaimLost, Claims
from dialer.transitions import (
    Next,
    Policy,
    after_answer,
    capped,
    on_suppression_list,
    outside_hours,
    redial_waits,
    throttled_out,
)

log = structlog.get_logger("dialer")

# A row answered 429 this many times in a row goes back untouched, for a later run.
MAX_THROTTLES = 100


def is_concurrency_limit(answer: Answer) -> bool:
    """A 429 whose body says the account's live-call limit was hit (not the request rate)."""
    return answer.kind == "throttled" and "concurren" in answer.error.lower()


def is_retryable(answer: Answer | None) -> bool:
    """The one predicate for retrying: the API never got the request (503, 408, no connection)."""
    return answer is not None and answer.kind == "retry"


@dataclass
class Attempt:
    """One attempt in progress: what has happened so far decides what a stop must undo."""

    row: JournalRow
    number: str  # the caller id ('' for none)
    day: str | None  # the caller id's day, for its daily count
    began: datetime
    body: dict[str, Any]
    intent_committed: bool = False
    sending: bool = False  # the POST is out: a cancel now must not restore the row
    throttles: int = 0
    closed: bool = False  # the hours closed while the row waited for its slot
    taken: bool = False  # the journal refused the intent: another row called the number
    answer: Answer | None = None
    live_held: bool = False  # holds a live-call slot (passed to follow.py once accepted)


class Sender:
    """Sends rows, one attempt (and its retries) at a time per caller."""

    def __init__(
        self,
        run: Run,
        campaign: Campaign,
        client: SynthflowClient,
        pacer: Pacer,
        pool: NumberPool,
        clock: Clock,
        suppressed: Mapping[str, str],
        live: LiveCeiling | None = None,
        gate: RateGate | None = None,
        shared_live: LiveSlots | None = None,
        claims: Claims | None = None,
    ) -> None:
        """`live`: the live-call ceiling (call mode); an accepted call keeps its slot.
        `gate`: the send window shared with other runs and campaigns (None: this run alone).
        `shared_live`: live-call slots shared with them too (None: the run's ceiling alone).
        `claims`: this run's claims on a shared campaign (None: this run alone)."""
        self.run = run
        self.live = live
        self.shared_live = shared_live
        self.gate = gate
        self.claims = claims
        self.campaign = campaign
        self.limits = campaign.limits
        self.policy = Policy(campaign.mode, campaign.limits.max_attempts)
        self.client = client
        self.pacer = pacer
        self.pool = pool
        self.clock = clock
        self.hours = CallingHours(campaign.hours)
        self.suppressed = suppressed
        self.pacing: set[asyncio.Task[Any]] = set()  # callers waiting for a send slot
        self.intent_at: dict[int, float] = {}  # when each row's last request was committed
        self._lanes: asyncio.Queue[int] = asyncio.Queue()
        for lane in range(self.limits.concurrency):
            self._lanes.put_nowait(lane)
        self._path = CALLS if campaign.mode == "call" else CHATS
        self._body = call_body if campaign.mode == "call" else chat_body

    # -- a row to its next state, retries included ----------------------------------

    async def dial(self, row: JournalRow) -> Next | None:
        """Dial one row until an answer decides it; commit that. None: already recorded."""
        answered_before = self.run.reach.answered
        answers: list[Answer] = []

        async def once(this: JournalRow) -> Answer | None:
            answer = await self.attempt(this)
            if answer is not None:
                answers.append(answer)
            return answer

        try:
            answer = await self._with_retries(row, once)
        except asyncio.CancelledError:
            # A stop cancels a row waiting for its send slot, between two tries.
            if self._not_the_rows_fault(answers, answered_before):
                self.run.writer.submit(restore(row, "", None))
            raise
        if self._not_the_rows_fault(answers, answered_before):
            await self.run.writer.commit(restore(row, "", None))  # as it was before this dial
            return None
        if answer is None:
            return None  # deferred, capped or stopped: already recorded
        next_state = after_answer(answer, self.policy)
        # A row handed to a look-up is counted once the look-up decides it.
        await self.run.record(row, next_state, answer, counted=not next_state.settle)
        return next_state

    async def _with_retries(
        self, row: JournalRow, once: Callable[[JournalRow], Awaitable[Answer | None]]
    ) -> Answer | None:
        """The row's answer after its retries (503, 408, no connection), or None if not sent."""
        answer = await once(row)
        if is_retryable(answer) and self.limits.max_attempts > 1:
            # Only a row that needs another try pays for the retry machinery (the happy
            # path is the hot path of a million rows).
            await self._sleep(self._backoff_after(1, answer))
            retrying = AsyncRetrying(
                stop=stop_after_attempt(self.limits.max_attempts - 1),
                wait=lambda state: self._backoff_after(
                    state.attempt_number + 1, state.outcome.result() if state.outcome else None
                ),
                retry=retry_if_result(is_retryable),
                retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
                sleep=self._sleep,
            )
            answer = await retrying(once, row)
        return answer

    def _not_the_rows_fault(self, answers: list[Answer], answered_before: int) -> bool:
        """Not one of the row's requests reached the API, and the run stopped (the API is
        down, say) or no request of any row got an answer since the row's first try: those
        were no attempts of the row's. A row whose connection alone fails, while others get
        answers, still gives up after max_attempts."""
        if not answers or not all(never_reached(a) for a in answers):
            return False
        return self.run.stop.is_set() or self.run.reach.answered == answered_before

    def _backoff_after(self, attempts: int, answer: Answer | None) -> float:
        """Full jitter (uniform up to base * 2^(attempts-1), capped), never under Retry-After."""
        ceiling = min(
            self.limits.backoff_max_seconds,
            self.limits.backoff_base_seconds * 2 ** (attempts - 1),
        )
        floor = answer.retry_after if answer is not None and answer.retry_after else 0.0
        return max(random.uniform(0, ceiling), floor)

    async def _sleep(self, seconds: float) -> None:
        """A backoff that ends early when the run stops."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.run.stop.wait(), timeout=seconds)

    # -- one attempt ------------------------------------------------------------------

    async def attempt(self, row: JournalRow) -> Answer | None:
        """One request for the row; None when it was not sent (the reason is recorded)."""
        if self.run.stop.is_set():
            return None
        now = self.clock()
        cleared = await self._gate(row, now)
        if isinstance(cleared, Next):
            await self.run.record(row, cleared)
            return None
        day = self.pool.day_of(cleared, now) if cleared else None
        attempt = Attempt(row, cleared, day, now, self._body(self.campaign, row, cleared))
        try:
            await self._send(attempt)
        except asyncio.CancelledError:
            self._free_live(attempt)
            if not attempt.sending:
                self._restore(attempt)
            raise
        except Exception:
            self._free_live(attempt)  # the run stops on it; the slot must not leak meanwhile
            raise
        answer = attempt.answer
        if answer is not None and answer.kind == "accepted" and answer.id and attempt.live_held:
            if self.shared_live is not None:
                self.shared_live.placed(attempt.row.id, answer.id)
        else:
            # Not placed (or placed with no id to follow it by): the slot is free again. An
            # unanswered request's call, if a look-up finds one, takes a slot then; its
            # shared slot stays held until the look-up decides (dispatch._settle).
            self._free_live(attempt, shared=answer is None or answer.kind != "unknown")
        return await self._conclude(attempt)

    def _free_live(self, attempt: Attempt, *, shared: bool = True) -> None:
        if self.live is not None and attempt.live_held:
            attempt.live_held = False
            self.live.release()
            if self.shared_live is not None and shared:
                self.shared_live.give_back(attempt.row.id)

    async def _live_slot(self, attempt: Attempt) -> None:
        """Wait for a live-call slot; like the send slot, a stop cancels the wait."""
        if self.live is None or attempt.live_held:
            return
        me = asyncio.current_task()
        assert me is not None
        self.pacing.add(me)
        try:
            await self.live.acquire()
            if self.shared_live is not None:
                try:
                    await self.shared_live.take(attempt.row.id)
                except BaseException:
                    self.live.release()
                    raise
            attempt.live_held = True
        finally:
            self.pacing.discard(me)

    async def _gate(self, row: JournalRow, now: datetime) -> Next | str:
        """The pre-send checks: the row's next state if it may not be sent now, else its caller id."""
        if row.phone in self.suppressed:
            return on_suppression_list(self.suppressed[row.phone])
        if redial_waits(row, now):
            return Next(row.status, row.error)  # [redial]: not due yet, left as it is
        law = rules_for(row.phone, row.state)
        if not self.hours.is_open(row.timezones, now, law):
            return self.closed(row, now, law)
        capped_now = self._at_cap(row, law, now)
        if capped_now is not None:
            return capped_now
        try:
            return await self.pool.take(row.phone, row.timezones, now) or ""
        except PoolExhausted as exc:
            # Only a pool capped everywhere stops the feed; one country's numbers capped defer its leads.
            self.run.stats.pool_exhausted = exc.everywhere
            return capped() if exc.everywhere else capped(str(exc))

    def closed(self, row: JournalRow, now: datetime, law: LawRules | None = None) -> Next:
        """Outside the row's hours (the campaign's and its law's): deferred until they open,
        or invalid, saying so, when they never can (naming the law when it is to blame)."""
        law = rules_for(row.phone, row.state) if law is None else law
        return outside_hours(
            row.timezones, self.hours.next_open(row.timezones, now, law), self.hours.law_conflict(law)
        )

    def _at_cap(self, row: JournalRow, law: LawRules, now: datetime) -> Next | None:
        """Deferred when the number has had its cap of calls in the last 24 hours (any row, any run)."""
        cap = cap_for(self.limits.calls_per_24h, law)
        if cap is None:
            return None
        dialed = self.run.journal.dials_since(row.phone, (now - WINDOW).timestamp())
        due = due_after_cap(dialed, cap[0], now)
        return None if due is None else at_cap(cap[0], cap[1], due)

    async def _send(self, attempt: Attempt) -> None:
        """Send once a slot comes, again after each 429; the answer lands in `attempt`."""
        row = attempt.row
        while True:
            await self._live_slot(attempt)
            async with self.slot() as ticket:
                if self.run.stop.is_set() or not self._still_open(attempt):
                    return
                if not await self._commit_intent(attempt):
                    return  # the number is another row's: the journal made the row a duplicate
                async with self.lane() as lane:
                    on_sent = await self._leave_now(attempt, ticket)
                    if on_sent is None:
                        return
                    attempt.sending = True
                    self.run.stats.requests += 1
                    answer = await self.client.post(self._path, attempt.body, on_sent=on_sent, lane=lane)
                    attempt.sending = False
                if self.run.reach.note(answer):
                    self.run.fail(self.run.reach.unreachable())  # the rows stay dialable
                attempt.answer = answer
                if answer.kind != "throttled":
                    self.pacer.accepted(ticket)
                    return
                if self.live is not None and is_concurrency_limit(answer):
                    await self._live_refused(attempt)
                else:
                    self.pacer.throttle(ticket, answer.retry_after)
                    if self.gate is not None:
                        await self.gate.throttled()
            attempt.throttles += 1
            log.debug("lead.throttled", row=row.position, retry_after=answer.retry_after)
            if self.run.stop.is_set() or attempt.throttles >= MAX_THROTTLES:
                return  # a 429 means not placed: the row goes back untouched

    async def _live_refused(self, attempt: Attempt) -> None:
        """Too many calls live, not too many requests: the rate stays, the live-call
        ceilings (the run's, and the shared ones) come down to what is live."""
        assert self.live is not None
        self._free_live(attempt)
        self.live.refused()
        if self.shared_live is not None:
            await self.shared_live.refused()
        self.run.stats.live_refusals += 1

    async def _leave_now(self, attempt: Attempt, ticket: Ticket) -> Callable[[], None] | None:
        """The last checks before the request leaves, lane in hand; what to call once it has
        left, or None: it must not leave (stopped, its hours closed, or this run stalled past
        its lease on a shared campaign: the row may be another run's by now)."""
        # The lane may come late too (a slow API holds every connection): the
        # hours are checked last, right before the request leaves.
        if self.run.stop.is_set() or not self._still_open(attempt):
            return None
        # The shared window's grant comes last, with the connection in hand, so
        # little time passes between the grant and the request leaving.
        on_sent = ticket.left if self.gate is None else self._both(ticket, await self.gate.acquire())
        if self.claims is not None and not await self.claims.still_ours(attempt.row.id, self.run.stop):
            return None
        return on_sent

    @staticmethod
    def _both(ticket: Ticket, grant: RateGrant) -> Callable[[], None]:
        def left() -> None:
            ticket.left()
            grant.left()

        return left

    def _still_open(self, attempt: Attempt) -> bool:
        """The row's hours, checked again after a wait (a slow rate, a Retry-After, a busy lane)."""
        row = attempt.row
        if self.hours.is_open(row.timezones, self.clock(), rules_for(row.phone, row.state)):
            return True
        attempt.closed = True
        return False

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[Ticket]:
        """The pacer's slot; released (counted as sent, to stay conservative) however the block ends.

        Waiting for a slot is not being in flight: on a stop the dispatcher cancels this
        wait rather than drain it.
        """
        me = asyncio.current_task()
        assert me is not None
        self.pacing.add(me)
        try:
            ticket = await self.pacer.wait()
        finally:
            self.pacing.discard(me)
        try:
            yield ticket
        finally:
            ticket.left()

    @asynccontextmanager
    async def lane(self) -> AsyncIterator[int]:
        """A connection lane: at most `concurrency` requests out while other workers wait."""
        lane = await self._lanes.get()
        try:
            yield lane
        finally:
            self._lanes.put_nowait(lane)

    async def _commit_intent(self, attempt: Attempt) -> bool:
        """Once per attempt, after the slot: the window counts real send times, so the
        commit's few milliseconds cannot bunch requests. False: the journal refused it."""
        if attempt.intent_committed:
            return True
        at = self.intent_at[attempt.row.id] = time.time()
        # Set first: cancelled mid-commit, the writes still land, and the restore queued
        # after them puts the row back.
        attempt.intent_committed = True
        # The cap counts on the dispatcher's clock, like the hours.
        dialed_at = self.clock().timestamp()
        try:
            await self.run.writer.commit(
                intent(attempt.row.id, attempt.number, attempt.day, at=at, dialed_at=dialed_at)
            )
        except NumberTaken:
            attempt.intent_committed = False
            attempt.taken = True
            return False
        except ClaimLost:
            # Another run holds the row now (this run's lease ran out): it is theirs to send.
            attempt.intent_committed = False
            return False
        return True

    async def _conclude(self, attempt: Attempt) -> Answer | None:
        """After the last request of the attempt: restore what was not sent, stop on auth."""
        row, answer = attempt.row, attempt.answer
        if answer is None or answer.kind == "throttled":
            # Stopped, hours closed, or only ever answered 429: nothing was placed.
            self._restore(attempt)
            if attempt.taken:
                self.run.count(Status.DUPLICATE, row)  # the journal wrote it with the refusal
            elif attempt.closed:
                await self.run.record(row, self.closed(row, self.clock()))
            elif attempt.throttles >= MAX_THROTTLES:
                await self.run.record(row, throttled_out(row, attempt.throttles))
            return None  # stopped: the row stays exactly as it was
        if attempt.number:
            self.run.stats.by_number[attempt.number] += 1
        if answer.kind == "auth":
            self._restore(attempt)
            raise key_refused(answer.error)
        if answer.kind == "retry":
            await self.run.record(row, after_answer(answer, self.policy, final=False), counted=False)
            log.info(
                "lead.retry",
                row=row.position,
                attempt=self.run.journal.row(row.id).attempts,
                phone=mask(row.phone),
                error=answer.error,
            )
        return answer

    def _restore(self, attempt: Attempt) -> None:
        """No call was placed: the row, and its caller id's daily count, go back as they were."""
        if attempt.intent_committed:
            self.run.writer.submit(restore(attempt.row, attempt.number, attempt.day))
        if attempt.number:
            self.pool.release(attempt.number, attempt.began)
