"""Attacks on the PostgreSQL journal: two runs interleaved by hand, and whole runs killed.

Two `PgJournal`s on one database are two runs (two connections, two claim owners). A
run whose lease ran out while it stalled, and whose row another run took over, must not
write over the newer state: every write to a lead or call row is either guarded (only
the holder; only a forward transition, in the same statement) or harmless by construction.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from dialer import store as j
from dialer.config import load_campaign
from dialer.model import CallOutcome, Status
from dialer.run import campaign_status
from dialer.store.claims import ClaimLost, Claims
from dialer.store.pgurl import schema_name
from dialer.store.postgres import PgJournal
from tests.conftest import posts, write_leads
from tests.pg import PASSWORD, PG_BIN, PgServer, _as_owner
from tests.test_campaign import ALL_DAY, KEY, numbered_leads
from tests.test_journal import _import, _lead, _status
from tests.test_postgres import _finish, _start, pg_campaign

ANN, BOB = "+12125550101", "+12125550102"
CALLER, DAY = "+14155550100", "2026-12-01"


@pytest.fixture
def runs(pg_url: str) -> Iterator[tuple[PgJournal, PgJournal]]:
    """Run A and run B on one campaign; A's claims lapse at once (it stalled past its lease)."""
    first, second = PgJournal(pg_url, "c"), PgJournal(pg_url, "c")
    _import(first, [_lead(2, "Ann", ANN), _lead(3, "Bob", BOB)], "a")
    first.claims(lease_seconds=-1.0)
    second.claims(lease_seconds=30.0)
    yield first, second
    first.close()
    second.close()


def _claims(journal: PgJournal) -> Claims:
    claims = journal._claims
    assert claims is not None
    return claims


def commit(journal: PgJournal, *groups: list[j.Write]) -> list[BaseException | None]:
    """Each group committed through the run's writer (a commit of its own), what each raised."""

    async def go() -> list[BaseException | None]:
        writer = journal.writer()
        raised: list[BaseException | None] = []
        for writes in groups:
            try:
                await writer.commit(writes)
                raised.append(None)
            except (ClaimLost, j.NumberTaken) as exc:
                raised.append(exc)
        await writer.close()
        return raised

    return asyncio.run(go())


def _lookup_takes_over(first: PgJournal, second: PgJournal) -> None:
    """A claimed row 1 and committed its intent, then stalled; its lease ran out and B took
    the `unknown` row over to look it up, and found A's call."""
    assert _claims(first).claim_dialable(1) == [1]
    assert commit(first, j.intent(1, CALLER, DAY)) == [None]
    assert _claims(second).claim_orphans() == [1]
    commit(second, j.outcome(1, Status.SENT, call_id="c-found") + j.calls.placed(1, 5.0))


def test_a_stalled_runs_late_answer_does_not_overwrite_the_look_up_of_the_run_that_took_over(
    runs: tuple[PgJournal, PgJournal],
) -> None:
    first, second = runs
    _lookup_takes_over(first, second)
    # A wakes up with an answer for its request: the row is B's now, A's write is dropped.
    assert commit(first, j.outcome(1, Status.FAILED, error="late") + j.calls.placed(1, 6.0)) == [None]
    assert _status(second, 1) == ("sent", "", 1)
    assert second.row(1).call_id == "c-found"
    assert [c.call_id for c in second.live_calls()] == ["c-found"]


def test_a_stalled_runs_restore_does_not_make_a_row_another_run_sent_dialable_again(
    runs: tuple[PgJournal, PgJournal],
) -> None:
    first, second = runs
    before = first.row(1)  # the row as A read it, before its intent
    _lookup_takes_over(first, second)
    # A decides its request never left (a stop, a refused key) and puts the row back as it
    # was before its intent: pending, dialable again, a second call to Ann.
    assert commit(first, j.restore(before, CALLER, DAY)) == [None]
    assert _status(second, 1) == ("sent", "", 1)
    assert second.dials_since(ANN, 0.0)  # the dial still counts towards the 24-hour cap
    assert second.number_usage() == {(CALLER, DAY): 1}


