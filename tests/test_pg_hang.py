"""A PostgreSQL run must never hang: each interleaving that froze one, driven by hand.

Two ways a run hung under load (issue 14, `test_a_run_killed_mid_run_loses_and_repeats_nothing`
timing out with a survivor still running 40 minutes later):
  - the sender's last check of a row whose sure time had run out (claims.Claims) asked the
    database on the journal's synchronous connection, and waited there on the row's lock,
    held by the run's own writer mid-renewal: the loop frozen, the writer could never commit;
  - a task nobody awaits until the end (the follower, the lease renewer) died of an error
    and the run waited for ever for what it would have done (every call seen to end).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from structlog.testing import capture_logs

from dialer import store as j
from dialer.bookkeeping import Progress, Run
from dialer.client import SynthflowClient
from dialer.config import load_campaign
from dialer.follow import Follower
from dialer.run import RunOptions, run_campaign
from dialer.store.claims import Claims
from dialer.store.pgurl import schema_name
from dialer.store.postgres import PgJournal
from dialer.store.sqlite import Journal
from tests.conftest import posts, write_leads
from tests.test_campaign import ALL_DAY, KEY, numbered_leads
from tests.test_journal import _import, _lead
from tests.test_postgres import SHARED, pg_campaign

ANN, BOB = "+12125550101", "+12125550102"


@pytest.fixture
def journal(pg_url: str) -> Iterator[PgJournal]:
    opened = PgJournal(pg_url, "c")
    _import(opened, [_lead(2, "Ann", ANN), _lead(3, "Bob", BOB)], "a")
    # The old check waited on the lock: here it would fail after 3 s rather than hang the test.
    opened.conn.execute("SET lock_timeout = '3s'")
    yield opened
    opened.close()


def _connect(url: str) -> psycopg.Connection[tuple[Any, ...]]:
    conn = psycopg.connect(url, autocommit=True)
    conn.execute(f'SET search_path TO "{schema_name("c")}"'.encode())
    return conn


async def _until_waiting_on_a_lock(watcher: psycopg.Connection[tuple[Any, ...]]) -> None:
    """Until some session of the database waits on a row lock (another connection's state)."""
    while True:
        found = watcher.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock'"
        ).fetchone()
        if found is not None and found[0]:
            return
        await asyncio.sleep(0.01)


def test_a_stale_rows_check_lets_its_own_writers_renewal_commit(journal: PgJournal, pg_url: str) -> None:
    """The run's writer is mid-transaction (its renewal holds every row of the run's) when a
    sender, past the row's sure time, asks whether the row is still the run's: the question
    must let the loop turn, so the renewal commits, then be answered (yes)."""
    now = [100.0]
    claims = Claims(journal.conn, 3.0, clock=lambda: now[0])
    journal._claims = claims  # the writer's claims: the renewal is this run's
    assert claims.claim_dialable(1) == [1]
    claims.intended(1, 100.0)
    now[0] = 110.0  # the loop stalled: row 1's sure time ran out (the database still says ours)
    blocker, watcher = _connect(pg_url), _connect(pg_url)
    blocker.execute("BEGIN")
    blocker.execute("UPDATE leads SET error = 'held' WHERE id = 2")  # keeps the writer's transaction open
    tries: list[int] = []
    confirm = claims._confirm

    def counted(row_id: int) -> bool | None:
        tries.append(row_id)
        return confirm(row_id)

    claims._confirm = counted  # type: ignore[method-assign]

    async def scene() -> bool:
        writer = journal.writer()
        later = j.Write("UPDATE leads SET error = 'after' WHERE id = ?", (2,))
        renewing = asyncio.create_task(writer.commit([claims.renewal(), later]))
        await _until_waiting_on_a_lock(watcher)  # renewed row 1 (locked), now waits on row 2
        asking = asyncio.create_task(claims.still_ours(1))
        while not tries:
            await asyncio.sleep(0)
        blocker.execute("COMMIT")  # row 2 free: the writer goes on, if the loop turns
        answer = await asyncio.wait_for(asking, timeout=30)
        await asyncio.wait_for(renewing, timeout=30)
        claims.renewed()
        await writer.close()
        return answer

    try:
        assert asyncio.run(scene()) is True
    finally:
        blocker.close()
    assert len(tries) >= 2  # asked again once the lock was gone, not waited on it
    assert journal.row(2).error == "after"
    until = watcher.execute(
        "SELECT claim_until - extract(epoch from now()) FROM leads WHERE id = 1"
    ).fetchone()
    watcher.close()
    assert until is not None and until[0] > 2.0  # the lease renewed by the check's own answer


def test_a_stale_row_another_run_takes_while_locked_is_not_sent(journal: PgJournal, pg_url: str) -> None:
    """The lock was another run's, taking the row over (this run's lease ran out): once it
    commits the answer is no."""
    now = [100.0]
    claims = Claims(journal.conn, 3.0, clock=lambda: now[0])
    assert claims.claim_dialable(1) == [1]
    claims.intended(1, 100.0)
    now[0] = 110.0
    other = _connect(pg_url)
    other.execute("BEGIN")
    other.execute("UPDATE leads SET claimed_by = 'run-b' WHERE id = 1")
    assert claims.fresh(1) is None  # locked: not known yet, and not waited for

    async def scene() -> bool:
        asking = asyncio.create_task(claims.still_ours(1))
        await asyncio.sleep(0)
        other.execute("COMMIT")
        return await asyncio.wait_for(asking, timeout=30)

    try:
        assert asyncio.run(scene()) is False
    finally:
        other.close()


