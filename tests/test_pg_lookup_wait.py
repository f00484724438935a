"""A look-up that fails gives its row back: no run holds an `unknown` row it could not settle.

A row left `unknown` (its request may have left) is decided by a look-up, a GET of the
lead's calls. On a PostgreSQL journal, a run whose look-up failed (the API erred or timed
out) kept the row claimed until it ended: two runs each holding such a row while
waiting for the other's row waited on each other (saying `run.waiting` every 10 s) until
one was stopped. Now the failed look-up gives the row back, still `unknown`, its attempt
as the journal counts it: another run looks it up once its backoff has passed (never
the run that failed, which leaves it as a SQLite run does, for a later run), and a
later run settles it. Witnesses: the sandbox record (one POST per phone, ever) and the
journal (every row decided or still `unknown`, none lost).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from dialer.config import load_campaign
from dialer.model import Status
from dialer.run import RunOptions, RunResult, run_campaign
from dialer.store.claims import Claims
from dialer.store.pgurl import schema_name
from dialer.store.postgres import PgJournal
from dialer.transitions import lookup_backoff
from tests.conftest import in_thread, posts, write_leads
from tests.test_campaign import ALL_DAY, KEY, numbered_leads
from tests.test_journal import _import, _lead
from tests.test_postgres import pg_campaign

# Two leads, each POST's answer lost (the sandbox drops the connection once the call is
# placed): each row is `unknown` and must be looked up. No backoff between tries (a 0 base):
# the next run may look a row up at once, so nothing here waits on the clock.
CAMPAIGN = f"""mode = "call"
[call]
model_id = "m-1"
[limits]
rate_per_second = 10
concurrency = 1
backoff_base_seconds = 0
claim_lease_seconds = 30
{ALL_DAY}"""

# Long enough for two runs of two rows on a loaded machine; only ever reached when they hang
# (and well inside the test's own timeout, so a hang is reported with what the runs held).
HANG = 45.0


class Lookups:
    """The API's look-ups (GET /v2/calls?lead_phone_number=...), switched down and up by the
    test; every other request goes to the sandbox. `made`: (run, phone) of each look-up."""

    def __init__(self, fail_first: int = 0) -> None:
        """`fail_first`: that many look-ups fail, whether `down` is set or not."""
        self.down = threading.Event()
        self.made: list[tuple[str, str]] = []
        self._fail_first = fail_first
        self._lock = threading.Lock()

    def transport(self, run: str) -> httpx.AsyncBaseTransport:
        return _Flaky(self, run)

    def fails(self, run: str, phone: str) -> bool:
        """One look-up made: True if it is to fail."""
        with self._lock:
            self.made.append((run, phone))
            return self.down.is_set() or len(self.made) <= self._fail_first


class _Flaky(httpx.AsyncBaseTransport):
    """One run's transport (its own connections, on its own loop)."""

    def __init__(self, lookups: Lookups, run: str) -> None:
        self._lookups = lookups
        self._run = run
        self._inner = httpx.AsyncHTTPTransport()
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        phone = request.url.params.get("lead_phone_number")
        looked_up = request.method == "GET" and request.url.path == "/v2/calls" and phone is not None
        if looked_up and self._lookups.fails(self._run, str(phone)):
            return httpx.Response(503, json={"detail": "look-ups are down"})
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        if not self._closed:  # the client's lanes share this transport: each closes it
            self._closed = True
            await self._inner.aclose()


