"""Rows whose answer was lost: look the call up at once, then transition.

Found (the calls the journal holds for the lead's earlier requests are passed over)
-> `sent` with its call_id; not found -> looked up again once `settle_after_seconds`
have passed since the request, and still not found -> dialed again (until the row's unanswered
requests reach max_attempts, counted in the journal across runs); the look-up failed ->
still `unknown`, for a later run (PostgreSQL: given back at once, for another run to look
up after a backoff; held, it kept other runs waiting for it until this run ended); the
key refused -> the run stops, the row untouched.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import structlog

from dialer.bookkeeping import Run, key_refused
from dialer.client import LookupError_, LookupRefused, SynthflowClient
from dialer.config import Campaign
from dialer.model import JournalRow
from dialer.store.claims import Claims
from dialer.transitions import Policy, after_lookup, lookup_backoff, lookup_failed

log = structlog.get_logger("dialer")

# A resume may find many rows to look up: a few at a time, on the look-up connections.
LOOKUP_CONCURRENCY = 4

# Given a row a look-up found unplaced (and already `pending`): True if it is queued again.
Redial = Callable[[JournalRow], Awaitable[bool]]


class Settler:
    """Looks up rows left `unknown`, a few at a time."""

    def __init__(
        self,
        run: Run,
        campaign: Campaign,
        client: SynthflowClient,
        redial: Redial,
        claims: Claims | None = None,
    ) -> None:
        """`claims`: this run's on a shared campaign (None: this run alone)."""
        assert campaign.call is not None, "only calls can be looked up"
        self.run = run
        self.model_id = campaign.call.model_id
        self.settle_after = campaign.limits.settle_after_seconds
        self.backoff = (campaign.limits.backoff_base_seconds, campaign.limits.backoff_max_seconds)
        self.policy = Policy(campaign.mode, campaign.limits.max_attempts)
        self.client = client
        self.redial = redial
        self.claims = claims
        self._lookups = asyncio.Semaphore(LOOKUP_CONCURRENCY)
        self._failed_in_a_row = 0  # look-ups that failed since the last that answered

    async def settle(self, row: JournalRow, intent_at: float) -> bool:
        """Decide the row; True when it went back to the queue (the queue now owns it).

        Looked up at once: a call already listed is `sent` at once. Only a "not found"
        waits for the grace period, then the row is looked up again; only a "not found"
        after the grace lets it be dialed again.
        """
        grace_ends = intent_at + self.settle_after
        while True:
            grace_over = time.time() >= grace_ends
            made, call_id = await self._look_up(row, intent_at)
            if not made:
                return False  # recorded `unknown`, or the run stops
            # The journal has the row's unanswered requests over every run, this one's included.
            next_state = after_lookup(
                self.run.journal.row(row.id), call_id, self.policy, grace_over=grace_over
            )
            if not next_state.settle:
                break
            await asyncio.sleep(max(0.0, grace_ends - time.time()))
        log.info("lead.settled", row=row.position, found=bool(call_id))
        if not next_state.redial:
            await self.run.record(row, next_state)
            return False
        await self.run.record(row, next_state, counted=False)
        return await self.redial(row)

    async def _look_up(self, row: JournalRow, intent_at: float) -> tuple[bool, str | None]:
        """(made, the call_id found or None); not made: the row was recorded `unknown`, or
        the run stops on a refused key."""
        self.run.stats.lookups += 1
        # The lead's calls placed by earlier requests (a redial's look-up window holds the call
        # before it) are not this request's: taken for it, a redial that never left would
        # count as placed.
        known = self.run.journal.earlier_call_ids(row.id)
        try:
            async with self._lookups:
                found = await self.client.find_call(self.model_id, row.phone, intent_at, known)
        except LookupRefused as exc:
            self.run.fail(key_refused(str(exc)))  # as for a POST; the row stays as it was
        except LookupError_ as exc:
            await self.run.record(row, lookup_failed(str(exc)))
            await self._give_back(row)
        else:
            self._failed_in_a_row = 0
            return True, found
        return False, None

    async def _give_back(self, row: JournalRow) -> None:
        """Several runs on the campaign: the row the look-up could not settle goes back, so
        another run looks it up after a backoff; held here to the end, it kept the others
        waiting for it (and this run, waiting for one of theirs, waited on them)."""
        self._failed_in_a_row += 1
        if self.claims is None:
            return
        after = lookup_backoff(self._failed_in_a_row, *self.backoff)
        await self.run.writer.commit([self.claims.give_back(row.id, after)])
