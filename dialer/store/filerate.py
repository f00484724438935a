"""[account] on one host with SQLite journals: the account's window in a small SQLite file.

Campaigns with SQLite journals naming the same account share its rate through
`<accounts dir>/<name>.sqlite` (`DIALER_ACCOUNTS_DIR`, by default
`~/.local/state/dialer/accounts`): every grant is one BEGIN IMMEDIATE transaction
on it, so the file's write lock is the account's one serialisation point, as the
bucket's row lock is in PostgreSQL (pgrate.py, whose rules this follows: read that
one first). One host, so one clock: the wall clock.
"""

from __future__ import annotations

import asyncio
import math
import os
import sqlite3
import time
from pathlib import Path

from dialer.config import Campaign
from dialer.store.db import transaction
from dialer.store.pgrate import LOST_AFTER, SLACK

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS bucket (rate REAL NOT NULL, max_rate REAL NOT NULL,"
    " min_rate REAL NOT NULL, lowered_at REAL NOT NULL DEFAULT 0, raised_at REAL NOT NULL DEFAULT 0,"
    " last_grant REAL NOT NULL DEFAULT 0)",
    "CREATE TABLE IF NOT EXISTS grants (id INTEGER PRIMARY KEY, granted_at REAL NOT NULL, left_at REAL)",
    "CREATE INDEX IF NOT EXISTS grants_at ON grants (granted_at)",
)


def accounts_dir() -> Path:
    configured = os.environ.get("DIALER_ACCOUNTS_DIR")
    return Path(configured) if configured else Path.home() / ".local" / "state" / "dialer" / "accounts"


class FileGrant:
    def __init__(self, rate: FileRate, grant_id: int) -> None:
        self._rate = rate
        self._id = grant_id
        self._reported = False

    def left(self) -> None:
        if not self._reported:
            self._reported = True
            self._rate.report_left(self._id, time.time())


class FileRate:
    """The account's window in its SQLite file, for every campaign of this host naming it."""

    def __init__(self, path: Path, rate: float, min_rate: float) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(path, isolation_level=None, timeout=30)
        self.conn.execute("PRAGMA journal_mode=WAL")
        with transaction(self.conn) as conn:
            for statement in SCHEMA:
                conn.execute(statement)
            if conn.execute("SELECT count(*) FROM bucket").fetchone()[0] == 0:
                conn.execute(
                    "INSERT INTO bucket (rate, max_rate, min_rate) VALUES (?, ?, ?)", (rate, rate, min_rate)
                )
            conn.execute(
                "UPDATE bucket SET max_rate = ?, min_rate = ?, rate = min(rate, ?)", (rate, min_rate, rate)
            )
        self.waits = 0

    @classmethod
    def for_account(cls, campaign: Campaign) -> FileRate | None:
        account = campaign.account
        if account is None or account.rate_per_second is None:
            return None
        min_rate = min(campaign.limits.min_rate_per_second, account.rate_per_second)
        return cls(accounts_dir() / f"{account.name}.sqlite", account.rate_per_second, min_rate)

    async def acquire(self) -> FileGrant:
        while True:
            granted, wait = self._try()
            if granted is not None:
                return FileGrant(self, granted)
            self.waits += 1
            await asyncio.sleep(wait)

    def _try(self) -> tuple[int | None, float]:
        with transaction(self.conn) as conn:
            now = time.time()
            rate, max_rate, lowered_at, raised_at, last_grant = conn.execute(
                "SELECT rate, max_rate, lowered_at, raised_at, last_grant FROM bucket"
            ).fetchone()
            if rate < max_rate and now - lowered_at > 2.0 and now - raised_at >= 1.0:
                rate = min(max_rate, rate * 1.02)
                conn.execute("UPDATE bucket SET rate = ?, raised_at = ?", (rate, now))
            spacing = last_grant + 1.0 / (rate * 1.05) - now
            if spacing > 0:
                return None, spacing
            counted = [
                r[0]
                for r in conn.execute(
                    "SELECT left_at FROM grants WHERE granted_at > ? AND (left_at IS NULL OR left_at > ?)"
                    " ORDER BY left_at IS NULL, left_at",
                    (now - LOST_AFTER, now - 1.0 - SLACK),
                )
            ]
            allowed = max(1, math.floor(rate))
            if len(counted) >= allowed:
                first = counted[len(counted) - allowed]
                return None, 0.005 if first is None else max(0.001, first + 1.0 + SLACK - now)
            grant_id = conn.execute("INSERT INTO grants (granted_at) VALUES (?)", (now,)).lastrowid
            conn.execute("UPDATE bucket SET last_grant = ?", (now,))
            conn.execute("DELETE FROM grants WHERE granted_at < ?", (now - 2 * LOST_AFTER,))
        assert grant_id is not None
        return grant_id, 0.0

    def report_left(self, grant_id: int, at: float) -> None:
        with transaction(self.conn) as conn:
            conn.execute("UPDATE grants SET left_at = ? WHERE id = ?", (at, grant_id))

    async def throttled(self) -> None:
        now = time.time()
        with transaction(self.conn) as conn:
            conn.execute(
                "UPDATE bucket SET rate = max(min_rate, rate * 0.7), lowered_at = ? WHERE lowered_at < ?",
                (now, now - 1.0),
            )

    async def close(self) -> None:
        self.conn.close()
