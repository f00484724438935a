"""What the stages of one run share: the stop switch with its one path for fatal errors,
the figures for the summary, the progress listener, and each row's outcome counted and
logged once."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from dialer.config import StopWhenFailed
from dialer.errors import ApiUnreachable, AuthError, FailingError
from dialer.model import JournalRow, Status
from dialer.store import JournalStore, Writer, calls, outcome
from dialer.transitions import Next

if TYPE_CHECKING:  # the client (httpx) is not needed to reason about its answers
    from dialer.client import Answer

log = structlog.get_logger("dialer")

Clock = Callable[[], datetime]


# A test hook, like the journal's fault point: tests/conftest.py shifts the clock the
# dialer sees to a fixed time of day, so the law's window (08:00-21:00 for every US number)
# does not make the suite pass or fail by the hour it runs at. Unset in real use.
CLOCK_SHIFT_ENV = "DIALER_TEST_CLOCK_SHIFT_SECONDS"


def utc_now() -> datetime:
    now = datetime.now(UTC)
    shift = os.environ.get(CLOCK_SHIFT_ENV)
    return now + timedelta(seconds=float(shift)) if shift else now


def mask(phone: str) -> str:
    """Logs show the last 4 digits only; the report keeps the whole number."""
    return f"***{phone[-4:]}" if phone else ""


def key_refused(error: str) -> AuthError:
    """The one stop for a refused key, whether a POST or a look-up heard it."""
    return AuthError(f"the API refused the key ({error}); stopped, every row left as it was")


# The API is down when this many requests in a row, whatever their rows, made no contact
# (a refused connection, a connect or read timeout), with no HTTP answer between them.
DOWN_AFTER = 5


def never_reached(answer: Answer) -> bool:
    """No connection was made: the request never reached the API (safe to send again)."""
    return answer.kind == "retry" and answer.no_contact


class Reach:
    """Whether the API answers at all, over every row's requests (see DOWN_AFTER)."""

    def __init__(self, down_after: int = DOWN_AFTER) -> None:
        self.down_after = down_after
        self.misses = 0  # requests in a row with no HTTP answer
        self.answered = 0  # requests with an HTTP answer, in all
        self.last_error = ""

    def note(self, answer: Answer) -> bool:
        """One request's answer; True when the API now counts as down."""
        if answer.status is not None:
            self.misses = 0
            self.answered += 1
            return False
        if not answer.no_contact:
            return False  # a closed connection: the API was reached, and said nothing
        self.misses += 1
        self.last_error = answer.error
        return self.misses >= self.down_after

    def unreachable(self) -> ApiUnreachable:
        return ApiUnreachable(
            f"the API was unreachable ({self.misses} requests in a row made no contact, the last:"
            f" {self.last_error}); stopped, rows left to dial for a later run"
        )


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
    # Following calls: GET requests made to poll them, calls seen to end, calls given up.
    polls: int = 0
    calls_ended: Counter[str] = field(default_factory=Counter)
    calls_timed_out: int = 0
    most_live: int = 0
    live_refusals: int = 0  # POSTs answered 429 for the account's concurrency limit
    opt_outs: int = 0  # calls that ended with the opt-out variable yes: numbers put on the list
    redials: int = 0  # calls that ended with a status [redial] names: the lead is called again

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    @property
    def rate(self) -> float:
        return self.requests / self.elapsed if self.elapsed > 0 else 0.0


class Progress:
    """Told of each row that reached an outcome this run, and ticked every `every` seconds
    while the run goes (waiting on look-ups or backoffs too); the CLI draws a bar from it."""

    every: float = 10.0

    def start(self, total: int) -> None:
        """`total` rows are due in this run."""

    def advance(self, status: str) -> None:
        """One row reached `status`."""

    def tick(self, stats: RunStats) -> None:
        """The run's figures, on time: `stats` is the one count the summary reads too."""


class FailureWatch:
    """`stop_when_failed`: the last N calls' results (refused for good, or ended `failed`)."""

    def __init__(self, rule: StopWhenFailed) -> None:
        self.rule = rule
        self.last: deque[str | None] = deque(maxlen=rule.of_last)  # the failure's reason, or None

    def add(self, reason: str | None) -> FailingError | None:
        """One more call's result (`reason` when it failed); the error to stop with, if due."""
        self.last.append(reason)
        failed = [r for r in self.last if r is not None]
        if len(self.last) < self.rule.of_last or len(failed) < self.rule.share * self.rule.of_last:
            return None
        reasons = "; ".join(f"{why} ({n})" for why, n in Counter(failed).most_common(3))
        return FailingError(
            f"stopped: {len(failed)} of the last {len(self.last)} calls failed ({reasons});"
            " rows not yet dialed are left as they were"
        )


class Run:
    """One run's shared state: stop switch, the error that stopped it, figures, progress."""

    def __init__(
        self,
        journal: JournalStore,
        writer: Writer,
        progress: Progress,
        stop_when_failed: StopWhenFailed | None = None,
    ) -> None:
        self.journal = journal
        self.writer = writer
        self.progress = progress
        self.stats = RunStats()
        self.stop = asyncio.Event()
        self.fatal: BaseException | None = None
        self.reach = Reach()
        self.failures = FailureWatch(stop_when_failed) if stop_when_failed else None

    def call_result(self, failure: str | None) -> None:
        """A call's result for stop_when_failed: `failure` says why it failed, None if it did not."""
        if self.failures is None:
            return
        stop = self.failures.add(failure)
        if stop is not None:
            self.fail(stop)

    def fail(self, exc: BaseException) -> None:
        """Stop the run on an error it cannot get past; the dispatcher raises it once all is saved."""
        if self.fatal is None:
            self.fatal = exc
        self.stop.set()

    async def record(
        self, row: JournalRow, next_state: Next, answer: Answer | None = None, *, counted: bool = True
    ) -> None:
        """Commit the row's next state; `counted`: it is this run's outcome for the row.

        A call (or chat) accepted, or found by a look-up, becomes a row of `calls` in the
        same commit: from then on it is live until follow.py sees it end. Counted first: the
        commit queues its writes before it first waits, and queued writes land even if the
        wait is cancelled, so the figures and the journal always agree.
        """
        if counted:
            self.count(next_state.status, row, answer)
        writes = outcome(
            row.id,
            next_state.status,
            call_id=next_state.call_id,
            error=next_state.error,
            unanswered=next_state.unanswered,
        )
        if next_state.status == Status.SENT and next_state.call_id:
            writes += calls.placed(row.id, time.time())
        if next_state.status == Status.FAILED and answer is not None:
            self.call_result(answer.error or "refused")
        await self.writer.commit(writes)

    def count(
        self, status: Status, row: JournalRow, answer: Answer | None = None, log_it: bool = True
    ) -> None:
        """One row reached `status` this run: counted, shown, logged."""
        self.stats.outcomes[status] += 1
        self.progress.advance(status)
        level = logging.DEBUG if status == Status.SENT else logging.INFO
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
        if status == Status.SENT:
            log.debug("lead.sent", **fields)
        else:
            log.info(f"lead.{status}", **fields)
