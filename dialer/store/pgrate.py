"""The send window shared by every run of a campaign, and by every campaign of an account.

Each limit is a bucket row in `dialer_shared.buckets` (`campaign:<schema>` for the
campaign's own rate_per_second, `account:<name>` for [account]). A request may
leave when every one of its buckets grants it, in one transaction that locks
those rows (in key order: no deadlock), reads the database's clock (the hosts'
clocks may differ; the server's is the one every run sees) and writes a grant.

The window counts a grant from the moment it is given until one second (plus
`SLACK` for the network) after its request's last byte went out (`Grant.left`,
reported on the same clock through the offset to the server's clock, measured at
connect from the quickest of a few round trips, not inside a grant that may have
waited on a lock). A grant
whose request has not reported leaving is counted as in flight: the time
between the grant and the request leaving (a slow connection, a busy loop) can
never let two requests into one window. A grant never reported (its run died)
stops counting after `LOST_AFTER` seconds.

A 429 lowers the bucket's rate for every run (by 30%, at most once a second);
after two quiet seconds it probes back up by 2% a second, as pacing.py does
inside one run.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg  # psycopg loads libpq: only PostgreSQL campaigns pay for it


# The network, and the time between the last byte leaving and the far end counting it
# (a loaded host): a request counts this much longer than its second. Measured: on a loaded
# 2-core machine the sandbox stamped a request 115 ms after its last byte left while the next
# ones came within 2 ms; at 50 ms that was one request too many in a second (1 of 20 runs of
# two campaigns on one account). The cost: at most floor(rate) requests per 1.15 s.
SLACK = 0.150
LOST_AFTER = 10.0
NOW = "extract(epoch from clock_timestamp())::float8"


@dataclass(frozen=True)
class Bucket:
    key: str
    rate: float
    min_rate: float


class Grant:
    """One request's place in the shared window; `left()` says when it went out."""

    def __init__(self, rate: SharedRate, ids: list[int], offset: float) -> None:
        self._rate = rate
        self._ids = ids
        self._offset = offset  # database clock minus this host's clock
        self._reported = False

    def left(self) -> None:
        if not self._reported:
            self._reported = True
            self._rate.report_left(self._ids, time.time() + self._offset)


