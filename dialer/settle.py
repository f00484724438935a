"""Rows whose answer was lost: wait out the grace period, look the call up, then transition.

Found -> `sent` with its call_id; not found -> dialed again (until the row's unanswered
requests reach max_attempts, counted in the journal across runs); the look-up failed ->
still `unknown`, for a later run; the key refused -> the run stops, the row untouched.
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
from dialer.transitions import Policy, after_lookup, lookup_failed

log = structlog.get_logger("dialer")

# A resume may find many rows to look up: a few at a time, on the look-up connections.
LOOKUP_CONCURRENCY = 4

# Given a row a look-up found unplaced (and already `pending`): True if it is queued again.
Redial = Callable[[JournalRow], Awaitable[bool]]


class Settler:
    """Looks up rows left `unknown`, a few at a time."""

    def __init__(self, run: Run, campaign: Campaign, client: SynthflowClient, redial: Redial) -> None:
        assert campaign.call is not None, "only calls can be looked up"
        self.run = run
        self.model_id = campaign.call.model_id
        self.settle_after = campaign.limits.settle_after_seconds
        self.policy = Policy(campaign.mode, campaign.limits.max_attempts)
        self.client = client
        self.redial = redial
        self._lookups = asyncio.Semaphore(LOOKUP_CONCURRENCY)

    async def settle(self, row: JournalRow, intent_at: float) -> bool:
        """Decide the row; True when it went back to the queue (the queue now owns it)."""
        wait = intent_at + self.settle_after - time.time()
        if wait > 0:
            await asyncio.sleep(wait)
        self.run.stats.lookups += 1
        try:
            async with self._lookups:
                call_id = await self.client.find_call(self.model_id, row.phone, intent_at)
        except LookupRefused as exc:
            self.run.fail(key_refused(str(exc)))  # as for a POST; the row stays as it was
            return False
        except LookupError_ as exc:
            await self.run.record(row, lookup_failed(str(exc)))
            return False
        log.info("lead.settled", row=row.position, found=bool(call_id))
        # The journal has the row's unanswered requests over every run, this one's included.
        next_state = after_lookup(self.run.journal.row(row.id), call_id, self.policy)
        if not next_state.redial:
            await self.run.record(row, next_state)
            return False
        await self.run.record(row, next_state, counted=False)
        return await self.redial(row)