def test_a_stalled_runs_deferrals_skip_only_the_rows_it_lost(runs: tuple[PgJournal, PgJournal]) -> None:
    first, second = runs
    assert _claims(first).claim_dialable(2) == [1, 2]  # both outside their hours: to be deferred
    assert _claims(second).claim_dialable(1) == [1]  # A's lease ran out: B takes row 1 and dials it
    assert commit(second, j.intent(1, CALLER, DAY)) == [None]
    deferrals = j.outcome(1, Status.DEFERRED, error="closed") + j.outcome(2, Status.DEFERRED, error="closed")
    assert commit(first, deferrals) == [None]  # one group for both rows, as the feeder sends them
    assert _status(second, 1) == ("unknown", "", 1)  # B's request may be out: never dialable again
    assert _status(second, 2) == ("deferred", "closed", 0)  # A still holds row 2


def test_an_intent_after_another_runs_start_suppressed_the_row_is_refused(
    runs: tuple[PgJournal, PgJournal],
) -> None:
    first, second = runs
    _claims(first).lease = 30.0
    assert _claims(first).claim_dialable(1) == [1]  # A read row 1 as pending...
    assert second.suppress({ANN: "dnc.csv"}) == 1  # ...then B started with a new do-not-call list
    assert isinstance(commit(first, j.intent(1, CALLER, DAY))[0], ClaimLost)
    assert _status(second, 1) == ("suppressed", "on the do-not-call list dnc.csv", 0)
    assert second.dials_since(ANN, 0.0) == [] and second.number_usage() == {}


def test_a_run_does_not_take_over_its_own_unknown_rows_for_a_second_look_up(
    runs: tuple[PgJournal, PgJournal],
) -> None:
    first, second = runs
    assert _claims(first).claim_dialable(1) == [1]
    assert commit(first, j.intent(1, CALLER, DAY)) == [None]  # its request in flight, lease run out
    assert _claims(first).claim_orphans() == []  # its own: already in its hands
    assert _claims(second).claim_orphans() == [1]  # another run's to look up


def test_an_intent_renews_its_rows_lease(runs: tuple[PgJournal, PgJournal], pg_url: str) -> None:
    first, second = runs
    _claims(second).claim_dialable(1)
    second.conn.execute("UPDATE leads SET claim_until = extract(epoch from now()) + 1 WHERE id = 1")
    assert commit(second, j.intent(1, CALLER, DAY)) == [None]
    left = second.conn.execute("SELECT claim_until - extract(epoch from now()) FROM leads WHERE id = 1")
    found = left.fetchone()
    assert found is not None and float(str(found[0])) > 25  # the request leaves with a whole lease ahead


def _placed(journal: PgJournal) -> None:
    """Row 1 sent with call c-1, live (B's, and followed by A too: A adopted it)."""
    assert _claims(journal).claim_dialable(1) == [1]
    commit(
        journal, j.intent(1, CALLER, DAY), j.outcome(1, Status.SENT, call_id="c-1") + j.calls.placed(1, 1.0)
    )


def test_a_late_poll_of_a_call_another_run_saw_end_changes_nothing(runs: tuple[PgJournal, PgJournal]) -> None:
    first, second = runs
    _placed(second)
    ended = CallOutcome("c-1", "busy", 3.0, "busy", "", {})
    # B sees the call end busy and decides a redial; A's poll from before, still ringing, lands after.
    commit(second, j.calls.seen(ended, final=True, at=10.0) + j.calls.redial(1, "c-1", 99.0, "busy"))
    commit(first, j.calls.seen(CallOutcome("c-1", "in-progress"), final=False))
    # And A gives the call up (its clock ran past give_up_after): the row's redial stands.
    commit(
        first,
        j.calls.seen(CallOutcome("c-1", "in-progress"), final=True, timed_out=True, at=11.0)
        + j.calls.ended(1, "c-1", Status.SENT, "the call never ended"),
    )
    row = second.conn.execute("SELECT status, final, timed_out, ended_at FROM calls").fetchall()
    assert row == [("busy", 1, 0, 10.0)]
    assert _status(second, 1) == ("deferred", "busy", 1)


def test_a_failed_calls_outcome_leaves_a_lead_already_dialed_again_alone(
    runs: tuple[PgJournal, PgJournal],
) -> None:
    first, second = runs
    _placed(second)
    # B redials the lead (call c-2 now its latest); A's follower, late, sees c-1 end failed.
    commit(second, j.outcome(1, Status.SENT, call_id="c-2") + j.calls.placed(1, 2.0))
    commit(first, j.calls.ended(1, "c-1", Status.FAILED, "call ended failed"))
    assert _status(second, 1) == ("sent", "", 1)
    assert second.row(1).call_id == "c-2"


