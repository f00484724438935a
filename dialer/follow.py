"""Live calls: batched polling, outcomes, time-outs, slots released.

After an accepted POST a row's call is live until a poll sees its final status.
Every `poll_seconds` one poll looks at all live calls at once:

    list     GET /v2/calls?model_id&from_date&to_date&limit&offset, newest first, over the
             window from the oldest live call's placement (a minute of slack for clock
             skew) to now; further pages only while they cost less than asking for the
             calls still unseen one by one
    by id    GET /v2/calls/{id} for a live call the pages did not show
    decide   `transitions.after_call`: a final status ends the call (its outcome and the
             row's next state committed together), an unknown or live one keeps it live
             until `[outcomes] give_up_after`, then it is given up with its last status
    opt-out  a call ending with `[outcomes] opt_out_variable` yes: its number is appended to
             `opt_out_list` (before the commit: a crash writes it again, never loses it), and
             a redial it would have had is cancelled (the row `suppressed`, saying why)
    redial   `transitions.redial_after`: a status `[redial]` names, with calls left, makes
             the row `deferred` until its next call is due, in the same commit as the
             call's final status: a crash can never decide a redial twice
    release  each ended call frees its live-call slot; a call that ended `failed` counts
             for stop_when_failed

Live calls are read from the journal at the start (`calls.final = 0`), so a run after a
crash goes on following them, and they hold their slots. Nothing here POSTs.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from dialer import optout
from dialer.bookkeeping import Progress, Run, key_refused, utc_now
from dialer.client import LookupError_, LookupRefused, SynthflowClient
from dialer.config import Campaign
from dialer.model import FINAL_CHAT_STATUSES, CallOutcome, Status
from dialer.optout import opted_out
from dialer.pacing import LiveCeiling
from dialer.store import JournalStore, LiveCall, LiveSlots, Write, calls
from dialer.transitions import CallNext, RedialPolicy, after_call, redial_after

log = structlog.get_logger("dialer")

# Calls per page of the listing (the API's default is 20; it may answer fewer).
PAGE = 100
# Slack on the listing's window for clock skew between this machine and the API (ms).
SKEW_MS = 60_000
# The first pause once only live calls are left (seconds); each next one twice as long.
HURRY_FIRST = 0.05


@dataclass
class Tracked:
    """A live call as the follower holds it."""

    lead_id: int
    placed_at: float  # epoch seconds
    status: str = ""
    slot: bool = True  # holds a slot of this run's live-call ceiling


class Follower:
    """Follows the run's live calls to their end, a poll at a time."""

    def __init__(
        self,
        run: Run,
        campaign: Campaign,
        client: SynthflowClient,
        ceiling: LiveCeiling | None = None,
        clock: Callable[[], float] = time.time,
        redial_clock: Callable[[], float] | None = None,
        slots: LiveSlots | None = None,
    ) -> None:
        """`redial_clock`: epoch seconds on the dispatcher's clock (the one the hours and
        the caps read), from which a redial's due time is counted. `slots`: the live-call
        slots shared with other runs and campaigns (store/liveslots.py), if any."""
        assert campaign.call is not None, "only calls are followed"
        self.run = run
        self.model_id = campaign.call.model_id
        self.campaign_name = campaign.name
        self.settings = campaign.outcomes
        self.client = client
        self.ceiling = ceiling
        self.slots = slots
        self.clock = clock
        self.redial_clock = redial_clock or (lambda: utc_now().timestamp())
        redial = campaign.redial
        self.redial = RedialPolicy(dict(redial.waits), redial.max_calls)
        self.live: dict[str, Tracked] = {}
        self.drained = asyncio.Event()  # set while no call is live
        self.drained.set()
        self._wake = asyncio.Event()
        # Once every row is dialed only the live calls are left to wait for: polls come at
        # once, then spaced out doubling up to poll_seconds, so calls that ended meanwhile
        # are seen without a whole poll_seconds of waiting (a few GETs more at the end).
        self._hurry: float | None = None

    def load(self, live: list[LiveCall]) -> None:
        """Calls an earlier run left live (their slots are counted in the ceiling already)."""
        for call in live:
            self.live[call.call_id] = Tracked(call.lead_id, call.placed_at, call.status)
            if self.slots is not None:
                self.slots.found(call.lead_id, call.call_id)  # a dead run's slot, inherited
        if self.live:
            self.drained.clear()

    def adopt(self, live: list[LiveCall]) -> None:
        """Calls other runs of a shared (PostgreSQL) campaign placed, followed too once this
        run has dialed its rows: a run that died leaves its live calls to the survivors.
        They hold no slot here; a call followed by two runs gets the same final row twice."""
        for call in live:
            if call.call_id not in self.live:
                self.live[call.call_id] = Tracked(call.lead_id, call.placed_at, call.status, slot=False)
                self.drained.clear()

    def track(self, lead_id: int, call_id: str, placed_at: float, *, take_slot: bool = False) -> None:
        """A call just accepted (its slot already held), or found by a look-up (`take_slot`)."""
        if call_id in self.live:
            return
        if take_slot and self.ceiling is not None:
            self.ceiling.take()
        if take_slot and self.slots is not None:
            self.slots.found(lead_id, call_id)
        self.live[call_id] = Tracked(lead_id, placed_at)
        self.drained.clear()
        if self.ceiling is not None:
            self.run.stats.most_live = max(self.run.stats.most_live, self.ceiling.held)

    def hurry(self) -> None:
        """Every row is dialed: poll at once, then more and more slowly up to poll_seconds."""
        if self._hurry is None:
            self._hurry = HURRY_FIRST
            self._wake.set()

    async def follow(self) -> None:
        """Poll every `poll_seconds` while the run lasts (a stop ends it at once).

        Nobody awaits this task until the run ends, and the run waits for the calls to end:
        any other error stops the run with it, or the run would wait for ever, silent."""
        stop = self.run.stop
        while not stop.is_set():
            if self.live:
                try:
                    await self.poll()
                except LookupRefused as exc:
                    self.run.fail(key_refused(str(exc)))
                    return
                except LookupError_ as exc:
                    log.warning("calls.poll_failed", error=str(exc), live=len(self.live))
                except Exception as exc:  # the journal gone, an internal error
                    self.run.fail(exc)
                    return
            await self._pause()

    async def _pause(self) -> None:
        """Until the next poll is due, a stop, or `hurry()`."""
        interval = self.settings.poll_seconds
        if self._hurry is not None:
            interval = min(interval, self._hurry)
            self._hurry *= 2
        self._wake.clear()
        waits = {asyncio.ensure_future(self.run.stop.wait()), asyncio.ensure_future(self._wake.wait())}
        try:
            await asyncio.wait(waits, timeout=interval, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()

    # -- one poll -------------------------------------------------------------------

    async def poll(self) -> int:
        """Look at every live call once; commit what changed. The number of calls that ended."""
        now = self.clock()
        watched = dict(self.live)
        shown = await self._listed(watched, now)
        for call_id in [c for c in watched if c not in shown]:
            self.run.stats.polls += 1
            found = await self.client.get_call(call_id, self.model_id)
            if found is not None:
                shown[call_id] = found
        writes: list[Write] = []
        ended: list[tuple[str, Tracked, CallOutcome, CallNext]] = []
        for call_id, tracked in watched.items():
            seen = shown.get(call_id)
            decided = after_call(seen, now - tracked.placed_at, self.settings.give_up_after)
            last = seen if seen is not None else CallOutcome(call_id, tracked.status)
            if decided.ended:
                ended.append((call_id, tracked, last, decided))
                writes += calls.seen(last, final=True, timed_out=decided.timed_out, at=now)
                if decided.error or decided.status != Status.SENT:
                    writes += calls.ended(tracked.lead_id, call_id, decided.status, decided.error)
                elif not decided.timed_out:
                    writes += self._after_end(call_id, tracked, last)
            elif seen is not None and seen.status != tracked.status:
                tracked.status = seen.status
                writes += calls.seen(seen, final=False)
        if writes:
            await self.run.writer.commit(writes)
        for call_id, _tracked, last, decided in ended:
            self._ended(call_id, last, decided)
        return len(ended)

    def _after_end(self, call_id: str, tracked: Tracked, last: CallOutcome) -> list[Write]:
        """An opt-out, or the lead's next call if `[redial]` wants one: written with the call's end."""
        variable, listed = self.settings.opt_out_variable, self.settings.opt_out_list
        out = variable is not None and opted_out(last.collected, variable)
        if last.status not in self.redial.waits and not out:
            return []  # the common case: no journal read
        now = self.redial_clock()
        placed = self.run.journal.placed_count(tracked.lead_id)
        decided = redial_after(last.status, placed, now, self.redial)
        if out and variable is not None and listed is not None:
            phone = self.run.journal.row(tracked.lead_id).phone
            optout.append(listed, phone, self.campaign_name, call_id, now)
            self.run.stats.opt_outs += 1
            said = f"opted out on call {call_id} ({variable} = {last.collected[variable]}); on {listed.name}"
            if decided is not None:
                said += f"; its redial ({decided.error}) cancelled"
            return calls.opted_out(tracked.lead_id, call_id, said, cancel=decided is not None)
        if decided is None:
            return []
        self.run.stats.redials += 1
        return calls.redial(tracked.lead_id, call_id, decided.due, decided.error)

    async def _listed(self, watched: dict[str, Tracked], now: float) -> dict[str, CallOutcome]:
        """The watched calls the listing shows, page after page while paging is the cheaper."""
        shown: dict[str, CallOutcome] = {}
        oldest = min(t.placed_at for t in watched.values())
        window = (int(oldest * 1000) - SKEW_MS, int(now * 1000) + SKEW_MS)
        offset = 0
        while True:
            self.run.stats.polls += 1
            page = await self.client.list_calls(self.model_id, *window, PAGE, offset)
            shown.update((c.call_id, c) for c in page.calls if c.call_id in watched)
            offset += page.items
            unseen = len(watched) - len(shown)
            if not unseen or not page.items or (page.total is not None and offset >= page.total):
                return shown
            # Pages still to read against one GET per unseen call: take the cheaper.
            pages_left = math.ceil((page.total - offset) / page.items) if page.total is not None else unseen
            if pages_left >= unseen:
                return shown

    def _ended(self, call_id: str, last: CallOutcome, decided: CallNext) -> None:
        tracked = self.live.pop(call_id, None)
        if self.ceiling is not None and (tracked is None or tracked.slot):
            self.ceiling.release()
        if self.slots is not None and tracked is not None:
            self.slots.ended(tracked.lead_id, call_id)  # an adopted call's too: its end is known
        stats = self.run.stats
        if decided.timed_out:
            stats.calls_timed_out += 1
        else:
            stats.calls_ended[last.status] += 1
        # Every call's end is the hot path of a big campaign: debug, like lead.sent.
        emit = log.warning if decided.timed_out else log.debug
        emit(
            "call.given_up" if decided.timed_out else "call.ended",
            call_id=call_id,
            status=last.status,
            duration=last.duration,
        )
        self.run.call_result(f"call ended {last.status}" if decided.failed else None)
        if not self.live:
            self.drained.set()


async def poll_chats(run: Run, client: SynthflowClient, chats: list[LiveCall]) -> int:
    """Each chat not seen to end: its `chat_status` now (GET /v2/chat/{id}). Chats hold no
    slot and no run waits for them; the report shows the status last seen."""
    writes: list[Write] = []
    for chat in chats:
        run.stats.polls += 1
        status = await client.get_chat_status(chat.call_id)
        if status is None or status == chat.status:
            continue
        final = status in FINAL_CHAT_STATUSES
        writes += calls.seen(
            CallOutcome(chat.call_id, status), final=final, at=time.time() if final else None
        )
    if writes:
        await run.writer.commit(writes)
    return len(writes)


async def collect(campaign: Campaign, journal: JournalStore, client: SynthflowClient) -> int:
    """One poll of every call (or chat) still live in the journal, for `status` and `report`:
    the outcomes of calls that ended since. No POST, no slot, no waiting. The calls that ended."""
    run = Run(journal, journal.writer(), Progress())
    try:
        live = journal.live_calls()
        if not live:
            return 0
        if campaign.mode == "chat":
            return await poll_chats(run, client, live)
        follower = Follower(run, campaign, client)
        follower.load(live)
        try:
            return await follower.poll()
        except LookupRefused as exc:
            raise key_refused(str(exc)) from None
    finally:
        await run.writer.close()