def test_a_stop_ends_the_wait_for_a_locked_row(journal: PgJournal, pg_url: str) -> None:
    now = [100.0]
    claims = Claims(journal.conn, 3.0, clock=lambda: now[0])
    assert claims.claim_dialable(1) == [1]
    now[0] = 110.0
    other = _connect(pg_url)
    other.execute("BEGIN")
    other.execute("UPDATE leads SET error = 'x' WHERE id = 1")

    async def scene() -> bool:
        stop = asyncio.Event()
        asking = asyncio.create_task(claims.still_ours(1, stop))
        await asyncio.sleep(0)
        stop.set()
        return await asyncio.wait_for(asking, timeout=30)

    try:
        assert asyncio.run(scene()) is False  # stopped: the request stays home
    finally:
        other.close()


def test_a_follower_that_fails_stops_the_run_rather_than_leave_it_waiting(tmp_path: Path) -> None:
    """The run waits for its calls to end, which only the follower sees: a follower that dies
    of an error nobody expected (not a failed look-up) stops the run with that error."""
    toml = tmp_path / "c.toml"
    toml.write_text(f'name = "c"\nleads = "leads.csv"\nmode = "call"\n[call]\nmodel_id = "m-1"\n{ALL_DAY}')
    campaign = load_campaign(toml)
    journal = Journal(tmp_path / "c.sqlite", "c")

    def broken(request: httpx.Request) -> httpx.Response:
        raise RuntimeError("the listing broke")

    async def scene() -> Run:
        client = SynthflowClient("http://api.invalid", "k", transport=httpx.MockTransport(broken))
        run = Run(journal, journal.writer(), Progress())
        follower = Follower(run, campaign, client)
        follower.track(1, "call-1", time.time())
        try:
            await asyncio.wait_for(follower.follow(), timeout=30)
        finally:
            await run.writer.close()
            await client.aclose()
        return run

    try:
        run = asyncio.run(scene())
    finally:
        journal.close()
    assert run.stop.is_set() and isinstance(run.fatal, RuntimeError)


def test_a_run_waiting_for_rows_another_run_holds_says_so_then_dials_them(
    tmp_path: Path, sandbox: Any, pg_url: str
) -> None:
    """A run whose every other row is done, while another run (here dead, its lease long)
    holds one: it says what it waits for, at once and again each progress tick; once that
    lease runs out it dials the row and finishes."""
    server = sandbox(api_key=KEY)
    write_leads(tmp_path / "leads.csv", numbered_leads(3))
    config = load_campaign(pg_campaign(tmp_path, pg_url, SHARED.format(rate=10)))
    first = run_campaign(config, RunOptions(api_key=KEY, base_url=server.url, limit=1))
    assert first.counts == {"sent": 1, "pending": 2}
    dead = PgJournal(pg_url, "t")
    assert dead.claims(3600.0).claim_dialable(1) == [2]  # then it died: its lease an hour long
    dead.close()
    results: list[Any] = []
    with capture_logs() as logs:
        survivor = threading.Thread(
            target=lambda: results.append(run_campaign(config, RunOptions(api_key=KEY, base_url=server.url)))
        )
        survivor.start()
        deadline = time.monotonic() + 60
        # Waiting on the other thread's progress, not timing the code under test.
        while not any(e["event"] == "run.waiting" for e in logs) and time.monotonic() < deadline:
            time.sleep(0.02)
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f'SET search_path TO "{schema_name("t")}"'.encode())
            conn.execute("UPDATE leads SET claim_until = 0 WHERE id = 2")  # the dead run's lease ran out
        survivor.join(timeout=60)
    waiting = [e for e in logs if e["event"] == "run.waiting"]
    assert waiting and waiting[0]["rows"] == 1, [e["event"] for e in logs]
    assert results and results[0].exit_code == 0 and results[0].counts == {"sent": 3}
    phones = [p["body"]["phone"] for p in posts(server.record)]
    assert len(phones) == len(set(phones)) == 3


def test_rows_another_transaction_has_locked_are_waited_for_not_left_behind(
    journal: PgJournal, pg_url: str
) -> None:
    """Another run re-importing the file holds every row's lock for a moment: the claims
    skip them (SKIP LOCKED), and the run must wait for them rather than end with them due."""
    claims = Claims(journal.conn, 30.0)
    importer = _connect(pg_url)
    importer.execute("BEGIN")
    importer.execute("UPDATE leads SET updated_at = updated_at")  # the other run's import, under way
    try:
        assert claims.claim_dialable(4) == []  # every row skipped: locked
        held = claims.held_by_others()
        assert held is not None and held[0] == 2  # not "nothing left": wait and claim again
    finally:
        importer.execute("COMMIT")
        importer.close()
    assert claims.claim_dialable(4) == [1, 2]
    assert claims.held_by_others() is None  # all this run's now: nothing to wait for
