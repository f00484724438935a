"""Caller-id day counts kept where every run sees them: `[numbers] daily_cap` shared.

A caller id's calls in its local day are counted per *scope*:

    a PostgreSQL campaign           `campaign:<schema>` in `dialer_shared.caller_days`
    ... naming an [account]         `account:<name>` there instead
    a SQLite campaign with [account] the account's file on this host (filerate.py's
                                    `<accounts dir>/<name>.sqlite`), table `caller_days`
    a SQLite campaign without one   no shared count: the journal's `number_usage`, as
                                    ever (the campaign's flock makes its run the only one)

so every run of a campaign, and every campaign of an account, count into one row
per (caller id, day).

The rule: a count is *taken* before the row's intent is committed, by one atomic
statement that adds the call only while the count is under the cap
(`INSERT .. ON CONFLICT DO UPDATE .. WHERE calls < cap`, which PostgreSQL runs
under the row's lock, SQLite under the file's write lock), and committed on its
own. A call is thus counted before it can leave, and never by two runs past the
cap. It is given back only when the request never left (the run stopped, the
hours closed, a 429, a refused key: send.py's restore), so a crash between the
take and the POST leaves one count too many, the safe side, never one too few.

When campaigns of one account share a caller id, each campaign's own `daily_cap`
is checked against the calls of *all* of them: a campaign with cap 3 does not call
from a number the account already used 3 times today, whichever campaign did. The
cap exists for the number's standing with carriers and call-labelling services,
which see every call it makes, not which campaign made it; counting only one's own
calls would let two campaigns with cap 100 make 200 calls from it.

A journal's own counts seed the shared ones (the greater is kept): a campaign
migrated to PostgreSQL, or given an [account], mid-day keeps the calls it made that
day. Rows of days long past are deleted as runs start: only today's count matters.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dialer.config import Campaign
from dialer.errors import JournalError
from dialer.numbers import CallerDays, Day
from dialer.store.db import transaction
from dialer.store.opening import journal_url

if TYPE_CHECKING:
    import psycopg  # psycopg loads libpq: only PostgreSQL campaigns pay for it

# Rows older than this many days before today (UTC) are of no use: a number's local
# day is at most a day off UTC's.
KEEP_DAYS = 3


def shared_days(campaign: Campaign) -> CallerDays | None:
    """Where the campaign's caller-id counts are shared; None: only its journal counts them
    (or there is no caller id to count: no [numbers] pool, the API's own number)."""
    if not campaign.numbers.pool:
        return None
    url = journal_url(campaign)
    account = campaign.account
    if url is not None:
        from dialer.store.pgurl import schema_name

        schema = schema_name(campaign.name)
        scope = f"account:{account.name}" if account is not None else f"campaign:{schema}"
        return PgDays(url, schema, scope)
    if account is not None:
        from dialer.store.filerate import accounts_dir

        return FileDays(accounts_dir() / f"{account.name}.sqlite")
    return None


def _oldest_kept() -> str:
    return (datetime.now(UTC).date() - timedelta(days=KEEP_DAYS)).isoformat()


# -- SQLite: the account's file, on one host ------------------------------------------

FILE_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS caller_days (number TEXT NOT NULL, day TEXT NOT NULL,"
    " calls INTEGER NOT NULL, PRIMARY KEY (number, day))"
)


class FileDays:
    """The counts of an account's SQLite campaigns on this host, in the account's file.

    Each statement is its own transaction: a few milliseconds on the event loop per
    call, as the account's send window (filerate.py) takes in the same file.
    """

    def __init__(self, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(path, isolation_level=None, timeout=30)
            self.conn.execute("PRAGMA journal_mode=WAL")
            with transaction(self.conn) as conn:
                conn.execute(FILE_SCHEMA)
                conn.execute("DELETE FROM caller_days WHERE day < ?", (_oldest_kept(),))
        except (sqlite3.Error, OSError) as exc:
            raise JournalError(f"{path}: cannot open the account's file: {exc}") from None

    async def counts(self, seeds: Mapping[Day, int]) -> dict[Day, int]:
        found: dict[Day, int] = {}
        with transaction(self.conn) as conn:
            for (number, day), seed in seeds.items():
                row = conn.execute(
                    "INSERT INTO caller_days (number, day, calls) VALUES (?, ?, ?)"
                    " ON CONFLICT (number, day) DO UPDATE SET calls = max(calls, excluded.calls)"
                    " RETURNING calls",
                    (number, day, seed),
                ).fetchone()
                found[(number, day)] = int(row[0])
        return found

    async def take(self, number: str, day: str, cap: int | None) -> int | None:
        with transaction(self.conn) as conn:
            row = conn.execute(
                "INSERT INTO caller_days (number, day, calls) VALUES (?, ?, 1)"
                " ON CONFLICT (number, day) DO UPDATE SET calls = calls + 1"
                " WHERE ? IS NULL OR calls < ? RETURNING calls",
                (number, day, cap, cap),
            ).fetchone()
        return None if row is None else int(row[0])

    def give_back(self, number: str, day: str) -> None:
        with transaction(self.conn) as conn:
            conn.execute(
                "UPDATE caller_days SET calls = calls - 1 WHERE number = ? AND day = ? AND calls > 0",
                (number, day),
            )

    async def close(self) -> None:
        self.conn.close()


# -- PostgreSQL: the database every run of the campaign and the account uses ----------

PG_SCHEMA = """
CREATE TABLE IF NOT EXISTS dialer_shared.caller_days (
    scope  TEXT NOT NULL,     -- 'campaign:<schema>' or 'account:<name>'
    number TEXT NOT NULL,     -- the caller id
    day    TEXT NOT NULL,     -- the ISO date of its own local day
    calls  INTEGER NOT NULL,
    PRIMARY KEY (scope, number, day)
)"""


class PgDays:
    """The counts of a campaign's (or account's) runs, in `dialer_shared.caller_days`.

    One connection, in autocommit: each take is one statement, so a row is locked only
    while that statement runs and no two runs can deadlock on it.
    """

    def __init__(self, url: str, schema: str, scope: str) -> None:
        self._url = url
        self._schema = schema
        self.scope = scope
        self._conn: psycopg.AsyncConnection[tuple[Any, ...]] | None = None
        self._lock = asyncio.Lock()  # one statement at a time on the one connection
        self._returns: set[asyncio.Task[None]] = set()

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[psycopg.AsyncConnection[tuple[Any, ...]]]:
        """The connection, one statement (or transaction) at a time; the server's errors as
        one line that never shows the password."""
        import psycopg

        from dialer.store.pgurl import redact, scrub

        async with self._lock:
            try:
                yield await self._connection()
            except psycopg.Error as exc:
                raise JournalError(
                    f"{redact(self._url)}: cannot count calls per caller id: {scrub(str(exc), self._url)}"
                ) from None

    async def _connection(self) -> psycopg.AsyncConnection[tuple[Any, ...]]:
        if self._conn is None:
            from dialer.store.pgdb import connect_async

            conn = await connect_async(self._url, self._schema)
            try:
                await self._prepare(conn)
            except BaseException:
                await conn.close()
                raise
            self._conn = conn
        return self._conn

    async def _prepare(self, conn: psycopg.AsyncConnection[tuple[Any, ...]]) -> None:
        async with conn.transaction():
            # The table is created on first use, also in a database whose journals
            # predate it; the migration's lock keeps two first runs from racing.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('dialer:migrate'))")
            await conn.execute("CREATE SCHEMA IF NOT EXISTS dialer_shared")
            await conn.execute(PG_SCHEMA)
            await conn.execute(
                "DELETE FROM dialer_shared.caller_days WHERE scope = %s AND day < %s",
                (self.scope, _oldest_kept()),
            )

    async def counts(self, seeds: Mapping[Day, int]) -> dict[Day, int]:
        found: dict[Day, int] = {}
        async with self._session() as conn, conn.transaction():
            # In key order: two runs whose pools list the numbers differently lock the rows
            # in the same order, so they wait for each other, never deadlock.
            for (number, day), seed in sorted(seeds.items()):
                cursor = await conn.execute(
                    "INSERT INTO dialer_shared.caller_days (scope, number, day, calls)"
                    " VALUES (%s, %s, %s, %s) ON CONFLICT (scope, number, day) DO UPDATE"
                    " SET calls = greatest(dialer_shared.caller_days.calls, excluded.calls)"
                    " RETURNING calls",
                    (self.scope, number, day, seed),
                )
                row = await cursor.fetchone()
                assert row is not None
                found[(number, day)] = int(row[0])
        return found

    async def take(self, number: str, day: str, cap: int | None) -> int | None:
        async with self._session() as conn:
            cursor = await conn.execute(
                "INSERT INTO dialer_shared.caller_days (scope, number, day, calls)"
                " VALUES (%s, %s, %s, 1) ON CONFLICT (scope, number, day) DO UPDATE"
                " SET calls = dialer_shared.caller_days.calls + 1"
                " WHERE %s::integer IS NULL OR dialer_shared.caller_days.calls < %s::integer"
                " RETURNING calls",
                (self.scope, number, day, cap, cap),
            )
            row = await cursor.fetchone()
        return None if row is None else int(row[0])

    def give_back(self, number: str, day: str) -> None:
        task = asyncio.get_running_loop().create_task(self._give_back(number, day))
        self._returns.add(task)
        task.add_done_callback(self._returns.discard)

    async def _give_back(self, number: str, day: str) -> None:
        async with self._session() as conn:
            await conn.execute(
                "UPDATE dialer_shared.caller_days SET calls = calls - 1"
                " WHERE scope = %s AND number = %s AND day = %s AND calls > 0",
                (self.scope, number, day),
            )

    async def close(self) -> None:
        # A give-back that cannot land leaves a count too many: the safe side.
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._returns)
        if self._conn is not None:
            await self._conn.close()