class SharedRate:
    """The buckets a campaign's requests must pass, in the campaign's PostgreSQL database."""

    def __init__(self, url: str, schema: str, buckets: list[Bucket]) -> None:
        self._url = url
        self._schema = schema
        self.buckets = sorted(buckets, key=lambda b: b.key)
        self._conn: psycopg.AsyncConnection[tuple[Any, ...]] | None = None
        self._lock = asyncio.Lock()
        self._reports: set[asyncio.Task[None]] = set()
        self.waits = 0  # grants that had to wait (for the bench)
        self._offset = 0.0  # the server's clock minus this host's

    async def _connection(self) -> psycopg.AsyncConnection[tuple[Any, ...]]:
        if self._conn is None:
            from dialer.store.pgdb import connect_async

            self._conn = await connect_async(self._url, self._schema)
            async with self._conn.transaction():
                for bucket in self.buckets:
                    # The configured rate may have changed since the last run: the bucket follows it.
                    await self._conn.execute(
                        "INSERT INTO dialer_shared.buckets (key, rate, max_rate, min_rate)"
                        " VALUES (%s, %s, %s, %s) ON CONFLICT (key) DO UPDATE SET"
                        " max_rate = excluded.max_rate, min_rate = excluded.min_rate,"
                        " rate = least(dialer_shared.buckets.rate, excluded.max_rate)",
                        (bucket.key, bucket.rate, bucket.rate, bucket.min_rate),
                    )
            self._offset = await self._clock_offset(self._conn)
        return self._conn

    @staticmethod
    async def _clock_offset(conn: psycopg.AsyncConnection[tuple[Any, ...]]) -> float:
        """The server's clock minus ours, from the quickest of five round trips."""
        samples = []
        for _ in range(5):
            before = time.time()
            row = await (await conn.execute(f"SELECT {NOW}")).fetchone()
            after = time.time()
            assert row is not None
            samples.append((after - before, float(row[0]) - (before + after) / 2))
        return min(samples)[1]

    async def acquire(self) -> Grant:
        """Wait until every bucket lets a request leave now; its grant."""
        from dialer.store.pgdb import lost_as_journal_error

        while True:
            async with self._lock:
                with lost_as_journal_error(self._url):
                    conn = await self._connection()
                    async with conn.transaction():
                        granted, wait, _ = await self._try(conn)
            if granted is not None:
                return Grant(self, granted, self._offset)
            self.waits += 1
            await asyncio.sleep(wait)

    async def _try(
        self, conn: psycopg.AsyncConnection[tuple[Any, ...]]
    ) -> tuple[list[int] | None, float, float]:
        keys = [b.key for b in self.buckets]
        cursor = await conn.execute(
            f"SELECT key, rate, max_rate, lowered_at, raised_at, last_grant, {NOW}"
            " FROM dialer_shared.buckets WHERE key = ANY(%s) ORDER BY key FOR UPDATE",
            (keys,),
        )
        rows = await cursor.fetchall()
        wait = 0.0
        db_now = 0.0
        for key, rate, max_rate, lowered_at, raised_at, last_grant, now in rows:
            db_now = now
            if rate < max_rate and now - lowered_at > 2.0 and now - raised_at >= 1.0:
                rate = min(max_rate, rate * 1.02)
                await conn.execute(
                    "UPDATE dialer_shared.buckets SET rate = %s, raised_at = %s WHERE key = %s",
                    (rate, now, key),
                )
            wait = max(wait, await self._wait_for(conn, key, rate, last_grant, now))
        if wait > 0:
            return None, wait, db_now
        ids = []
        for key in keys:
            cursor = await conn.execute(
                "INSERT INTO dialer_shared.grants (key, granted_at) VALUES (%s, %s) RETURNING id",
                (key, db_now),
            )
            found = await cursor.fetchone()
            assert found is not None
            ids.append(int(found[0]))
        await conn.execute(
            "UPDATE dialer_shared.buckets SET last_grant = %s WHERE key = ANY(%s)", (db_now, keys)
        )
        await conn.execute(
            "DELETE FROM dialer_shared.grants WHERE key = ANY(%s) AND granted_at < %s",
            (keys, db_now - 2 * LOST_AFTER),
        )
        return ids, 0.0, db_now

    @staticmethod
    async def _wait_for(
        conn: psycopg.AsyncConnection[tuple[Any, ...]], key: str, rate: float, last_grant: float, now: float
    ) -> float:
        """Seconds until `key` lets one more request out (0: now)."""
        # Spacing: no burst at the start of a window, whichever run asks.
        spacing = last_grant + 1.0 / (rate * 1.05) - now
        if spacing > 0:
            return spacing
        allowed = max(1, math.floor(rate))
        cursor = await conn.execute(
            "SELECT left_at FROM dialer_shared.grants WHERE key = %s AND granted_at > %s"
            " AND (left_at IS NULL OR left_at > %s) ORDER BY left_at NULLS LAST",
            (key, now - LOST_AFTER, now - 1.0 - SLACK),
        )
        counted = [r[0] for r in await cursor.fetchall()]
        if len(counted) < allowed:
            return 0.0
        # The window frees when the oldest departure in it leaves it; in-flight ones: soon.
        first = counted[len(counted) - allowed]
        return 0.005 if first is None else max(0.001, first + 1.0 + SLACK - now)

    def report_left(self, ids: list[int], at: float) -> None:
        task = asyncio.get_running_loop().create_task(self._report(ids, at))
        self._reports.add(task)
        task.add_done_callback(self._reports.discard)

    async def _report(self, ids: list[int], at: float) -> None:
        import psycopg

        async with self._lock:
            # The database gone: the grant counts as in flight until LOST_AFTER (the safe side);
            # the run stops on the journal's own error.
            with contextlib.suppress(psycopg.Error):
                conn = await self._connection()
                await conn.execute(
                    "UPDATE dialer_shared.grants SET left_at = %s WHERE id = ANY(%s)", (at, ids)
                )

    async def throttled(self) -> None:
        """A 429: every bucket's rate cut by 30% (at most once a second), for every run."""
        async with self._lock:
            conn = await self._connection()
            await conn.execute(
                "UPDATE dialer_shared.buckets SET rate = greatest(min_rate, rate * 0.7),"
                f" lowered_at = {NOW} WHERE key = ANY(%s) AND lowered_at < {NOW} - 1",
                ([b.key for b in self.buckets],),
            )

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._reports)
        if self._conn is not None:
            await self._conn.close()