def test_retry_unknown_leaves_the_rows_another_live_run_has_in_flight(
    runs: tuple[PgJournal, PgJournal],
) -> None:
    first, second = runs
    for row_id in (1, 2):
        assert _claims(second).claim_dialable(1) == [row_id]
        assert commit(second, j.intent(row_id, CALLER, DAY)) == [None]
    _claims(second).release()  # B ended with row 2 unsettled; row 1 it claims again: in flight
    second.conn.execute(
        "UPDATE leads SET claimed_by = %s, claim_until = 1e12 WHERE id = 1", (_claims(second).owner,)
    )
    assert first.requeue(Status.UNKNOWN, "retried") == 1  # `dialer run --retry-unknown` starting
    assert [_status(first, i)[0] for i in (1, 2)] == ["unknown", "pending"]


def test_a_run_knows_when_a_stall_outlasted_a_rows_lease(pg_url: str) -> None:
    """Claims.fresh(row): what the sender asks right before a request leaves. A stopped
    process woken after its lease may renew its leases first thing: that renews only the
    rows still its own, so a row whose lease ran out before stays stale for good."""
    journal = PgJournal(pg_url, "c")
    _import(journal, [_lead(2, "Ann", ANN), _lead(3, "Bob", BOB)], "a")
    now = [100.0]
    claims = Claims(journal.conn, 3.0, clock=lambda: now[0])
    assert claims.claim_dialable(2) == [1, 2]
    claims.intended(1, 100.0)  # its intent's commit started at 100
    now[0] = 102.0
    claims.intended(2, 102.0)
    assert claims.fresh(1) and claims.fresh(2)
    now[0] = 103.5  # stopped from 102.9 to 103.5: row 1's lease may have run out, row 2's not;
    # meanwhile (the database's clock ran on) another run took row 1 over.
    journal.conn.execute("UPDATE leads SET claimed_by = 'run-b' WHERE id = 1")
    assert not claims.fresh(1) and claims.fresh(2)
    renewal = claims.renewal()  # the first thing the woken run does
    journal.conn.execute(renewal.sql.replace("?", "%s").encode(), renewal.params)
    claims.renewed()
    assert not claims.fresh(1)  # stale, and the database says it is another run's
    assert claims.fresh(2)
    now[0] = 106.4
    assert claims.fresh(2)  # renewed from 103.5: sure until 106.5
    now[0] = 110.0  # a renewal late on a loaded host: row 2 is still this run's, the
    assert claims.fresh(2)  # database says so and renews its lease in the same statement
    journal.conn.execute("UPDATE leads SET claimed_by = 'run-b' WHERE id = 2")
    claims.settled(2)  # its outcome written: a next request comes with a next intent
    assert not claims.fresh(2)
    journal.close()


# -- whole runs attacked: kill -9 at each phase, the database restarted, the wrong database --

SHARED = f"""mode = "call"
[call]
model_id = "m-1"
[limits]
rate_per_second = 10
concurrency = 4
settle_after_seconds = 1
claim_lease_seconds = 3
{ALL_DAY}"""


def _db(url: str, statement: str) -> Any:
    """One value, read over a connection of its own (the runs are other processes)."""
    with psycopg.connect(url) as conn:
        conn.execute(f'SET search_path TO "{schema_name("t")}"'.encode())
        try:
            row = conn.execute(statement.encode()).fetchone()
        except psycopg.errors.UndefinedTable:
            return 0  # the victim has not made its schema yet
        return None if row is None else row[0]


