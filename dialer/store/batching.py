"""Group commits, the part both stores' writers share: each caller's writes are queued with
a future of its own, and one flush commits all that a loop turn gathered.

A writer subclasses `GroupCommits` and gives `_flush` (commit the queue until it is empty,
settling each future); `_drain` is what its `close` runs first.
"""

from __future__ import annotations

import asyncio

from dialer.store.writes import Write


class GroupCommits:
    def __init__(self) -> None:
        self._queue: list[tuple[list[Write], asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

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
        raise NotImplementedError

    async def _drain(self) -> None:
        """Commit everything still queued (a flush under way, then what came after it)."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)
        if self._queue:
            self._flusher = asyncio.create_task(self._flush())
            await self._flusher
