"""Group commits: the dispatcher's writes made durable without capping the dial rate."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from dialer.errors import JournalError
from dialer.store.batching import GroupCommits
from dialer.store.db import connect, journal_write_error, transaction
from dialer.store.writes import NumberTaken, Write

# For end-to-end tests of a full disk: the commit after this many raises what SQLite
# raises when the disk is full. Unset in real use.
FAULT_ENV = "DIALER_TEST_JOURNAL_FULL_AFTER"

# A commit slower than this (a slow or network disk) is made in a thread, off the loop.
SLOW_COMMIT = 0.002


class JournalWriter(GroupCommits):
    """Commits the dispatcher's writes in groups, off the event loop.

    `commit(writes)` returns once the writes are durable. The writes queued in
    one turn of the event loop go into one transaction: one fsync per group, not
    per row. On a fast disk the commit runs right in the loop (a fraction of a
    millisecond); on a slow one it moves to a thread so the loop keeps sending,
    and new writes queue up for the next group meanwhile.
    """

    def __init__(
        self, path: Path, slow_commit: float = SLOW_COMMIT, fault: Callable[[], None] | None = None
    ) -> None:
        """`slow_commit`: seconds a commit may take in the loop before commits move to a thread.

        `fault`: called before each commit; tests make it raise what a full disk raises.
        """
        self.path = path
        self.fault = fault if fault is not None else _fault_from_environment()
        self._conn = connect(path)
        self._slow_commit = slow_commit
        super().__init__()
        self._commit_seconds = 0.0  # moving average: a slow disk's commits go to a thread
        self.commits = 0
        self.threaded_commits = 0  # of which made in a thread (a slow disk)

    async def _flush(self) -> None:
        while self._queue:
            # Let the writes of this loop turn gather: one fsync for all of them.
            await asyncio.sleep(0)
            batch, self._queue = self._queue, []
            futures = [future for _, future in batch]
            try:
                refused = await self._commit_timed([writes for writes, _ in batch])
            except JournalError as exc:
                # The disk failed: each waiting caller gets the one line; the flusher goes on
                # with what is queued after (a disk freed meanwhile takes it).
                _settle(futures, [exc] * len(futures))
                continue
            except BaseException as exc:
                _settle(futures, [exc] * len(futures))
                raise
            _settle(futures, [None if row_id is None else NumberTaken(row_id) for row_id in refused])

    async def _commit_timed(self, groups: list[list[Write]]) -> list[int | None]:
        started = time.perf_counter()
        if self._commit_seconds > self._slow_commit:
            self.threaded_commits += 1
            refused = await asyncio.to_thread(self._write, groups)
        else:
            # A fast disk commits in a fraction of a millisecond: cheaper here than a
            # hand-off to a thread, which costs both threads the GIL on every statement.
            refused = self._write(groups)
        took = time.perf_counter() - started
        self._commit_seconds = 0.8 * self._commit_seconds + 0.2 * took
        return refused

    def _write(self, groups: list[list[Write]]) -> list[int | None]:
        """Commit every group in one transaction; per group, the row a guard refused (or None)."""
        refused: list[int | None] = []
        try:
            if self.fault is not None:
                self.fault()
            with transaction(self._conn) as conn:
                refused = [_apply(conn, writes) for writes in groups]
        except sqlite3.Error as exc:
            raise journal_write_error(self.path, exc) from None
        self.commits += 1
        return refused

    async def close(self) -> None:
        """Commit everything still queued, then close (also when a commit fails: a full disk)."""
        try:
            await self._drain()
        finally:
            self._conn.close()


def _settle(futures: list[asyncio.Future[None]], results: list[BaseException | None]) -> None:
    """Each waiting caller's result: None, or the exception its commit raises."""
    for future, result in zip(futures, results, strict=True):
        if future.done():
            continue
        if result is None:
            future.set_result(None)
        else:
            future.set_exception(result)
            if not isinstance(result, asyncio.CancelledError):
                future.exception()  # retrieved: a caller gone meanwhile must not warn of it


def _apply(conn: sqlite3.Connection, writes: list[Write]) -> int | None:
    """One caller's writes; the row id if a guard refused them (the rest skipped)."""
    for write in writes:
        cursor = conn.execute(write.sql, write.params)
        if write.guard and cursor.rowcount == 0:
            for fallback in write.refused:
                conn.execute(fallback.sql, fallback.params)
            return int(write.params[-1])
    return None


def _fault_from_environment() -> Callable[[], None] | None:
    after = os.environ.get(FAULT_ENV)
    if not after:
        return None
    remaining = [int(after)]

    def fault() -> None:
        remaining[0] -= 1
        if remaining[0] < 0:
            raise sqlite3.OperationalError("database or disk is full")

    return fault
