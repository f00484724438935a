"""Live-call limits shared across runs and campaigns (store/liveslots.py), with the real parts.

The slots themselves over both stores (a PostgreSQL database, the SQLite account file),
then whole runs against the sandbox with calls that live: the record's accepted POSTs and
`call.ended` lines say how many calls were live at every instant, whatever the dialer
believed. A lease "running out" is the lease moved into the past in the table: the rule
judged is the journal's, not the clock's.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from dialer.config import Campaign, load_campaign
from dialer.run import campaign_status
from dialer.sandbox import read_events
from dialer.store.liveslots import SharedLiveSlots
from dialer.store.pgurl import schema_name
from tests.conftest import posts, write_leads
from tests.stores import Store
from tests.test_campaign import ALL_DAY, numbered_leads
from tests.test_campaign import KEY as KEY  # the key sandbox_process serves, and the runs send
from tests.test_journal import _import, _lead
from tests.test_outcomes import most_live
from tests.test_postgres import _finish, _requests, _start, pg_campaign

# -- the slots, over both stores ---------------------------------------------------------


def account_campaign(tmp_path: Path, max_live: int = 3) -> Campaign:
    toml = tmp_path / "slots.toml"
    toml.write_text(
        f'name = "c"\nleads = "leads.csv"\nmode = "call"\n[call]\nmodel_id = "m"\n{ALL_DAY}'
        f'[account]\nname = "acme"\nmax_live_calls = {max_live}\n'
    )
    return load_campaign(toml)


class Slots:
    """The shared tables as another process sees them."""

    def __init__(self, store: Store, accounts: Path) -> None:
        self.store = store
        self.accounts = accounts

    def rows(self, statement: str) -> list[tuple[Any, ...]]:
        if self.store.kind == "sqlite":
            conn = sqlite3.connect(self.accounts / "acme.sqlite")
            try:
                return conn.execute(statement.replace("dialer_shared.", "")).fetchall()
            finally:
                conn.close()
        with psycopg.connect(self.store.url) as pg:
            return pg.execute(statement.encode()).fetchall()

    def execute(self, statement: str) -> None:
        if self.store.kind == "sqlite":
            conn = sqlite3.connect(self.accounts / "acme.sqlite")
            with conn:
                conn.execute(statement.replace("dialer_shared.", ""))
            conn.close()
            return
        with psycopg.connect(self.store.url) as pg:
            pg.execute(statement.encode())

    def held(self) -> dict[int, str | None]:
        """lead -> call of every slot held."""
        return {int(r[0]): r[1] for r in self.rows("SELECT lead_id, call_id FROM dialer_shared.live_slots")}

    def lapse(self) -> None:
        """Every slot's lease runs out (its run stopped renewing it)."""
        self.execute("UPDATE dialer_shared.live_slots SET lease_until = lease_until - 1000")


