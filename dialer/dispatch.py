"""The worker pool: rows from the journal, through calling hours, the number pool and the
pacer, to the API, and every outcome back to the journal.

One row's life in a run (`Dispatcher.dial`):

    hours closed? -> `deferred`          every caller id capped? -> `deferred`, stop feeding
    pacer slot -> intent committed (`unknown`) -> POST
        accepted  -> `sent` (call_id)    refused -> `failed` (the API's message)
        throttled -> the pacer slows down; sent again (not an attempt)
        retry     -> `pending`, backoff (full jitter, Retry-After as the floor), up to max_attempts
        unknown   -> `unknown`; after settle_after_seconds a look-up decides: found -> `sent`,
                     not found -> dialed again; no look-up possible -> stays `unknown`
        auth      -> the row is restored as it was and the whole run stops

Nothing here sleeps to pace: waiting is the pacer's job, so stopping is quick.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from tenacity import AsyncRetrying, retry_if_result, stop_after_attempt

from dialer import journal as j
from dialer.client import (
    CALLS,
    CHATS,
    Answer,
    LookupError_,
    LookupRefused,
    SynthflowClient,
    call_body,
    chat_body,
)
from dialer.config import Campaign
from dialer.errors import AuthError
from dialer.hours import CallingHours
from dialer.journal import Journal, JournalRow, JournalWriter
from dialer.numbers import NumberPool, PoolExhausted
from dialer.pacing import Pacer
from dialer.suppress import suppression_sources

log = structlog.get_logger("dialer")

Clock = Callable[[], datetime]


LOOKUP_CONCURRENCY = 4


def is_retryable(answer: Answer | None) -> bool:
    """The one predicate for retrying: the API never got the request (503, 408, no connection)."""
    return answer is not None and answer.kind == "retry"


def never_open_reason(zones: tuple[str, ...]) -> str:
    """A number spanning zones whose windows never overlap (a toll-free number, say)."""
    shown = ", ".join(zones) if len(zones) <= 3 else f"{zones[0]} … {zones[-1]}"
    return (
        f"never inside calling hours in all of its {len(zones)} time zones ({shown});"
        " give it a time zone in the leads file"
    )


def utc_now() -> datetime:
    return datetime.now(UTC)


def mask(phone: str) -> str:
    """Logs show the last 4 digits only; the report keeps the whole number."""
    return f"***{phone[-4:]}" if phone else ""


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="minutes").replace("+00:00", "Z")


@dataclass
class RunStats:
    """What this run did, for the summary."""

    outcomes: Counter[str] = field(default_factory=Counter)
    by_number: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    throttled: int = 0
    lookups: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    pool_exhausted: bool = False
    stopped_by: str | None = None

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def rate(self) -> float:
        return self.requests / self.elapsed if self.elapsed > 0 else 0.0


class Progress:
    """Told of each row that reached an outcome this run; the CLI draws a bar from it."""

    def start(self, total: int) -> None:
        """`total` rows are due in this run."""

    def advance(self, status: str) -> None:
        """One row reached `status`."""


@dataclass
class DispatchOptions:
    limit: int | None = None
    clock: Clock = utc_now
    progress: Progress = field(default_factory=Progress)


class Dispatcher:
    """Dials every due row of the journal once, within rate, hours and caps."""

    def __init__(
        self,
        campaign: Campaign,
        journal: Journal,
        client: SynthflowClient,
        options: DispatchOptions,
    ) -> None:
        self.campaign = campaign
        self.journal = journal
        self.client = client
        self.options = options
        self.limits = campaign.limits
        self.hours = CallingHours(campaign.hours)
        self.pool = NumberPool(campaign.numbers, journal.number_usage())
        self.pacer = Pacer(
            self.limits.rate_per_second,
            self.limits.min_rate_per_second,
            # A restart keeps the window of the run before it: no burst right after a crash.
            recent=journal.recent_sends(),
        )
        self.writer = JournalWriter(journal.path)
        self.stats = RunStats()
        self.stop = asyncio.Event()
        self.fatal: BaseException | None = None
        self._queue: asyncio.Queue[JournalRow] = asyncio.Queue(self.limits.concurrency * 4)
        # Rows queued, in flight or being settled: the feeder skips them, so none is queued twice.
        self._owned: set[int] = set()
        self._redials: Counter[int] = Counter()
        self._dialed: set[int] = set()  # rows taken this run, for --limit
        self._intent_at: dict[int, float] = {}  # when each row's last request was committed
        # Read again at every run: a number added to a list since the import is never dialed.
        self.suppressed = suppression_sources(campaign)
        self._feeding = True
        self._lanes: asyncio.Queue[int] = asyncio.Queue()
        for lane in range(self.limits.concurrency):
            self._lanes.put_nowait(lane)
        self._busy: set[asyncio.Task[Any]] = set()  # workers with a row in hand
        self._pacing: set[asyncio.Task[Any]] = set()  # ... of which waiting for a send slot
        self._idle = asyncio.Event()
        self._settlers: set[asyncio.Task[None]] = set()
        # A resume may find many rows to look up: a few at a time, on the look-up connections.
        self._lookups = asyncio.Semaphore(LOOKUP_CONCURRENCY)
        self._path = CALLS if campaign.mode == "call" else CHATS
        self._body = call_body if campaign.mode == "call" else chat_body

    # -- the run ----------------------------------------------------------------

    async def run(self) -> RunStats:
        """Settle what earlier runs left `unknown`, then dial every due row."""
        # Four workers per lane: while some wait on the journal, others send.
        workers = [asyncio.create_task(self._worker()) for _ in range(4 * self.limits.concurrency)]
        feeder = asyncio.create_task(self._feed())
        try:
            done_waiter = asyncio.create_task(self._idle.wait())
            stop_waiter = asyncio.create_task(self.stop.wait())
            await asyncio.wait({done_waiter, stop_waiter}, return_when=asyncio.FIRST_COMPLETED)
            done_waiter.cancel()
            stop_waiter.cancel()
            self.stop.set()
            feeder.cancel()
            # Idle workers go at once, and so do those still waiting for a send slot (their
            # rows go back as they were); in-flight requests may finish (bounded), so their
            # answers are saved.
            for task in workers:
                if task not in self._busy or task in self._pacing:
                    task.cancel()
            _, late = await asyncio.wait(workers, timeout=self.limits.drain_seconds)
            for task in late:
                task.cancel()
            for task in list(self._settlers):
                task.cancel()
            await asyncio.gather(*workers, feeder, *self._settlers, return_exceptions=True)
        finally:
            await self.writer.close()
            self.stats.finished = time.monotonic()
            self.stats.throttled = self.pacer.throttled
        if self.stats.pool_exhausted:
            self.journal.defer_dialable("every caller id has reached its daily cap")
        if self.fatal is not None:
            raise self.fatal
        return self.stats

    def _fail(self, exc: BaseException) -> None:
        """Stop the run on an error it cannot get past; `run` raises it once all is saved."""
        if self.fatal is None:
            self.fatal = exc
        self.stop.set()

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

    async def _feed(self) -> None:
        try:
            await self._settle_earlier_runs()
            deferred: list[j.Write] = []
            for row in self.journal.rows_with_status(j.DIALABLE):
                if self.stop.is_set() or self.stats.pool_exhausted:
                    break
                if row.id in self._owned:
                    continue
                now = self.options.clock()
                if not self.hours.is_open(row.timezones, now):
                    status, reason = self._closed(row, now)
                    deferred += j.outcome(row.id, status, error=reason)
                    self._count(status, row, log_it=False)
                    if len(deferred) >= 2000:
                        await self.writer.commit(deferred)
                        deferred = []
                    continue
                if not self._within_limit(row):
                    break
                self._enter(row)
                await self._queue.put(row)
            if deferred:
                await self.writer.commit(deferred)
        except Exception as exc:  # an internal error must stop the run, not end it quietly
            self._fail(exc)
        finally:
            self._feeding = False
            if not self._owned:
                self._idle.set()

    async def _worker(self) -> None:
        """Dial rows from the queue, one at a time."""
        me = asyncio.current_task()
        assert me is not None
        while not self.stop.is_set():
            row = await self._queue.get()
            self._busy.add(me)
            requeued = False
            try:
                if self.stop.is_set():
                    continue  # never started: the row stays as the journal has it
                requeued = await self.dial(row)
            except Exception as exc:  # a refused key, or an internal error: stop the run
                self._fail(exc)
            finally:
                self._busy.discard(me)
                if not requeued:
                    self._leave(row)

    # -- one row ----------------------------------------------------------------

    async def dial(self, row: JournalRow) -> bool:
        """Dial one row to an outcome: sent, failed, deferred, pending (stopped) or unknown.

        Returns True when the row was handed to a look-up, which now owns it.
        """
        answer = await self._attempt(row)
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
            answer = await retrying(self._attempt, row)
        if answer is None:
            return False  # deferred, capped or stopped: already recorded
        if answer.kind == "accepted":
            await self.writer.commit(j.outcome(row.id, "sent", call_id=answer.id, error=answer.error))
            self._count("sent", row, answer)
        elif answer.kind == "refused":
            await self.writer.commit(j.outcome(row.id, "failed", error=answer.error))
            self._count("failed", row, answer)
        elif answer.kind == "retry":
            error = f"gave up after {self.limits.max_attempts} attempts: {answer.error}"
            await self.writer.commit(j.outcome(row.id, "failed", error=error))
            self._count("failed", row, answer)
        elif answer.kind == "unknown":
            await self.writer.commit(j.outcome(row.id, "unknown", error=answer.error))
            if self.campaign.mode == "call":
                self._redials[row.id] += 1
                self._settle_later(row, self._intent_at.pop(row.id, time.time()))
                return True
            self._count("unknown", row, answer)
        return False

    async def _attempt(self, row: JournalRow) -> Answer | None:
        if self.stop.is_set():
            return None
        if row.phone in self.suppressed:
            # Added to a do-not-call list since the import (a re-dial after a look-up, say).
            error = f"on the do-not-call list {self.suppressed[row.phone]}"
            await self.writer.commit(j.outcome(row.id, "suppressed", error=error))
            self._count("suppressed", row)
            return None
        now = self.options.clock()
        if not self.hours.is_open(row.timezones, now):
            status, reason = self._closed(row, now)
            await self.writer.commit(j.outcome(row.id, status, error=reason))
            self._count(status, row)
            return None
        try:
            number = self.pool.choose(row.phone, row.timezones, now) or ""
        except PoolExhausted as exc:
            # Only a pool capped everywhere stops the feed; one country's numbers capped defer its leads.
            self.stats.pool_exhausted = exc.everywhere
            reason = "every caller id has reached its daily cap" if exc.everywhere else str(exc)
            await self.writer.commit(j.outcome(row.id, "deferred", error=reason))
            self._count("deferred", row)
            return None
        day = self.pool.day_of(number, now) if number else None
        body = self._body(self.campaign, row, number)
        me = asyncio.current_task()
        assert me is not None
        throttles = 0
        intent_committed = False
        sending = False
        closed = False
        answer: Answer | None = None
        try:
            while True:
                # Waiting for a slot is not being in flight: on a stop (a signal, a refused
                # key) `run` cancels this wait rather than drain it, and a row whose slot
                # comes after the stop is not sent either.
                self._pacing.add(me)
                try:
                    ticket = await self.pacer.wait()
                finally:
                    self._pacing.discard(me)
                if self.stop.is_set():
                    ticket.left()  # counted as sent: the window stays conservative
                    break
                # The slot may have come late (a slow rate, a Retry-After): the hours are
                # checked again right before the request, not only before the wait.
                if not self.hours.is_open(row.timezones, self.options.clock()):
                    ticket.left()
                    closed = True
                    break
                # The intent is committed after the slot, right before the request: a crash
                # leaves `unknown` only rows that may really have left. The window counts
                # real send times, so the commit's few milliseconds cannot bunch requests.
                if not intent_committed:
                    self._intent_at[row.id] = time.time()
                    # Set first: cancelled mid-commit, the writes still land, and the
                    # restore queued after them puts the row back.
                    intent_committed = True
                    await self.writer.commit(j.intent(row.id, number, day, at=self._intent_at[row.id]))
                # A lane is a connection: holding one is what "in flight" means, so at most
                # `concurrency` requests are out while other workers wait on the journal.
                lane = await self._lanes.get()
                try:
                    if self.stop.is_set():
                        ticket.left()
                        break
                    sending = True
                    self.stats.requests += 1
                    try:
                        answer = await self.client.post(self._path, body, on_sent=ticket.left, lane=lane)
                    finally:
                        ticket.left()
                    sending = False
                finally:
                    self._lanes.put_nowait(lane)
                if answer.kind != "throttled":
                    self.pacer.accepted(ticket)
                    break
                self.pacer.throttle(ticket, answer.retry_after)
                throttles += 1
                log.debug("lead.throttled", row=row.position, retry_after=answer.retry_after)
                if self.stop.is_set() or throttles >= 100:
                    break  # a 429 means not placed: the row goes back untouched
        except asyncio.CancelledError:
            if not sending:
                self._restore(row, number, day, now, intent_committed)
            raise
        if answer is None or answer.kind == "throttled":
            # Stopped, hours closed, or only ever answered 429: nothing was placed.
            self._restore(row, number, day, now, intent_committed)
            later = self.options.clock()
            if closed:
                status, reason = self._closed(row, later)
            elif throttles >= 100:
                status, reason = row.status, f"answered 429 {throttles} times in a row; not placed"
            else:
                return None  # stopped: the row stays exactly as it was
            await self.writer.commit(j.outcome(row.id, status, error=reason))
            self._count(status, row)
            return None
        if number:
            self.stats.by_number[number] += 1
        if answer.kind == "auth":
            self._restore(row, number, day, now)
            raise AuthError(f"the API refused the key ({answer.error}); stopped, every row left as it was")
        if answer.kind == "retry":
            await self.writer.commit(j.outcome(row.id, "pending", error=answer.error))
            log.info(
                "lead.retry",
                row=row.position,
                attempt=self.journal.row(row.id).attempts,
                phone=mask(row.phone),
                error=answer.error,
            )
        return answer

    def _restore(
        self, row: JournalRow, number: str, day: str | None, now: datetime, committed: bool = True
    ) -> None:
        """No call was placed: the row, and its caller id's daily count, go back as they were."""
        if committed:
            self.writer.submit(j.restore(row, number, day))
        if number:
            self.pool.release(number, now)

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
            await asyncio.wait_for(self.stop.wait(), timeout=seconds)

    # -- settling requests that got no answer -------------------------------------

    def _settle_later(self, row: JournalRow, intent_at: float) -> None:
        self._enter(row)
        task = asyncio.create_task(self._settle(row, intent_at))
        self._settlers.add(task)
        task.add_done_callback(self._settlers.discard)

    async def _settle(self, row: JournalRow, intent_at: float) -> None:
        requeued = False
        try:
            wait = intent_at + self.limits.settle_after_seconds - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
            assert self.campaign.call is not None
            self.stats.lookups += 1
            try:
                async with self._lookups:
                    call_id = await self.client.find_call(self.campaign.call.model_id, row.phone, intent_at)
            except LookupRefused as exc:
                # As for a POST: the whole run stops, and the row stays as it was.
                if self.fatal is None:
                    self.fatal = AuthError(
                        f"the API refused the key ({exc}); stopped, every row left as it was"
                    )
                self.stop.set()
                return
            except LookupError_ as exc:
                await self.writer.commit(j.outcome(row.id, "unknown", error=f"unsettled: {exc}"))
                self._count("unknown", row)
                return
            if call_id:
                await self.writer.commit(j.outcome(row.id, "sent", call_id=call_id, error=""))
                self._count("sent", row)
                log.info("lead.settled", row=row.position, found=True)
                return
            log.info("lead.settled", row=row.position, found=False)
            if self._redials[row.id] >= self.limits.max_attempts:
                error = f"no answer to {self._redials[row.id]} attempts, and no call was placed"
                await self.writer.commit(j.outcome(row.id, "failed", error=error))
                self._count("failed", row)
                return
            # Not placed: dial it again, still owned, so the feeder cannot queue it a second time.
            await self.writer.commit(j.outcome(row.id, "pending", error="no answer, and no call was placed"))
            if not self._within_limit(row):
                self._count("pending", row)
                return  # --limit reached: a later run dials it
            await self._queue.put(self.journal.row(row.id))
            requeued = True
        except Exception as exc:  # an internal error must stop the run, not end it quietly
            self._fail(exc)
        finally:
            if not requeued:
                self._leave(row)

    async def _settle_earlier_runs(self) -> None:
        """Rows an earlier run left `unknown` (it crashed, or got no answer): look them up."""
        if self.campaign.mode != "call":
            return
        for row in list(self.journal.rows_with_status(("unknown",))):
            if self.stop.is_set():
                return
            self._settle_later(row, row.intent_at or 0.0)

    # -- bookkeeping -------------------------------------------------------------

    def _closed(self, row: JournalRow, now: datetime) -> tuple[str, str]:
        """Outside its hours: `deferred` until they open, or `invalid` if they never can."""
        due = self.hours.next_open(row.timezones, now)
        if due is None:
            return "invalid", never_open_reason(row.timezones)
        return "deferred", f"outside calling hours in {', '.join(row.timezones)}; due {iso(due)}"

    def _count(self, status: str, row: JournalRow, answer: Answer | None = None, log_it: bool = True) -> None:
        self.stats.outcomes[status] += 1
        self.options.progress.advance(status)
        level = logging.DEBUG if status == "sent" else logging.INFO
        if not log_it or not log.is_enabled_for(level):
            return  # sent rows are the hot path: no journal read unless someone listens
        # `row` may predate this run's attempts; the journal has the count (the report's
        # dialer_attempts).
        attempt = self.journal.row(row.id).attempts
        fields: dict[str, Any] = {"row": row.position, "attempt": attempt, "phone": mask(row.phone)}
        if answer is not None and answer.id:
            fields["id"] = answer.id
        if answer is not None and answer.error:
            fields["error"] = answer.error
        if status == "sent":
            log.debug("lead.sent", **fields)
        else:
            log.info(f"lead.{status}", **fields)