@pytest.fixture
def one_row_each(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each run claims one due row in all (as two runs starting at the same moment may each
    take one): run A holds one row and run B the other, whatever their timing. Rows left
    `unknown` still come through `claim_orphans`, untouched."""
    claim = Claims.claim_dialable
    taken: dict[int, int] = {}

    def one(self: Claims, limit: int) -> list[int]:
        if taken.get(id(self)):
            return []
        ids = claim(self, 1)
        taken[id(self)] = len(ids)
        return ids

    monkeypatch.setattr(Claims, "claim_dialable", one)


def _claims(url: str) -> list[tuple[str, str | None, float | None]]:
    """(status, claimed_by, claim_until) of each lead, in file order."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{schema_name("t")}"'.encode())
        rows = conn.execute("SELECT status, claimed_by, claim_until FROM leads ORDER BY position").fetchall()
    return [(str(r[0]), r[1], r[2]) for r in rows]


def _both(run: Callable[[str], RunResult], url: str, lookups: Lookups) -> tuple[RunResult, RunResult]:
    """Runs A and B at once; their results. Runs that have not ended by HANG are freed by hand
    (look-ups up, every claim and live-call slot let go: then they end) and the test fails,
    saying what the runs held."""
    (a, a_result), (b, b_result) = in_thread(lambda: run("A")), in_thread(lambda: run("B"))
    deadline = time.monotonic() + HANG
    for thread in (a, b):
        thread.join(max(0.0, deadline - time.monotonic()))
    if a.is_alive() or b.is_alive():
        stuck = _claims(url)
        lookups.down.clear()
        with psycopg.connect(url, autocommit=True) as conn:
            slots = conn.execute("SELECT holder, lead_id, call_id FROM dialer_shared.live_slots").fetchall()
            conn.execute("DELETE FROM dialer_shared.live_slots")
            conn.execute(f'SET search_path TO "{schema_name("t")}"'.encode())
            conn.execute("UPDATE leads SET claimed_by = NULL, claim_until = NULL")
        a.join(HANG / 2)
        b.join(HANG / 2)
        pytest.fail(f"the two runs waited on each other: leads {stuck}, live-call slots {slots}")
    results = []
    for result in (a_result, b_result):
        assert len(result) == 1 and isinstance(result[0], RunResult), result
        results.append(result[0])
    return results[0], results[1]


def test_two_runs_whose_look_ups_fail_give_their_rows_back_and_a_later_run_settles_them(
    tmp_path: Path, sandbox: Any, pg_url: str, one_row_each: None
) -> None:
    server = sandbox(api_key=KEY, drop_rate=1.0)
    write_leads(tmp_path / "leads.csv", numbered_leads(2))
    config = load_campaign(pg_campaign(tmp_path, pg_url, CAMPAIGN))
    lookups = Lookups()
    lookups.down.set()

    def run(name: str) -> RunResult:
        return run_campaign(
            config, RunOptions(api_key=KEY, base_url=server.url, transport=lookups.transport(name))
        )

    # A and B each take one row, send it (the answer lost), and cannot look it up. Before,
    # each then held its row to the end and waited for the other's: neither ever ended.
    for result in _both(run, pg_url, lookups):
        assert result.exit_code == 75 and result.counts == {"unknown": 2}, result.counts
    # Each row was looked up once by each run: the run that could not settle it gave it
    # back, the other looked it up in turn (and neither again).
    phones = sorted({phone for _, phone in lookups.made})
    assert len(phones) == 2
    assert sorted(lookups.made) == sorted((r, p) for r in ("A", "B") for p in phones), lookups.made
    # Given back: still `unknown` (nothing lost, nothing decided), held by no run.
    assert [(status, holder) for status, holder, _ in _claims(pg_url)] == [("unknown", None)] * 2

    # Look-ups work again: a later run finds both calls and sends nothing.
    lookups.down.clear()
    later = run("C")
    assert later.exit_code == 0 and later.counts == {"sent": 2}, later.counts
    sent = [p["body"]["phone"] for p in posts(server.record)]
    assert sorted(sent) == phones  # one POST per phone, ever
    journal = PgJournal(pg_url, "t")
    try:
        rows = [journal.row(i) for i in (1, 2)]
    finally:
        journal.close()
    assert all(r.status == Status.SENT and r.call_id and r.attempts == 1 for r in rows), rows


def test_the_live_call_slot_goes_with_the_row_so_the_run_that_settles_it_frees_it(
    tmp_path: Path, sandbox: Any, pg_url: str, one_row_each: None
) -> None:
    """One live call at a time for the campaign's runs together. The first run's POST loses
    its answer and its look-up fails (the only one that does): the row goes back, and its
    slot (its call may be live) with it, so the other run's look-up of the row finds the
    call, takes the slot over and frees it when the call ends, and dials its own row.
    Before, the slot stayed the first run's while it lived: full for ever, the other run
    waited for it, and the first run for the other's row."""
    server = sandbox(api_key=KEY, drop_rate=1.0)
    write_leads(tmp_path / "leads.csv", numbered_leads(2))
    body = CAMPAIGN.replace("concurrency = 1\n", "concurrency = 1\nmax_live_calls = 1\n")
    config = load_campaign(pg_campaign(tmp_path, pg_url, body))
    # The first look-up is the first run's: the other cannot POST (no slot) before it.
    lookups = Lookups(fail_first=1)

    def run(name: str) -> RunResult:
        return run_campaign(
            config, RunOptions(api_key=KEY, base_url=server.url, transport=lookups.transport(name))
        )

    for result in _both(run, pg_url, lookups):
        assert result.exit_code == 0 and result.counts == {"sent": 2}, result.counts
    first, *others = lookups.made
    assert [run for run, _ in others] == [other for other in "AB" if other != first[0]] * 2, lookups.made
    sent = [p["body"]["phone"] for p in posts(server.record)]
    assert len(sent) == len(set(sent)) == 2  # one POST per phone
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM dialer_shared.live_slots").fetchone() == (0,)


@pytest.fixture
def journal(pg_url: str) -> Iterator[PgJournal]:
    opened = PgJournal(pg_url, "c")
    _import(opened, [_lead(2, "Ann", "+12125550101"), _lead(3, "Bob", "+12125550102")], "a")
    opened.conn.execute("UPDATE leads SET status = 'unknown' WHERE id = 1")  # Ann's may have left
    yield opened
    opened.close()


def _give_back(journal: PgJournal, row_id: int, after: float) -> None:
    """A failed look-up's give-back, committed by the run's writer."""

    async def commit() -> None:
        writer = journal.writer()
        await writer.commit([journal.claims(30.0).give_back(row_id, after)])
        await writer.close()

    asyncio.run(commit())


def _rows_waited_for(claims: Claims) -> int:
    held = claims.held_by_others()
    return 0 if held is None else held[0]


def test_a_row_given_back_waits_its_backoff_then_goes_to_another_run_never_back_to_its_own(
    journal: PgJournal, pg_url: str
) -> None:
    mine = journal.claims(30.0)
    assert mine.claim_orphans() == [1]
    _give_back(journal, 1, 3600.0)
    assert journal.conn.execute("SELECT status, claimed_by FROM leads WHERE id = 1").fetchone() == (
        "unknown",
        None,
    )
    other_journal = PgJournal(pg_url, "c")
    try:
        other = other_journal.claims(30.0)
        # Within its backoff nobody takes it, and the other run waits for it: a row to
        # settle, not one gone.
        assert other.claim_orphans() == []
        assert other.claim_dialable(1) == [2]  # Bob's: the given-back row is all that is left
        held = other.held_by_others()
        assert held is not None and held[0] == 1 and held[1] > 3000
        # The run that gave it back neither takes it again nor waits for it (only for Bob's
        # row, the other run's): it leaves it to another run or a later one, as a SQLite
        # run leaves it to the next.
        assert _rows_waited_for(mine) == 1
        journal.conn.execute("UPDATE leads SET claim_until = 0 WHERE id = 1")  # the backoff over
        assert mine.claim_orphans() == []
        assert _rows_waited_for(mine) == 1
        assert other.claim_orphans() == [1]
    finally:
        other_journal.close()


def test_a_row_another_run_took_over_is_not_given_back_by_the_run_that_lost_it(journal: PgJournal) -> None:
    stalled = journal.claims(30.0)
    assert stalled.claim_orphans() == [1]
    # The run stalled past its lease; another run took the row over to look it up.
    journal.conn.execute("UPDATE leads SET claimed_by = 'run-b', claim_until = 1e12 WHERE id = 1")
    _give_back(journal, 1, 0.0)
    found = journal.conn.execute("SELECT claimed_by, claim_until FROM leads WHERE id = 1").fetchone()
    assert found == ("run-b", 1e12)


def test_the_backoff_doubles_with_each_failed_look_up_up_to_its_cap() -> None:
    assert [lookup_backoff(n, 1.0, 60.0) for n in (1, 2, 3, 7, 8, 10_000)] == [1, 2, 4, 60, 60, 60]
    assert lookup_backoff(5, 0.0, 60.0) == 0.0


def test_on_sqlite_a_failed_look_up_still_leaves_the_row_to_the_next_run(
    tmp_path: Path, sandbox: Any
) -> None:
    """One run at a time there (the campaign's lock): nothing is given back, the row stays
    `unknown` to the run's end (exit 75), and the next run looks it up."""
    server = sandbox(api_key=KEY, drop_rate=1.0)
    write_leads(tmp_path / "leads.csv", numbered_leads(2))
    toml = tmp_path / "t.toml"
    toml.write_text('name = "t"\nleads = "leads.csv"\n' + CAMPAIGN)
    config = load_campaign(toml)
    lookups = Lookups()
    lookups.down.set()
    first = run_campaign(
        config, RunOptions(api_key=KEY, base_url=server.url, transport=lookups.transport("A"))
    )
    assert first.exit_code == 75 and first.counts == {"unknown": 2}
    assert len(lookups.made) == 2  # each row looked up once, not again in the same run
    lookups.down.clear()
    second = run_campaign(
        config, RunOptions(api_key=KEY, base_url=server.url, transport=lookups.transport("B"))
    )
    assert second.exit_code == 0 and second.counts == {"sent": 2}
    assert len(posts(server.record)) == 2  # found, not sent again
