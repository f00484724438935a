"""Live-call slots of SQLite campaigns on one host: liveslots.py's rules in the account's file.

Campaigns with SQLite journals naming the same `[account]` with `max_live_calls` share
its live calls through the account's file (filerate.py's `<accounts dir>/<name>.sqlite`,
tables `live_limits` and `live_slots` of their own). Every change is one BEGIN
IMMEDIATE transaction on it: the file's write lock is the serialisation point, as the
limit rows' lock is in PostgreSQL. A slot names its campaign's journal file, read
(read-only) to decide a dead run's slot. One host, one clock: the wall clock (injectable).

A SQLite campaign has one run at a time (its lock), so its own `[limits] max_live_calls`
stays the run's (pacing.LiveCeiling); only the account's limit is kept here.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import Any

from dialer.config import Campaign
from dialer.store.db import transaction
from dialer.store.filerate import accounts_dir
from dialer.store.liveslots import LeadState, LiveLimit, SharedLiveSlots

TABLES = (
    "CREATE TABLE IF NOT EXISTS live_limits (key TEXT PRIMARY KEY, max_live INTEGER NOT NULL,"
    " ceiling INTEGER NOT NULL, probe_at REAL)",
    "CREATE TABLE IF NOT EXISTS live_slots (id INTEGER PRIMARY KEY, campaign_key TEXT NOT NULL,"
    " account_key TEXT, journal TEXT NOT NULL, lead_id INTEGER NOT NULL, call_id TEXT,"
    " holder TEXT NOT NULL, taken_at REAL NOT NULL, lease_until REAL NOT NULL, give_up_at REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS live_slots_account ON live_slots (account_key)",
    "CREATE INDEX IF NOT EXISTS live_slots_lead ON live_slots (journal, lead_id)",
    "CREATE INDEX IF NOT EXISTS live_slots_call ON live_slots (call_id)",
)


class FileBackend:
    prefix = ""
    for_update = ""  # BEGIN IMMEDIATE holds the whole file
    least = "min"

    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(path, isolation_level=None, timeout=30)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self._clock = clock
        with transaction(self.conn) as conn:
            for statement in TABLES:
                conn.execute(statement)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        # Synchronous: one short transaction on a local file, as filerate.py's grants.
        with transaction(self.conn):
            yield

    async def now(self) -> float:
        return self._clock()

    async def rows(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.conn.execute(statement, tuple(params)).fetchall()

    async def journal_states(
        self, journal: str, leads: list[int], calls: list[str]
    ) -> tuple[dict[int, LeadState], dict[str, int]]:
        if not Path(journal).is_file():
            return {}, {}  # the campaign's journal is gone: nothing of it can be live
        try:
            with closing(sqlite3.connect(f"{Path(journal).as_uri()}?mode=ro", uri=True, timeout=30)) as read:
                marks = ", ".join("?" for _ in leads)
                states = {
                    int(r[0]): LeadState(str(r[1]), str(r[2]), r[3])
                    for r in read.execute(
                        "SELECT l.id, l.status, l.call_id, c.final FROM leads l"
                        f" LEFT JOIN calls c ON c.call_id = l.call_id WHERE l.id IN ({marks})",
                        leads,
                    )
                }
                marks = ", ".join("?" for _ in calls)
                finals = {
                    str(r[0]): int(r[1])
                    for r in read.execute(
                        f"SELECT call_id, final FROM calls WHERE call_id IN ({marks})", calls
                    )
                }
        except sqlite3.Error:
            # Unreadable now (locked past the timeout, damaged): held, judged again later.
            return {lead: LeadState("unknown", "", None) for lead in leads}, {}
        return states, finals

    async def close(self) -> None:
        self.conn.close()


def file_live_slots(
    campaign: Campaign, journal: Path, clock: Callable[[], float] = time.time
) -> SharedLiveSlots | None:
    """The account's live-call slots for a SQLite campaign (None: no [account] max_live_calls)."""
    account = campaign.account
    if account is None or account.max_live_calls is None:
        return None
    key = f"account:{account.name}"
    return SharedLiveSlots(
        FileBackend(accounts_dir() / f"{account.name}.sqlite", clock),
        limits=[LiveLimit(key, account.max_live_calls)],
        journal=str(journal.resolve()),
        account_key=key,
        campaign_key=f"campaign:{journal.resolve()}",
        lease=campaign.limits.claim_lease_seconds,
        give_up_after=campaign.outcomes.give_up_after,
    )