@pytest.fixture
def slots(store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Slots:
    monkeypatch.setenv("DIALER_ACCOUNTS_DIR", str(tmp_path / "accounts"))
    return Slots(store, tmp_path / "accounts")


def _gate(store: Store, campaign: Campaign) -> SharedLiveSlots:
    journal = store.open("c")
    gate = journal.live_slots(campaign)
    assert isinstance(gate, SharedLiveSlots)
    return gate


def _journal_with_leads(store: Store, n: int) -> None:
    journal = store.open("c")
    _import(journal, [_lead(i + 2, f"L{i}", f"+1212555{i:04d}") for i in range(n)], "x")


def test_runs_share_the_accounts_live_calls_and_a_slot_given_back_is_free(
    store: Store, slots: Slots, tmp_path: Path
) -> None:
    _journal_with_leads(store, 6)
    campaign = account_campaign(tmp_path, max_live=3)

    async def scenario() -> None:
        first, second = _gate(store, campaign), _gate(store, campaign)
        try:
            assert await first.try_take(1) and await first.try_take(2)
            assert await second.try_take(3)
            assert not await second.try_take(4)  # three live between the two runs: full
            assert not await first.try_take(4)
            first.placed(1, "call-1")
            first.give_back(2)  # refused: no call
            await second.take(4)  # the slot given back (the write queued first, then the take)
            assert slots.held() == {1: "call-1", 3: None, 4: None}
            second.ended(1, "call-1")  # any run that sees a call end frees its slot
            await second.take(5)
            assert sorted(slots.held()) == [3, 4, 5]
        finally:
            await first.close()
            await second.close()

    asyncio.run(scenario())
    assert slots.held() == {}  # both ended: no call live, every slot handed back and freed


def test_a_dead_runs_slots_are_freed_by_what_the_journal_says_of_their_calls(
    store: Store, slots: Slots, tmp_path: Path
) -> None:
    _journal_with_leads(store, 7)
    campaign = account_campaign(tmp_path, max_live=4)

    async def take_four() -> None:
        dead = _gate(store, campaign)
        for lead in (1, 2, 3, 4):
            assert await dead.try_take(lead)
        dead.placed(3, "call-3")
        dead.placed(4, "call-4")
        await dead.settled()
        await dead.backend.close()  # kill -9: no hand-over; its leases run on

    asyncio.run(take_four())
    # What the journal shows when it died: lead 1 never left (pending), lead 2's POST may
    # have (unknown), lead 3's call is live, lead 4's call ended.
    store.execute("UPDATE leads SET status = 'unknown' WHERE id = 2")
    store.execute("UPDATE leads SET status = 'sent', call_id = 'call-3' WHERE id = 3")
    store.execute("UPDATE leads SET status = 'sent', call_id = 'call-4' WHERE id = 4")
    store.execute("INSERT INTO calls (call_id, lead_id, ordinal, placed_at) VALUES ('call-3', 3, 1, 0)")
    store.execute(
        "INSERT INTO calls (call_id, lead_id, ordinal, placed_at, final) VALUES ('call-4', 4, 1, 0, 1)"
    )

    async def another_run(lead: int) -> bool:
        gate = _gate(store, campaign)
        try:
            return await gate.try_take(lead)
        finally:
            await gate.backend.close()  # only the take is looked at: no hand-over either

    assert not asyncio.run(another_run(5))  # the leases still run: all four held
    slots.lapse()
    assert asyncio.run(another_run(5))  # lapsed: the slots of leads 1 and 4 freed, one taken
    assert slots.held() == {2: None, 3: "call-3", 5: None}  # lead 2 may be live, call 3 is
    assert asyncio.run(another_run(6))  # full again
    # Lead 2 settled (a look-up found no call), call 3 seen ended: both freed, and so are
    # those of leads 5 and 6, whose runs left them unused.
    store.execute("UPDATE leads SET status = 'pending' WHERE id = 2")
    store.execute("UPDATE calls SET final = 1 WHERE call_id = 'call-3'")
    slots.lapse()
    assert asyncio.run(another_run(7))
    assert slots.held() == {7: None}


def test_a_dead_runs_live_call_without_its_bind_is_held_and_bound_to_the_call(
    store: Store, slots: Slots, tmp_path: Path
) -> None:
    """The run died after the journal committed the call, before the slot learnt it."""
    _journal_with_leads(store, 3)
    campaign = account_campaign(tmp_path, max_live=1)

    async def dead() -> None:
        gate = _gate(store, campaign)
        assert await gate.try_take(1)
        await gate.backend.close()

    asyncio.run(dead())
    store.execute("UPDATE leads SET status = 'sent', call_id = 'call-1' WHERE id = 1")
    store.execute("INSERT INTO calls (call_id, lead_id, ordinal, placed_at) VALUES ('call-1', 1, 1, 0)")
    slots.lapse()

    async def survivor() -> None:
        gate = _gate(store, campaign)
        try:
            assert not await gate.try_take(2)
            assert slots.held() == {1: "call-1"}
            gate.ended(1, "call-1")  # it follows the dead run's call to its end
            await gate.take(2)
        finally:
            await gate.close()

    asyncio.run(survivor())


def test_a_take_a_stop_cancels_leaves_no_slot_behind(store: Store, slots: Slots, tmp_path: Path) -> None:
    _journal_with_leads(store, 3)
    campaign = account_campaign(tmp_path, max_live=1)

    async def scenario() -> None:
        first, second = _gate(store, campaign), _gate(store, campaign)
        try:
            assert await first.try_take(1)
            waiting = asyncio.create_task(second.take(2))
            while not second.waits:  # until it found the limit full
                await asyncio.sleep(0.01)
            waiting.cancel()  # a stop
            with pytest.raises(asyncio.CancelledError):
                await waiting
            first.give_back(1)
            await first.settled()
        finally:
            await first.close()
            await second.close()

    asyncio.run(scenario())
    assert slots.held() == {}


def test_a_concurrency_429_lowers_the_shared_ceiling_for_every_run(
    store: Store, slots: Slots, tmp_path: Path
) -> None:
    _journal_with_leads(store, 5)
    campaign = account_campaign(tmp_path, max_live=4)

    async def scenario() -> None:
        first, second = _gate(store, campaign), _gate(store, campaign)
        try:
            assert await first.try_take(1) and await first.try_take(2)
            first.give_back(2)  # its POST was answered 429 for the account's concurrency
            await first.refused()
            assert slots.rows("SELECT ceiling FROM dialer_shared.live_limits") == [(1,)]
            assert not await second.try_take(3)  # the other run too: one live is the limit now
        finally:
            await first.close()
            await second.close()

    asyncio.run(scenario())


# -- whole runs against the sandbox, the record as the witness --------------------------

LIVE = f"""mode = "call"
[call]
model_id = "m-1"
[limits]
rate_per_second = 20
concurrency = {{concurrency}}
settle_after_seconds = 1
claim_lease_seconds = {{lease}}
{{limits}}
[outcomes]
poll_seconds = 0.1
{ALL_DAY}{{account}}"""


def live_body(*, limits: str = "", account: str = "", lease: float = 3, concurrency: int = 4) -> str:
    return LIVE.format(limits=limits, account=account, lease=lease, concurrency=concurrency)


def accepted_phones(record: Path) -> list[str]:
    return [p["body"]["phone"] for p in posts(record, "/v2/calls") if p["status"] == 200]


ACCOUNT = '[account]\nname = "acme"\nmax_live_calls = 3\n'


def test_two_postgresql_campaigns_on_one_account_never_have_more_live_than_its_limit(
    tmp_path: Path, sandbox_process: Any, pg_url: str
) -> None:
    server = sandbox_process(call_seconds="0.4:0.8", seed=3)
    write_leads(tmp_path / "leads.csv", numbered_leads(16))
    tomls = [pg_campaign(tmp_path, pg_url, live_body(account=ACCOUNT), name=n) for n in ("spring", "autumn")]
    results = [_finish(run) for run in [_start(toml, server.url) for toml in tomls]]
    assert [code for code, _ in results] == [0, 0], [out[-2000:] for _, out in results]
    assert server.record is not None
    assert len(accepted_phones(server.record)) == 32  # each campaign called each lead once
    assert most_live(server.record) <= 3
    assert most_live(server.record) == 3  # and the limit was used, not merely respected


def test_two_sqlite_campaigns_share_the_accounts_live_calls_through_the_account_file(
    tmp_path: Path, sandbox_process: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DIALER_ACCOUNTS_DIR", str(tmp_path / "accounts"))
    server = sandbox_process(call_seconds="0.4:0.8", seed=4)
    write_leads(tmp_path / "leads.csv", numbered_leads(16))
    tomls = []
    for name in ("spring", "autumn"):
        toml = tmp_path / f"{name}.toml"
        toml.write_text(f'name = "{name}"\nleads = "leads.csv"\n' + live_body(account=ACCOUNT))
        tomls.append(toml)
    results = [_finish(run) for run in [_start(toml, server.url) for toml in tomls]]
    assert [code for code, _ in results] == [0, 0], [out[-2000:] for _, out in results]
    assert server.record is not None
    assert len(accepted_phones(server.record)) == 32
    assert most_live(server.record) <= 3
    conn = sqlite3.connect(tmp_path / "accounts" / "acme.sqlite")
    try:
        assert conn.execute("SELECT count(*) FROM live_slots").fetchone() == (0,)  # none leaked
    finally:
        conn.close()


def test_three_runs_of_one_postgresql_campaign_share_its_live_call_limit(
    tmp_path: Path, sandbox_process: Any, pg_url: str
) -> None:
    server = sandbox_process(call_seconds="0.4:0.8", seed=5)
    write_leads(tmp_path / "leads.csv", numbered_leads(30))
    # One lane each: a run claims a few rows at a time (its workers and its queue), so all
    # three get rows to dial at once.
    toml = pg_campaign(tmp_path, pg_url, live_body(limits="max_live_calls = 2", concurrency=1))
    results = [_finish(run) for run in [_start(toml, server.url) for _ in range(3)]]
    assert [code for code, _ in results] == [0, 0, 0], [out[-2000:] for _, out in results]
    assert server.record is not None
    phones = accepted_phones(server.record)
    assert len(phones) == len(set(phones)) == 30
    assert most_live(server.record) <= 2
    assert sum(1 for _, out in results if _requests(out)) >= 2  # they really shared the campaign


def _journal_rows(url: str, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of campaign t's journal, read as another process would ([]: not created yet)."""
    with psycopg.connect(url) as pg:
        pg.execute(f'SET search_path TO "{schema_name("t")}"'.encode())
        try:
            return pg.execute(statement.encode(), params).fetchall()
        except psycopg.errors.UndefinedTable:
            return []


def _owners(url: str) -> set[str]:
    found = _journal_rows(url, "SELECT DISTINCT claimed_by FROM leads WHERE claimed_by IS NOT NULL")
    return {str(r[0]) for r in found}


def _live_calls_of(url: str, owner: str) -> list[str]:
    """The calls the journal shows live on rows `owner` (a run's claims) dialed."""
    found = _journal_rows(
        url,
        "SELECT c.call_id FROM leads l JOIN calls c ON c.call_id = l.call_id"
        " WHERE l.claimed_by = %s AND c.final = 0",
        (owner,),
    )
    return [str(r[0]) for r in found]


def test_a_run_killed_holding_slots_keeps_them_until_its_calls_are_settled(
    tmp_path: Path, sandbox_process: Any, pg_url: str
) -> None:
    """The dead run's calls live far longer than its lease: had the lease freed their
    slots, the survivor would have placed more calls while they were still live. The
    survivor takes the dead run's calls over, follows them to their end, and goes on."""
    server = sandbox_process(call_seconds="2:5", seed=6)
    write_leads(tmp_path / "leads.csv", numbered_leads(12))
    toml = pg_campaign(tmp_path, pg_url, live_body(limits="max_live_calls = 3", lease=1, concurrency=1))
    assert server.record is not None
    deadline = time.monotonic() + 60

    def wait_for(done: Any) -> None:
        while not done() and time.monotonic() < deadline:
            time.sleep(0.05)  # waiting on the processes' progress, not timing the code under test
        assert done(), "the runs never got there"

    # The victim dials five rows at most (--limit): the first run would claim them all else.
    victim = _start(toml, server.url, "--limit", "5")
    wait_for(lambda: _owners(pg_url))
    (victim_owner,) = _owners(pg_url)
    survivor = _start(toml, server.url)
    # Both runs at work, a call of the victim's live, one of the first calls ended.
    wait_for(
        lambda: (
            len(_owners(pg_url)) == 2
            and len(accepted_phones(server.record)) >= 4
            and _live_calls_of(pg_url, victim_owner)
        )
    )
    victim[0].send_signal(signal.SIGKILL)
    victim[0].wait()
    killed_at = time.time()
    live_at_kill = _live_calls_of(pg_url, victim_owner)
    code, output = _finish(survivor)
    assert code == 0, output[-2000:]
    phones = accepted_phones(server.record)
    assert len(phones) == len(set(phones)) == 12  # nothing lost, nothing repeated
    assert most_live(server.record) <= 3
    found = campaign_status(load_campaign(toml))
    assert found is not None and found.counts == {"sent": 12}
    assert found.calls is not None and found.calls.live == 0  # the survivor followed them to their end
    with psycopg.connect(pg_url) as pg:
        assert pg.execute("SELECT count(*) FROM dialer_shared.live_slots").fetchone() == (0,)
    # The witness: the dead run's calls were live after the kill, and ended then.
    ends = {e["call_id"]: e["time"] for e in read_events(server.record)}
    assert len(ends) == 12
    assert live_at_kill and any(ends[call] > killed_at for call in live_at_kill)