def _until(condition: Callable[[], bool], what: str, timeout: float = 90.0) -> None:
    """Wait for another process's progress (not timing the code under test)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"never saw: {what}"
        time.sleep(0.02)


def _claimed(url: str, record: Path) -> bool:
    return bool(_db(url, "SELECT count(*) FROM leads WHERE claimed_by IS NOT NULL"))


def _intent(url: str, record: Path) -> bool:
    return bool(_db(url, "SELECT count(*) FROM leads WHERE status = 'unknown'"))


def _posted(url: str, record: Path) -> bool:
    return len(posts(record)) >= 3  # answers 1.5 s late: their ids not written yet


def _following(url: str, record: Path) -> bool:
    return len(posts(record)) >= 8 and bool(_db(url, "SELECT count(*) FROM calls WHERE final = 0"))


def _reporting(url: str, record: Path) -> bool:
    # Every call seen to end: the run is on to its last steps (release, summary, report).
    return bool(_db(url, "SELECT count(*) FROM calls WHERE final = 1") == 8)


PHASES: dict[str, tuple[Callable[[str, Path], bool], dict[str, Any]]] = {
    "claiming": (_claimed, {}),
    "between intent and POST": (_intent, {"latency_ms": 300}),
    "after POST, before its id is written": (_posted, {"latency_ms": 1500}),
    "following its calls": (_following, {"call_seconds": (3.0, 3.0)}),
    "during its final report": (_reporting, {"call_seconds": (0.5, 0.5)}),
}


@pytest.mark.parametrize("phase", list(PHASES))
def test_a_run_killed_at_any_phase_loses_and_repeats_nothing(
    phase: str, tmp_path: Path, sandbox_process: Any, pg_url: str
) -> None:
    reached, sandbox_options = PHASES[phase]
    server = sandbox_process(**sandbox_options)
    write_leads(tmp_path / "leads.csv", numbered_leads(8))
    toml = pg_campaign(tmp_path, pg_url, SHARED)
    victim, _ = _start(toml, server.url)
    try:
        _until(lambda: reached(pg_url, server.record), phase)
    finally:
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    results = [_finish(run) for run in [_start(toml, server.url) for _ in range(2)]]
    assert [code for code, _ in results] == [0, 0], [out[-2000:] for _, out in results]
    phones = [p["body"]["phone"] for p in posts(server.record) if p["status"] == 200]
    assert len(phones) == len(set(phones)) == 8  # nothing repeated, nothing lost
    found = campaign_status(load_campaign(toml))
    assert found is not None and found.counts == {"sent": 8}


def test_a_run_stalled_past_its_lease_sends_nothing_late(
    tmp_path: Path, sandbox_process: Any, pg_url: str
) -> None:
    """SIGSTOP with requests on their way, past the lease and the look-up grace: the others
    take its rows over; woken, it must not send what it held, nor write over their outcomes."""
    server = sandbox_process(latency_ms=400)
    write_leads(tmp_path / "leads.csv", numbered_leads(40))
    toml = pg_campaign(tmp_path, pg_url, SHARED)
    victim = _start(toml, server.url)
    _until(lambda: len(posts(server.record)) >= 5, "the victim sending")
    victim[0].send_signal(signal.SIGSTOP)
    try:
        others = [_finish(run) for run in [_start(toml, server.url) for _ in range(2)]]
    finally:
        victim[0].send_signal(signal.SIGCONT)
    code, output = _finish(victim)
    assert [c for c, _ in others] == [0, 0], [out[-2000:] for _, out in others]
    assert code in (0, 75), output[-2000:]
    phones = [p["body"]["phone"] for p in posts(server.record) if p["status"] == 200]
    assert len(phones) == len(set(phones)) == 40
    found = campaign_status(load_campaign(toml))
    assert found is not None and found.counts == {"sent": 40}


def _pg_ctl(server: PgServer, *args: str) -> None:
    """pg_ctl on the session's server, as the user it runs as (root may not run it)."""
    command = [str(PG_BIN / "pg_ctl"), "-D", str(server.folder / "data"), "-l", str(server.folder / "log")]
    owner = "postgres" if os.geteuid() == 0 else None
    # No pipes: the server started anew inherits them, and would hold them open for good.
    subprocess.run(
        _as_owner([*command, *args], owner),
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=60,
    )


def test_the_database_restarting_mid_run_is_one_line_and_exit_1_and_a_rerun_finishes(
    tmp_path: Path, sandbox_process: Any, pg_server: PgServer
) -> None:
    """The journal is the run's memory: without it no outcome can be made durable, so the
    run stops (exit 1, one line naming the journal) rather than send on; the rows it had in
    flight stay `unknown` and the next run looks them up."""
    url = pg_server.new_database()
    server = sandbox_process(latency_ms=200)
    write_leads(tmp_path / "leads.csv", numbered_leads(40))
    toml = pg_campaign(tmp_path, url, SHARED)
    output = tmp_path / "run.err"
    with output.open("w") as sink:
        run = subprocess.Popen(
            [sys.executable, "-m", "dialer", "run", str(toml), "--base-url", server.url],
            stdout=subprocess.DEVNULL,
            stderr=sink,
            env={**os.environ, "SYNTHFLOW_API_KEY": KEY},
        )
    try:
        _until(lambda: len(posts(server.record)) >= 10, "the run sending")
        _pg_ctl(pg_server, "-m", "fast", "-w", "restart")
        code = run.wait(timeout=120)
    finally:
        run.kill()
        run.wait()
    said = output.read_text()
    assert code == 1, said
    lines = [line for line in said.splitlines() if line.startswith("dialer:")]
    assert "Traceback" not in said, said[-3000:]
    assert len(lines) == 1 and "cannot" in lines[0], said[-3000:]
    assert PASSWORD not in said
    again = _finish(_start(toml, server.url))
    assert again[0] == 0, again[1][-2000:]
    phones = [p["body"]["phone"] for p in posts(server.record) if p["status"] == 200]
    assert len(phones) == len(set(phones)) == 40


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _not_ours(pg_server: PgServer) -> str:
    """A database where the campaign's schema holds someone else's tables."""
    url = pg_server.new_database()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema_name("t")}"'.encode())
        conn.execute(f'CREATE TABLE "{schema_name("t")}".leads (customer TEXT)'.encode())
    return url


