"""Live-call slots shared by every run of a campaign and every campaign of an account.

`[limits] max_live_calls` of a PostgreSQL campaign counts the live calls of all its runs
together, and `[account] max_live_calls` those of every campaign naming the account
(the interface's "Several campaigns and several hosts"). Each limit is a row of
`live_limits` (`campaign:<schema>`, `account:<name>`); each slot a row of `live_slots`,
naming the run that holds it, the campaign's journal and the lead, and once the POST
was accepted, its call. The limit rows are the one serialisation point: a slot is
taken, found or judged only in a transaction that locks them (in key order: no
deadlock), so two runs can never both take the last slot. Two backends keep these
tables: pglive.py (in the PostgreSQL database, on its clock) and filelive.py (SQLite
campaigns on one host: the account's file of filerate.py, on the wall clock).

A slot's life, as the sender and the follower tell it:

    take       before the POST, waiting while any of the campaign's limits is full
    placed     the POST was accepted: the slot is the call's
    give_back  the POST was refused (for good, or a 429: not placed), or a look-up
               found no call
    hand_over  a look-up failed and the lead went back to the campaign (several runs):
               the slot goes with it, judged like a dead run's until a look-up decides
    found      a look-up found the call of an unanswered POST, or a run picked up calls an
               earlier one left live: the slot of that call (this run's own, a dead run's
               inherited, or a new one: the call is live whether there is room or not)
    ended      the follower saw the call's final status (any run's: a slot of a call
               whose end is in the journal is nobody's)

A run renews the lease of its slots (`lease` seconds, `[limits] claim_lease_seconds`)
while it lives, and hands them over when it ends. A slot whose lease ran out (its run
died, or ended with calls still live) is decided by the journal of its campaign, when a
run finds a limit full (`still_held`):

  - a slot whose call the journal shows live (`calls.final = 0`), or whose lead is
    `unknown` (its POST may have placed a call nobody has looked up yet), stays held
    until some run settles that call: a follower sees it end, a look-up decides the
    lead. An unbound slot whose lead's latest call is live (the run died between the
    journal's commit and the bind) is bound to that call;
  - every other slot (its intent never committed, or was undone; its POST never left or
    was refused; its call ended) is freed;
  - whatever the journal says, a slot older than `[outcomes] give_up_after` (plus the
    lease) is freed: the follower gives such a call up too.

The run that judges a held slot of its own campaign's call takes the call over
(`watch_orphans`): it follows the call and inherits its slot, so a dead run's live calls
end in the journal, and free their slots, even while the survivors wait for a slot. A
held slot of another campaign's call waits for a run (or a `status`) of that campaign.

A 429 saying the account's concurrency limit was hit lowers each limit's ceiling to the
slots held then (never under one); it rises again by one every LIVE_PROBE_SECONDS
(pacing.LiveCeiling's rule, shared). Inside a run, pacing.LiveCeiling still counts the
run's own calls against `[limits] max_live_calls`: the shared slots come on top.

All writes but `take` are queued in order on one task chain: the sender and the follower
call them from code that cannot wait; `take` waits for the queue first, so a slot given
back is free for the next take. A write that fails is logged; its slot is judged by the
journal once this run's lease runs out (the run's end at the latest).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import uuid
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from dialer.model import Status
from dialer.pacing import LIVE_PROBE_SECONDS

log = structlog.get_logger("dialer")

# While a limit is full, how often the shared count is read again (a slot freed by this
# run wakes the waiter at once; one freed by another run is seen within this).
POLL_SECONDS = 0.1
# Slots whose lease ran out are judged at most this often per run (they are few: a crash).
JUDGE_EVERY = 0.5


@dataclass(frozen=True)
class LiveLimit:
    key: str  # 'campaign:<schema>' or 'account:<name>'
    max_live: int


@dataclass(frozen=True)
class NoRoom:
    """A full limit that cannot have room while this run waits: `slots` of its `max_live`
    are held for calls that may be live and that nothing under way can settle."""

    limit: str
    max_live: int
    slots: int


@dataclass(frozen=True)
class LeadState:
    """What a campaign's journal says of a lead, for judging a slot left by a dead run."""

    status: str
    latest_call: str  # leads.call_id ('' before a call)
    latest_final: int | None  # calls.final of that call (None: no such row)


def still_held(call_id: str | None, lead: LeadState | None, bound_final: int | None) -> bool:
    """May the call of a slot whose run stopped renewing it still be live?

    `call_id`: the call bound to the slot (None: the POST was not seen accepted);
    `bound_final`: `calls.final` of that call in the journal (None: not there).
    """
    if call_id and bound_final is not None:
        return bound_final == 0
    if lead is None:
        return False  # the lead (or its whole journal) is gone: nothing left to settle
    return lead.status == Status.UNKNOWN.value or lead.latest_final == 0


