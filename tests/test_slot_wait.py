"""A run never waits for ever for a live-call slot nothing can free while it runs.

A shared live-call limit (a PostgreSQL campaign's `[limits] max_live_calls`, the account's
`[account] max_live_calls`) counts a slot for each POST from before it leaves until its call
ends. A POST whose answer is lost keeps its slot (the call may be live) until a look-up
decides the lead; a look-up that fails leaves the lead `unknown`, and this run never looks it
up again (a later run does). With the limit full of such slots, the run's next POST waited
for ever, silently: one lone run, limit 1, its first answer lost and its look-up failing,
was still waiting after 40 s on both stores. Now the run stops taking rows, says why in one
line, and ends as a run with rows left does (exit 75, the rows as the journal has them); the
slot stays held (its call may be live) until a later run's look-up decides the lead. Never
over the limit, nobody called twice: the sandbox record is the witness.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest
from structlog.testing import capture_logs

from dialer.config import Campaign, load_campaign
from dialer.run import RunOptions, RunResult, run_campaign
from dialer.store import liveslots
from dialer.store.liveslots import SharedLiveSlots
from tests.conftest import in_thread, posts, write_leads
from tests.stores import Store
from tests.test_campaign import KEY, numbered_leads
from tests.test_journal import _import, _lead
from tests.test_live_shared import Slots, account_campaign
from tests.test_pg_lookup_wait import CAMPAIGN, Lookups
from tests.test_postgres import pg_campaign

# Only ever reached when the run waits for a slot it cannot get (a good run takes a second
# or two): then the slots are freed by hand, so the run ends, and the test fails.
HANG = 30.0


def _campaign(
    tmp_path: Path, kind: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> tuple[Campaign, Any]:
    """Limit 1, shared: the account's on SQLite (its file under tmp_path), the campaign's own
    on PostgreSQL. And how to free every slot by hand."""
    if kind == "sqlite":
        accounts = tmp_path / "accounts"
        monkeypatch.setenv("DIALER_ACCOUNTS_DIR", str(accounts))
        toml = tmp_path / "t.toml"
        toml.write_text(
            'name = "t"\nleads = "leads.csv"\n' + CAMPAIGN + '[account]\nname = "acme"\nmax_live_calls = 1\n'
        )

        def free() -> None:
            conn = sqlite3.connect(accounts / "acme.sqlite")
            with conn:
                conn.execute("DELETE FROM live_slots")
            conn.close()

        return load_campaign(toml), free
    url: str = request.getfixturevalue("pg_url")
    body = CAMPAIGN.replace("claim_lease_seconds = 30", "claim_lease_seconds = 30\nmax_live_calls = 1")

    def free_pg() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DELETE FROM dialer_shared.live_slots")

    return load_campaign(pg_campaign(tmp_path, url, body)), free_pg


def _run_within(run: Any, free: Any) -> RunResult:
    """The run's result, if it ends by HANG; else the slots are freed by hand and the test fails."""
    thread, results = in_thread(run)
    thread.join(HANG)
    if thread.is_alive():
        free()
        thread.join(HANG)
        pytest.fail(f"the run still waited for a live-call slot after {HANG:.0f} s")
    assert len(results) == 1 and isinstance(results[0], RunResult), results
    return results[0]


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_lone_run_whose_look_up_fails_with_the_limit_full_ends_instead_of_waiting_for_ever(
    tmp_path: Path, sandbox: Any, kind: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = sandbox(api_key=KEY, drop_rate=1.0)  # every POST's answer lost, its call placed
    write_leads(tmp_path / "leads.csv", numbered_leads(2))
    config, free = _campaign(tmp_path, kind, request, monkeypatch)
    lookups = Lookups()
    lookups.down.set()

    def run(name: str) -> RunResult:
        return run_campaign(
            config, RunOptions(api_key=KEY, base_url=server.url, transport=lookups.transport(name))
        )

    with capture_logs() as logs:
        first = _run_within(lambda: run("A"), free)
    # The first row's call may be live: its slot stays held, so the second row is not sent.
    assert first.exit_code == 75 and first.counts == {"unknown": 1, "pending": 1}, first.counts
    assert len(posts(server.record)) == 1
    assert len(lookups.made) == 1  # looked up once, not again in the same run
    said = [e for e in logs if e["event"] == "run.no_live_slot"]
    assert len(said) == 1, [e["event"] for e in logs]
    assert "look-up" in said[0]["reason"] and said[0]["slots"] == 1

    # Look-ups work again: the next run finds the first call, then dials the second row.
    lookups.down.clear()
    second = _run_within(lambda: run("B"), free)
    assert second.exit_code == 0 and second.counts == {"sent": 2}, second.counts
    sent = [p["body"]["phone"] for p in posts(server.record)]
    assert len(sent) == len(set(sent)) == 2  # one POST per phone, ever


# -- the rule, on the slots themselves ----------------------------------------------------


def _gate(store: Store, campaign: Campaign) -> SharedLiveSlots:
    gate = store.open("c").live_slots(campaign)
    assert isinstance(gate, SharedLiveSlots)
    return gate


@pytest.fixture
def slots(store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Slots:
    monkeypatch.setenv("DIALER_ACCOUNTS_DIR", str(tmp_path / "accounts"))
    return Slots(store, tmp_path / "accounts")


def test_a_full_limit_is_given_up_only_when_what_fills_it_cannot_be_freed_while_the_run_waits(
    store: Store, slots: Slots, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two slots of two: whatever another live run holds, whatever this run has in hand (a
    POST in flight, a look-up under way, a call it follows) may be freed, and the take waits;
    only slots of leads nobody can settle now (their look-up failed in this run) fill it for
    good. Every look at a full limit judges it here (no clock to wait on)."""
    monkeypatch.setattr(liveslots, "JUDGE_EVERY", 0.0)
    _import(store.open("c"), [_lead(i + 2, f"L{i}", f"+1212555{i:04d}") for i in range(4)], "x")
    campaign = account_campaign(tmp_path, max_live=2)
    in_hand = {1, 2, 3}

    async def scenario() -> None:
        mine, other = _gate(store, campaign), _gate(store, campaign)
        mine.watch_unsettled(lambda lead: lead in in_hand, lambda why: None)
        try:
            # Lead 1 in this run's hands (its POST in flight), lead 2 another live run's.
            assert await mine.try_take(1) and await other.try_take(2)
            assert not await mine.try_take(3) and mine.no_room is None
            other.give_back(2)
            mine.placed(1, "call-1")  # a call this run follows: it ends some time
            await other.settled()
            await mine.settled()
            assert await mine.try_take(2)
            in_hand.discard(2)  # lead 2's answer was lost and its look-up failed
            assert not await mine.try_take(3) and mine.no_room is None
            # Its run died: its slot lapsed, its lead `unknown` in the journal (the call
            # may be live), and nobody has it in hand: it stays held, and fills the limit
            # with lead 2's for good.
            mine.ended(1, "call-1")
            await mine.settled()
            assert await other.try_take(3)
            in_hand.discard(3)
            store.execute("UPDATE leads SET status = 'unknown' WHERE id = 3")
            slots.execute(
                "UPDATE dialer_shared.live_slots SET lease_until = lease_until - 1000 WHERE lead_id = 3"
            )
            assert not await mine.try_take(4)
            assert mine.no_room == liveslots.NoRoom("account:acme", 2, 2)
            assert sorted(slots.held()) == [2, 3]  # held still: their calls may be live
            # Lead 3 in this run's hands again (a look-up under way): the take waits for it.
            in_hand.add(3)
            assert not await mine.try_take(4) and mine.no_room is None
        finally:
            await mine.close()
            await other.close()

    asyncio.run(scenario())