WRONG_DATABASES: dict[str, Callable[[PgServer, str], str]] = {
    "a wrong password": lambda pg, _: pg.new_database().replace(PASSWORD, "wrong-" + PASSWORD),
    "no server at the port": lambda pg, _: pg.url().replace(f":{pg.port}/", f":{_free_port()}/"),
    "not a PostgreSQL server": lambda pg, http: pg.url().replace(
        f"127.0.0.1:{pg.port}", http.removeprefix("http://")
    ),
    "a schema that is not ours": lambda pg, _: _not_ours(pg),
}


@pytest.mark.parametrize("wrong", list(WRONG_DATABASES))
def test_a_journal_database_it_cannot_use_is_one_line_and_nothing_is_sent(
    wrong: str, tmp_path: Path, sandbox_process: Any, pg_server: PgServer
) -> None:
    server = sandbox_process()
    write_leads(tmp_path / "leads.csv", numbered_leads(3))
    toml = pg_campaign(tmp_path, WRONG_DATABASES[wrong](pg_server, server.url), SHARED)
    done = subprocess.run(
        [sys.executable, "-m", "dialer", "run", str(toml), "--base-url", server.url],
        capture_output=True,
        text=True,
        env={**os.environ, "SYNTHFLOW_API_KEY": KEY},
        timeout=120,
    )
    said = done.stdout + done.stderr
    assert done.returncode == 1, said
    assert "Traceback" not in said and PASSWORD not in said
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("dialer: postgresql://dialer_test"), said
    assert posts(server.record) == []


def test_two_runs_whose_commits_cross_on_caller_ids_both_commit(pg_url: str) -> None:
    """Run A's group counts caller N then M, run B's M then N (the day counts are rows both
    update): PostgreSQL finds the deadlock and aborts one of the two transactions. Aborted
    whole, it is committed again, rather than stopping that run with `cannot write`."""
    first, second = PgJournal(pg_url, "c"), PgJournal(pg_url, "c")
    phones = [f"+1212555010{i}" for i in range(1, 5)]
    _import(first, [_lead(i + 2, f"L{i}", phone) for i, phone in enumerate(phones)], "a")
    first.claims(30.0).claim_dialable(2)
    second.claims(30.0).claim_dialable(2)
    n, m = "+14155550100", "+14155550111"
    with psycopg.connect(pg_url) as holder:  # holds rows 2 and 4 until both runs hold one count each
        holder.execute(f'SET search_path TO "{schema_name("c")}"'.encode())
        holder.execute("SELECT id FROM leads WHERE id IN (2, 4) FOR UPDATE")

        async def both() -> list[BaseException | None]:
            writers = [first.writer(), second.writer()]
            commits = [
                asyncio.ensure_future(writers[0].commit(j.intent(1, n, DAY) + j.intent(2, m, DAY))),
                asyncio.ensure_future(writers[1].commit(j.intent(3, m, DAY) + j.intent(4, n, DAY))),
            ]
            await asyncio.sleep(0.5)  # both wait on the held rows now, N and M taken
            await asyncio.to_thread(holder.commit)
            raised = await asyncio.gather(*commits, return_exceptions=True)
            for writer in writers:
                await writer.close()
            return [r if isinstance(r, BaseException) else None for r in raised]

        assert asyncio.run(both()) == [None, None]
    assert [_status(first, i)[0] for i in (1, 2, 3, 4)] == ["unknown"] * 4
    assert first.number_usage() == {(n, DAY): 2, (m, DAY): 2}
    first.close()
    second.close()
