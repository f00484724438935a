"""Group commits: the dispatcher's writes made durable without capping the dial rate."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from dialer.store.db import connect, transaction
from dialer.store.writes import Write

# A commit slower than this (a slow or network disk) is made in a thread, off the loop.
SLOW_COMMIT = 0.002


class JournalWriter:
    """Commits the dispatcher's writes in groups, off the event loop.

    `commit(writes)` returns once the writes are durable. The writes queued in
    one turn of the event loop go into one transaction: one fsync per group, not
    per row. On a fast disk the commit runs right in the loop (a fraction of a
    millisecond); on a slow one it moves to a thread so the loop keeps sending,
    and new writes queue up for the next group meanwhile.
    """

    def __init__(self, path: Path, slow_commit: float = SLOW_COMMIT) -> None:
        """`slow_commit`: seconds a commit may take in the loop before commits move to a thread."""
        self._conn = connect(path)
        self._slow_commit = slow_commit
        self._queue: list[tuple[list[Write], asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._commit_seconds = 0.0  # moving average: a slow disk's commits go to a thread
        self.commits = 0
        self.threaded_commits = 0  # of which made in a thread (a slow disk)

    async def commit(self, writes: list[Write]) -> None:
        # Each caller has its own future: cancelling the wait leaves the writes queued,
        # and they are committed all the same.
        await self._enqueue(writes)

    def submit(self, writes: list[Write]) -> None:
        """Queue writes without waiting (for use while being cancelled); close() commits them."""
        self._enqueue(writes)

    def _enqueue(self, writes: list[Write]) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((writes, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return future

    async def _flush(self) -> None:
        while self._queue:
            # Let the writes of this loop turn gather: one fsync for all of them.
            await asyncio.sleep(0)
            batch, self._queue = self._queue, []
            writes = [w for writes, _ in batch for w in writes]
            try:
                started = time.perf_counter()
                if self._commit_seconds > self._slow_commit:
                    self.threaded_commits += 1
                    await asyncio.to_thread(self._write, writes)
                else:
                    # A fast disk commits in a fraction of a millisecond: cheaper here than a
                    # hand-off to a thread, which costs both threads the GIL on every statement.
                    self._write(writes)
                took = time.perf_counter() - started
                self._commit_seconds = 0.8 * self._commit_seconds + 0.2 * took
            except BaseException as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                raise
            for _, future in batch:
                if not future.done():
                    future.set_result(None)

    def _write(self, writes: list[Write]) -> None:
        with transaction(self._conn) as conn:
            for write in writes:
                conn.execute(write.sql, write.params)
        self.commits += 1

    async def close(self) -> None:
        """Commit everything still queued, then close."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)
        if self._queue:
            self._flusher = asyncio.create_task(self._flush())
            await self._flusher
        self._conn.close()