def probed(ceiling: int, max_live: int, probe_at: float | None, now: float) -> tuple[int, float | None]:
    """The ceiling after probing back up by one call per LIVE_PROBE_SECONDS since `probe_at`."""
    if probe_at is None or now < probe_at:
        return ceiling, probe_at
    steps = 1 + int((now - probe_at) / LIVE_PROBE_SECONDS)
    ceiling += steps
    if ceiling >= max_live:
        return max_live, None
    return ceiling, probe_at + steps * LIVE_PROBE_SECONDS


class Backend(Protocol):
    """Where the tables are: the statements below are in qmark style, tables named with
    `prefix`. `transaction()` is one transaction (in SQLite, holding the file's write lock);
    the limit rows are locked in it by reading them `for_update`. `now()`: its clock."""

    prefix: str
    for_update: str  # ' FOR UPDATE' where row locks exist
    least: str  # the two-argument minimum: least() in PostgreSQL, min() in SQLite

    def transaction(self) -> contextlib.AbstractAsyncContextManager[None]: ...

    async def now(self) -> float: ...

    async def rows(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    async def journal_states(
        self, journal: str, leads: list[int], calls: list[str]
    ) -> tuple[dict[int, LeadState], dict[str, int]]:
        """The leads' states and the calls' `final`, read from campaign journal `journal`."""

    async def close(self) -> None: ...


def _marks(values: Sequence[Any]) -> str:
    return ", ".join("?" for _ in values)


class SharedLiveSlots:
    """This run's slots in the shared tables (see the module's docstring for the rules)."""

    def __init__(
        self,
        backend: Backend,
        *,
        limits: list[LiveLimit],
        journal: str,
        account_key: str | None,
        campaign_key: str,
        lease: float,
        give_up_after: float,
    ) -> None:
        self.backend = backend
        self.limits = sorted(limits, key=lambda limit: limit.key)
        self.keys = [limit.key for limit in self.limits]
        self.journal = journal  # the campaign's schema (PostgreSQL) or journal file (SQLite)
        self.campaign_key = campaign_key
        self.account_key = account_key
        self.lease = lease
        self.give_up_after = give_up_after
        self.holder = uuid.uuid4().hex
        self.waits = 0  # takes that found a limit full (for the bench)
        self._ready = False
        self._chain: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()  # writes and looks still under way
        self._taking = asyncio.Lock()
        self._freed = asyncio.Event()
        self._renewer: asyncio.Task[None] | None = None
        self._judged = -math.inf
        self._on_orphans: Callable[[list[str]], None] | None = None
        self._settles: Callable[[int], bool] | None = None
        self._on_no_room: Callable[[NoRoom], None] | None = None
        # What the last judging of a full limit found: why it cannot have room, or None.
        self.no_room: NoRoom | None = None

    def watch_unsettled(self, settles: Callable[[int], bool], no_room: Callable[[NoRoom], None]) -> None:
        """`settles(lead_id)`: may this run still decide a lead of its campaign whose slot
        is unbound (its POST in flight, its look-up under way or to come)? `no_room(why)`:
        called by a `take` (in the waiting task) that found a limit full for good; the run
        cancels that task (its row goes back as it was) and takes no more rows."""
        self._settles = settles
        self._on_no_room = no_room

    def watch_orphans(self, take_over: Callable[[list[str]], None]) -> None:
        """`take_over(call_ids)`: live calls of this campaign whose run stopped, seen while
        judging; the run follows them (and `found` their slots), or nobody would end them."""
        self._on_orphans = take_over

    def _t(self, table: str) -> str:
        return f"{self.backend.prefix}{table}"

    async def _prepare(self) -> None:
        """The limit rows, following the configuration (a raised limit applies at once
        unless a 429 lowered it; a lowered one at once)."""
        async with self.backend.transaction():
            for limit in self.limits:
                await self.backend.rows(
                    f"INSERT INTO {self._t('live_limits')} (key, max_live, ceiling) VALUES (?, ?, ?)"
                    " ON CONFLICT (key) DO UPDATE SET max_live = excluded.max_live, ceiling ="
                    f" CASE WHEN {self._t('live_limits')}.probe_at IS NULL THEN excluded.max_live"
                    f" ELSE {self.backend.least}({self._t('live_limits')}.ceiling, excluded.max_live) END",
                    (limit.key, limit.max_live, limit.max_live),
                )
        self._ready = True

    # -- taking: the one call that waits ------------------------------------------------

    async def take(self, lead_id: int) -> None:
        """Wait until every limit of the campaign has room, then hold a slot for the lead."""
        await self.settled()
        async with self._taking:  # one waiter of this run at a time: first come, first served
            if self._renewer is None:
                self._renewer = asyncio.get_running_loop().create_task(self._renew_forever())
            while True:
                # Each look in a task of its own, shielded: a stop cancels the wait, never a
                # transaction half-way (a slot taken as the stop came is handed back at close).
                looking = asyncio.get_running_loop().create_task(self.try_take(lead_id))
                self._keep(looking)
                if await asyncio.shield(looking):
                    return
                if self.no_room is not None and self._on_no_room is not None:
                    self._on_no_room(self.no_room)
                self.waits += 1
                self._freed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._freed.wait(), timeout=POLL_SECONDS)

    async def try_take(self, lead_id: int) -> bool:
        """Hold a slot for the lead if every limit has room now (lapsed slots judged first
        when one is full); False: none taken."""
        if not self._ready:
            await self._prepare()
        async with self.backend.transaction():
            now = await self.backend.now()
            if await self._full(now):
                if now - self._judged < JUDGE_EVERY:
                    return False  # `no_room` as the last judging found it
                self._judged = now
                await self._judge(now)
                full = await self._full(now)
                if full:
                    self.no_room = await self._for_good(full, now)
                    return False
            self.no_room = None
            await self._insert(lead_id, None, now)
            return True

    async def _full(self, now: float) -> list[tuple[str, int]]:
        """(key, max_live) of each limit at its ceiling (probed up first); read under the
        limits' lock. Empty: there is room."""
        full = []
        for key, ceiling, max_live, _probe_at in await self._ceilings(now):
            if await self._held(key) >= ceiling:
                full.append((key, max_live))
        return full

    async def _for_good(self, full: list[tuple[str, int]], now: float) -> NoRoom | None:
        """The first full limit whose slots nothing under way can free fill it even at its
        highest ceiling (a 429's lowered one probes back up), or None: worth waiting."""
        if self._settles is None:
            return None
        slots = await self.backend.rows(
            f"SELECT campaign_key, account_key, holder, journal, lead_id, call_id, lease_until"
            f" FROM {self._t('live_slots')} WHERE campaign_key IN ({_marks(self.keys)})"
            f" OR account_key IN ({_marks(self.keys)})",
            (*self.keys, *self.keys),
        )
        for key, max_live in full:
            stuck = sum(1 for slot in slots if key in (slot[0], slot[1]) and self._unsettled(slot[2:], now))
            if stuck >= max_live:
                return NoRoom(key, max_live, stuck)
        return None

    def _unsettled(self, slot: Sequence[Any], now: float) -> bool:
        """Is the slot (judged still held) one nothing under way will free?"""
        holder, journal, lead_id, call_id, lease_until = slot
        if holder != self.holder and lease_until >= now:
            return False  # a live run's: it settles it, or hands it over when it ends
        if journal != self.journal:
            return True  # lapsed, another campaign's: no run of it holds it now
        if call_id:
            return False  # a call this run follows, or takes over now (`watch_orphans`)
        assert self._settles is not None
        return not self._settles(int(lead_id))

    async def _ceilings(self, now: float) -> list[tuple[str, int, int, float | None]]:
        rows = await self.backend.rows(
            f"SELECT key, ceiling, max_live, probe_at FROM {self._t('live_limits')}"
            f" WHERE key IN ({_marks(self.keys)}) ORDER BY key{self.backend.for_update}",
            self.keys,
        )
        found = []
        for key, ceiling, max_live, probe_at in rows:
            raised, next_probe = probed(int(ceiling), int(max_live), probe_at, now)
            if (raised, next_probe) != (ceiling, probe_at):
                await self.backend.rows(
                    f"UPDATE {self._t('live_limits')} SET ceiling = ?, probe_at = ? WHERE key = ?",
                    (raised, next_probe, key),
                )
            found.append((str(key), raised, int(max_live), next_probe))
        return found

    async def _held(self, key: str) -> int:
        rows = await self.backend.rows(
            f"SELECT count(*) FROM {self._t('live_slots')} WHERE campaign_key = ? OR account_key = ?",
            (key, key),
        )
        return int(rows[0][0])

    async def _insert(self, lead_id: int, call_id: str | None, now: float) -> None:
        await self.backend.rows(
            f"INSERT INTO {self._t('live_slots')} (campaign_key, account_key, journal, lead_id,"
            " call_id, holder, taken_at, lease_until, give_up_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                self.campaign_key,
                self.account_key,
                self.journal,
                lead_id,
                call_id,
                self.holder,
                now,
                now + self.lease,
                now + self.give_up_after + self.lease,
            ),
        )

    # -- judging the slots of runs that stopped renewing them ------------------------------

    async def _judge(self, now: float) -> int:
        """Free the lapsed slots of these limits whose calls cannot be live; the slots freed."""
        lapsed = await self.backend.rows(
            f"SELECT id, journal, lead_id, call_id, give_up_at FROM {self._t('live_slots')}"
            f" WHERE (campaign_key IN ({_marks(self.keys)}) OR account_key IN ({_marks(self.keys)}))"
            " AND lease_until < ? ORDER BY id",
            (*self.keys, *self.keys, now),
        )
        by_journal: dict[str, list[tuple[int, int, str | None, float]]] = {}
        for slot_id, journal, lead_id, call_id, give_up_at in lapsed:
            by_journal.setdefault(str(journal), []).append((int(slot_id), int(lead_id), call_id, give_up_at))
        freed: list[int] = []
        orphans: list[str] = []
        for journal, slots in by_journal.items():
            leads, finals = await self.backend.journal_states(
                journal, [s[1] for s in slots], [s[2] for s in slots if s[2]]
            )
            for slot_id, lead_id, call_id, give_up_at in slots:
                lead = leads.get(lead_id)
                if now >= give_up_at or not still_held(call_id, lead, finals.get(call_id or "")):
                    freed.append(slot_id)
                    continue
                if not call_id and lead is not None and lead.latest_final == 0:
                    call_id = lead.latest_call
                    await self.backend.rows(
                        f"UPDATE {self._t('live_slots')} SET call_id = ? WHERE id = ?", (call_id, slot_id)
                    )
                if call_id and journal == self.journal:
                    orphans.append(call_id)
        if freed:
            await self.backend.rows(
                f"DELETE FROM {self._t('live_slots')} WHERE id IN ({_marks(freed)})", freed
            )
            log.info("live_slots.freed", slots=len(freed), reason="their run stopped; no call live")
        if orphans and self._on_orphans is not None:
            self._on_orphans(orphans)
        return len(freed)

    # -- the writes that do not wait, queued in order ----------------------------------------

    def placed(self, lead_id: int, call_id: str) -> None:
        """The lead's POST was accepted: its slot is the call's."""
        self._queue(
            self._one(
                f"UPDATE {self._t('live_slots')} SET call_id = ? WHERE id = (SELECT id FROM"
                f" {self._t('live_slots')} WHERE holder = ? AND journal = ? AND lead_id = ?"
                " AND call_id IS NULL ORDER BY id LIMIT 1)",
                (call_id, self.holder, self.journal, lead_id),
            )
        )

    def give_back(self, lead_id: int) -> None:
        """No call was placed for the lead: one of this run's unbound slots for it is free,
        and so are those lapsed ones of dead runs (the lead's state is known now)."""
        self._queue(self._give_back(lead_id))

    async def _give_back(self, lead_id: int) -> None:
        async with self.backend.transaction():
            now = await self.backend.now()
            await self.backend.rows(
                f"DELETE FROM {self._t('live_slots')} WHERE id = (SELECT id FROM {self._t('live_slots')}"
                " WHERE holder = ? AND journal = ? AND lead_id = ? AND call_id IS NULL ORDER BY id LIMIT 1)"
                " OR (journal = ? AND lead_id = ? AND call_id IS NULL AND lease_until < ?)",
                (self.holder, self.journal, lead_id, self.journal, lead_id, now),
            )

    def hand_over(self, lead_id: int) -> None:
        """The lead went back to the campaign unsettled (several runs, a failed look-up:
        claims.give_back): its unbound slot goes with it, lapsed and no run's, so it is judged
        as a dead run's (held while the lead is `unknown`) and follows whichever run's look-up
        decides the lead (`found` takes it over, `give_back` frees it). Held by this run, it
        stayed full while another run settled the lead, until this run ended."""
        self._queue(self._hand_over(lead_id))

    async def _hand_over(self, lead_id: int) -> None:
        async with self.backend.transaction():
            now = await self.backend.now()
            slots = self._t("live_slots")
            await self.backend.rows(
                f"UPDATE {slots} SET holder = '', lease_until = ? WHERE id = (SELECT id FROM {slots}"
                " WHERE holder = ? AND journal = ? AND lead_id = ? AND call_id IS NULL ORDER BY id LIMIT 1)",
                (now - 1.0, self.holder, self.journal, lead_id),
            )

    def found(self, lead_id: int, call_id: str) -> None:
        """A live call this run follows now (a look-up found it, or an earlier run left it)."""
        self._queue(self._found(lead_id, call_id))

    async def _found(self, lead_id: int, call_id: str) -> None:
        if not self._ready:
            await self._prepare()
        async with self.backend.transaction():
            now = await self.backend.now()
            await self._ceilings(now)  # the limit rows' lock: one run decides whose slot it is
            slots = self._t("live_slots")
            candidates = await self.backend.rows(
                f"SELECT id, holder, lease_until, call_id FROM {slots} WHERE call_id = ?"
                " OR (journal = ? AND lead_id = ? AND call_id IS NULL) ORDER BY id",
                (call_id, self.journal, lead_id),
            )
            bound = [c for c in candidates if c[3] == call_id]
            if any(c[1] != self.holder and c[2] >= now for c in bound):
                return  # a live run holds the call's slot
            mine = [c for c in candidates if c[1] == self.holder or c[2] < now]
            if not mine:
                await self._insert(lead_id, call_id, now)  # live already: room or not
                return
            keep, *extra = sorted(mine, key=lambda c: (c[3] != call_id, c[1] != self.holder))
            await self.backend.rows(
                f"UPDATE {slots} SET call_id = ?, holder = ?, lease_until = ? WHERE id = ?",
                (call_id, self.holder, now + self.lease, keep[0]),
            )
            # A dead run's second slot for the same call (bound, and unbound): one is enough.
            for slot in extra:
                if slot[3] == call_id:
                    await self.backend.rows(f"DELETE FROM {slots} WHERE id = ?", (slot[0],))

    def ended(self, lead_id: int, call_id: str) -> None:
        """The call's final status is in the journal: its slot is free, whoever held it."""
        self._queue(self._ended(lead_id, call_id))

    async def _ended(self, lead_id: int, call_id: str) -> None:
        async with self.backend.transaction():
            now = await self.backend.now()
            await self.backend.rows(
                f"DELETE FROM {self._t('live_slots')} WHERE call_id = ?"
                " OR (journal = ? AND lead_id = ? AND call_id IS NULL AND lease_until < ?)",
                (call_id, self.journal, lead_id, now),
            )

    async def refused(self) -> None:
        """A concurrency 429: each limit's ceiling down to the slots held now (after this
        request's slot was given back), for every run."""
        await self._queue(self._refused())

    async def _refused(self) -> None:
        if not self._ready:
            await self._prepare()
        async with self.backend.transaction():
            now = await self.backend.now()
            for key, ceiling, _max_live, _probe in await self._ceilings(now):
                lowered = max(1, min(ceiling, await self._held(key)))
                await self.backend.rows(
                    f"UPDATE {self._t('live_limits')} SET ceiling = ?, probe_at = ? WHERE key = ?",
                    (lowered, now + LIVE_PROBE_SECONDS, key),
                )

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            await self._queue(self._renew())

    async def _renew(self) -> None:
        async with self.backend.transaction():
            now = await self.backend.now()
            await self.backend.rows(
                f"UPDATE {self._t('live_slots')} SET lease_until = ? WHERE holder = ?",
                (now + self.lease, self.holder),
            )

    async def _one(self, statement: str, params: Sequence[Any]) -> None:
        async with self.backend.transaction():
            await self.backend.rows(statement, params)

    def _queue(self, op: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        previous = self._chain

        async def in_turn() -> None:
            if previous is not None:
                with contextlib.suppress(BaseException):
                    await previous
            try:
                await op
            except Exception as exc:  # the slot is judged by the journal once the lease lapses
                log.warning("live_slots.write_failed", error=str(exc))
            finally:
                self._freed.set()

        task = asyncio.get_running_loop().create_task(in_turn())
        self._chain = task
        self._keep(task)
        return task

    def _keep(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settled(self) -> None:
        """Wait for the writes queued so far."""
        if self._chain is not None:
            with contextlib.suppress(BaseException):
                await self._chain

    # -- the end of the run --------------------------------------------------------------

    async def close(self) -> None:
        """Hand this run's slots over: those of calls still live stay held, judged by the
        journal like a dead run's; the rest are freed now."""
        if self._renewer is not None:
            self._renewer.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks, return_exceptions=True)
            if self._ready:
                async with self.backend.transaction():
                    now = await self.backend.now()
                    await self.backend.rows(
                        f"UPDATE {self._t('live_slots')} SET lease_until = ? WHERE holder = ?",
                        (now - 1.0, self.holder),
                    )
                    await self._ceilings(now)
                    await self._judge(now)
        await self.backend.close()
