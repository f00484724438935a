"""The journal: imports matched by content, durable group commits, the lock, the schema's version.

Tests taking `store` run twice, on a real SQLite file and on a real PostgreSQL
server (tests/pg.py): one suite, both stores.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dialer import store as j
from dialer.columns import ColumnMap
from dialer.errors import JournalError, LockedError
from dialer.model import Lead, Status
from dialer.store import CampaignLock, Journal, JournalStore, JournalWriter
from tests.stores import Store

COLUMNS = ColumnMap(phone="Phone", name=("Name",), timezone=None, email=None, variables=())
HEADERS = ["Name", "Phone"]


def _lead(row: int, name: str, phone: str, status: str = "pending", error: str = "") -> Lead:
    return Lead(
        row=row,
        values=(name, phone),
        status=Status(status),
        error=error,
        phone=phone,
        name=name,
        timezones=("America/New_York",),
    )


def _import(journal: JournalStore, leads: list[Lead], sha: str) -> j.ImportSummary:
    return journal.import_leads(HEADERS, COLUMNS, leads, {"size": 1, "mtime_ns": 1, "sha256": sha})


def test_first_import_keeps_every_row_in_order(store: Store) -> None:
    journal = store.open()
    summary = _import(
        journal,
        [_lead(2, "Ann", "+12125550101"), _lead(3, "Bob", "", "invalid", "missing phone number")],
        "a",
    )
    assert (summary.added, summary.first_import) == (2, True)
    rows = list(journal.report_rows())
    assert [values for values, _ in rows] == [["Ann", "+12125550101"], ["Bob", ""]]
    assert [o.status for _, o in rows] == ["pending", "invalid"]
    assert journal.counts() == {"pending": 1, "invalid": 1}
    if isinstance(journal, Journal):
        mode = journal.conn.execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"


def test_a_changed_file_is_matched_by_content(store: Store) -> None:
    journal = store.open()
    _import(
        journal,
        [_lead(2, "Ann", "+12125550101"), _lead(3, "Bob", "+12125550102"), _lead(4, "Cy", "+12125550103")],
        "a",
    )
    store.execute("UPDATE leads SET status = 'sent', call_id = 'c-ann' WHERE name = 'Ann'")
    # New order, Bob's name corrected (same number), Cy gone, Dee new, Eve new with Ann's number.
    summary = _import(
        journal,
        [
            _lead(2, "Dee", "+12125550104"),
            _lead(3, "Ann", "+12125550101"),
            _lead(4, "Robert", "+12125550102"),
            _lead(5, "Eve", "+12125550101"),
        ],
        "b",
    )
    assert (summary.added, summary.matched, summary.removed) == (2, 2, 1)
    rows = {values[0]: outcome for values, outcome in journal.report_rows()}
    assert list(rows) == ["Dee", "Ann", "Robert", "Eve"]
    assert rows["Ann"].status == "sent" and rows["Ann"].id == "c-ann"
    assert rows["Robert"].status == "pending"
    assert rows["Eve"].status == "duplicate"
    assert rows["Eve"].error == "same number as row 3"
    assert journal.count_removed() == 1


def test_a_journal_of_another_campaign_is_refused(tmp_path: Path) -> None:
    Journal(tmp_path / "c.sqlite", "spring").close()
    with pytest.raises(JournalError, match="belongs to campaign 'spring'"):
        Journal(tmp_path / "c.sqlite", "autumn")


def test_campaigns_in_one_database_keep_their_rows_apart(pg_url: str) -> None:
    from dialer.store.postgres import PgJournal

    spring, autumn = PgJournal(pg_url, "spring"), PgJournal(pg_url, "autumn")
    _import(spring, [_lead(2, "Ann", "+12125550101")], "a")
    _import(autumn, [_lead(2, "Bob", "+12125550102"), _lead(3, "Cy", "+12125550103")], "b")
    assert (spring.counts(), autumn.counts()) == ({"pending": 1}, {"pending": 2})
    again = PgJournal(pg_url, "spring")
    assert [v for v, _ in again.report_rows()] == [["Ann", "+12125550101"]]
    for journal in (spring, autumn, again):
        journal.close()


def test_group_commits_are_durable_and_fewer_than_the_writes(store: Store) -> None:
    journal = store.open()
    _import(journal, [_lead(i + 2, f"L{i}", f"+1212555{i:04d}") for i in range(200)], "a")
    ids = [row.id for row in journal.rows_with_status({Status.PENDING})]

    async def go() -> int:
        writer = journal.writer()
        await asyncio.gather(*(writer.commit(j.intent(i, "+14155550100", "2026-11-21")) for i in ids))
        await asyncio.gather(*(writer.commit(j.outcome(i, Status.SENT, call_id=f"c{i}")) for i in ids))
        await writer.close()
        return writer.commits

    commits = asyncio.run(go())
    # Each gather's writes are queued in one loop turn: one transaction (one fsync) for each.
    assert commits == 2
    # A second connection (another process, after a crash) sees every write.
    assert store.scalar("SELECT count(*) FROM leads WHERE status = 'sent'") == 200
    assert store.scalar("SELECT sum(attempts) FROM leads") == 200
    assert store.scalar("SELECT calls FROM number_usage") == 200


def test_restore_undoes_an_intent(store: Store) -> None:
    journal = store.open()
    _import(journal, [_lead(2, "Ann", "+12125550101")], "a")
    row = next(journal.rows_with_status({Status.PENDING}))

    async def go() -> None:
        writer = journal.writer()
        await writer.commit(j.intent(row.id, "+14155550100", "2026-11-21"))
        await writer.commit(j.restore(row, "+14155550100", "2026-11-21"))
        await writer.close()

    asyncio.run(go())
    again = journal.row(row.id)
    assert (again.status, again.attempts, again.from_number) == ("pending", 0, "")
    assert journal.number_usage() == {("+14155550100", "2026-11-21"): 0}


def test_the_lock_excludes_a_second_run_and_dies_with_its_holder(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    with CampaignLock(path), pytest.raises(LockedError, match="another run"):
        CampaignLock(path).acquire()
    # A holder killed with SIGKILL leaves the file behind but never blocks the next run.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from dialer.store import CampaignLock;"
            f"CampaignLock(Path({str(path)!r})).acquire(); print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    with pytest.raises(LockedError):
        CampaignLock(path).acquire()
    holder.kill()
    holder.communicate()  # reaps it and closes its pipe
    with CampaignLock(path):
        pass


def test_the_lock_is_the_journals_whatever_the_path_names_it(tmp_path: Path) -> None:
    """A symlink, a path through `..` and a hard link name one journal: one lock (issue 10).
    Held by another process, as a second run would be."""
    (tmp_path / "out").mkdir()
    path = tmp_path / "out" / "c.sqlite"
    Journal(path, "c").close()
    (tmp_path / "link.sqlite").symlink_to(path)
    os.link(path, tmp_path / "hard.sqlite")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from dialer.store import CampaignLock;"
            f"CampaignLock(Path({str(path)!r})).acquire(); print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        for other in ("link.sqlite", "out/../out/c.sqlite", "hard.sqlite"):
            with pytest.raises(LockedError, match="another run"):
                CampaignLock(tmp_path / other).acquire()
    finally:
        holder.kill()
        holder.communicate()  # reaps it and closes its pipe
    with CampaignLock(tmp_path / "hard.sqlite"):
        pass


def test_a_slow_disk_commits_in_a_thread_with_the_same_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.sqlite"
    journal = Journal(path, "c")
    _import(journal, [_lead(i + 2, f"L{i}", f"+1212555{i:04d}") for i in range(50)], "a")
    ids = [row.id for row in journal.rows_with_status({Status.PENDING})]

    threads: list[int] = []
    to_thread = asyncio.to_thread

    async def spy(func: Callable[..., Any], /, *args: Any) -> Any:
        def run() -> Any:
            threads.append(threading.get_ident())
            return func(*args)

        return await to_thread(run)

    monkeypatch.setattr(asyncio, "to_thread", spy)

    async def go() -> JournalWriter:
        # Any commit counts as slow: every group goes to a thread.
        writer = JournalWriter(path, slow_commit=-1.0)
        for half in (ids[:25], ids[25:]):
            await asyncio.gather(*(writer.commit(j.outcome(i, Status.SENT, call_id=f"c{i}")) for i in half))
        await writer.close()
        return writer

    writer = asyncio.run(go())
    assert journal.counts() == {"sent": 50}
    assert writer.commits == writer.threaded_commits == len(threads) == 2
    assert threading.get_ident() not in threads


def test_two_new_rows_with_one_old_number_never_lose_a_row(store: Store) -> None:
    journal = store.open()
    _import(journal, [_lead(2, "Ann", "+12125550101"), _lead(3, "Bob", "+12125550102")], "a")
    store.execute("UPDATE leads SET status = 'sent' WHERE name = 'Ann'")
    # Ann's row edited, and a second row with her number added: both must stay in the report.
    _import(
        journal,
        [
            _lead(2, "Ann Smith", "+12125550101"),
            _lead(3, "Bob", "+12125550102"),
            _lead(4, "Ann (work)", "+12125550101"),
        ],
        "b",
    )
    rows = [(values[0], outcome.status) for values, outcome in journal.report_rows()]
    assert rows == [("Ann Smith", "sent"), ("Bob", "pending"), ("Ann (work)", "duplicate")]


# -- the schema's version: older journals migrated in place, newer ones refused ------------

V1 = Path(__file__).parent / "data" / "journal-v1" / "journal-v1.sqlite"


def _copy_v1(tmp_path: Path) -> Path:
    target = tmp_path / "journal-v1.sqlite"
    target.write_bytes(V1.read_bytes())
    return target


def _columns(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [r[1] for r in conn.execute("PRAGMA table_info(leads)")]
    finally:
        conn.close()


def test_a_journal_of_schema_1_is_migrated_in_place_and_keeps_every_row(tmp_path: Path) -> None:
    path = _copy_v1(tmp_path)
    conn = sqlite3.connect(path)
    before = conn.execute(
        "SELECT id, position, phone, status, attempts, call_id, error FROM leads"
    ).fetchall()
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == ("1",)
    conn.close()
    assert "unanswered" not in _columns(path)

    journal = Journal(path, "v1")
    assert journal.get_meta("schema") == str(j.SCHEMA_VERSION) == "8"
    rows = journal.conn.execute(
        "SELECT id, position, phone, status, attempts, call_id, error FROM leads"
    ).fetchall()
    assert rows == before
    assert {journal.row(r[0]).unanswered for r in rows} == {0}
    journal.close()
    # Opened again: nothing left to do, nothing done.
    Journal(path, "v1").close()
    assert _columns(path).count("unanswered") == 1


def test_a_failed_migration_leaves_the_journal_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _copy_v1(tmp_path)
    from dialer.store import migrations

    steps = {1: (*migrations.STEPS[1], "ALTER TABLE no_such_table ADD COLUMN x")}
    monkeypatch.setattr(migrations, "STEPS", steps)
    with pytest.raises(JournalError, match="cannot open the journal"):
        Journal(path, "v1")
    assert "unanswered" not in _columns(path)  # the first step was rolled back with the second
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == ("1",)
    conn.close()


def test_a_journal_from_a_newer_dialer_is_refused_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    Journal(path, "c").close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema'")
    conn.commit()
    conn.close()
    with pytest.raises(JournalError) as caught:
        Journal(path, "c")
    assert str(caught.value) == (
        f"{path}: written by a newer dialer (journal schema 99; this one knows up to {j.SCHEMA_VERSION});"
        " upgrade dialer to continue this campaign"
    )


def test_a_new_journal_is_written_at_the_current_version(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "c.sqlite", "c")
    assert journal.get_meta("schema") == str(j.SCHEMA_VERSION)
    assert "unanswered" in _columns(tmp_path / "c.sqlite")
    journal.close()


def test_a_postgresql_journal_from_a_newer_dialer_is_refused_with_one_line(store: Store) -> None:
    store.open().close()
    store.execute("UPDATE meta SET value = '99' WHERE key = 'schema'")
    with pytest.raises(
        JournalError,
        match=rf"written by a newer dialer \(journal schema 99; this one knows up to {j.SCHEMA_VERSION}\)",
    ):
        store.open()


def test_the_store_is_created_at_the_current_version_and_opened_again_untouched(store: Store) -> None:
    journal = store.open()
    assert journal.get_meta("schema") == str(j.SCHEMA_VERSION)
    _import(journal, [_lead(2, "Ann", "+12125550101")], "a")
    journal.close()
    again = store.open()
    assert (again.get_meta("schema"), again.counts()) == (str(j.SCHEMA_VERSION), {"pending": 1})


def test_whole_table_transitions(store: Store) -> None:
    journal = store.open()
    _import(
        journal,
        [_lead(2, "Ann", "+12125550101"), _lead(3, "Bob", "+12125550102"), _lead(4, "Cy", "+12125550103")],
        "a",
    )
    assert journal.suppress({"+12125550102": "dnc.csv"}) == 1
    store.execute("UPDATE leads SET status = 'failed' WHERE name = 'Cy'")
    assert journal.requeue(Status.FAILED, "again") == 1
    assert journal.zone_sets({Status.PENDING}) == {("America/New_York",): 2}
    assert journal.defer_dialable("capped") == 2
    rows = {values[0]: (o.status, o.error) for values, o in journal.report_rows()}
    assert rows == {
        "Ann": ("deferred", "capped"),
        "Bob": ("suppressed", "on the do-not-call list dnc.csv"),
        "Cy": ("deferred", "capped"),
    }
    assert [r.name for r in journal.rows_with_status({Status.DEFERRED}, batch=1)] == ["Ann", "Cy"]


def _schema_2(tmp_path: Path) -> Path:
    """A journal as the dialer of schema 2 left it: the v1 fixture with step 1 applied."""
    from dialer.store import migrations

    path = _copy_v1(tmp_path)
    conn = sqlite3.connect(path)
    for statement in migrations.STEPS[1]:
        conn.execute(statement)
    conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema'")
    conn.commit()
    conn.close()
    return path


def _tables_and_indexes(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {
            name
            for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'index')")
        }
    finally:
        conn.close()


def test_a_journal_of_schema_2_gains_the_calls_table_with_its_sent_rows_as_calls_never_followed(
    tmp_path: Path,
) -> None:
    path = _schema_2(tmp_path)
    assert "calls" not in _tables_and_indexes(path)
    conn = sqlite3.connect(path)
    leads_before = conn.execute("SELECT * FROM leads ORDER BY id").fetchall()
    sent = conn.execute(
        "SELECT call_id, id, from_number, intent_at FROM leads WHERE status = 'sent' ORDER BY id"
    ).fetchall()
    conn.close()
    assert len(sent) == 3 and all(call_id for call_id, *_ in sent)  # the fixture is what it says

    journal = Journal(path, "v1")
    assert journal.get_meta("schema") == str(j.SCHEMA_VERSION)
    journal.close()

    assert {"calls", "calls_lead", "calls_live", "calls_outcome"} <= _tables_and_indexes(path)
    conn = sqlite3.connect(path)
    # Every column as it was (later steps add columns at the end: the state column's text).
    after = conn.execute("SELECT * FROM leads ORDER BY id").fetchall()
    assert [row[: len(leads_before[0])] for row in after] == leads_before
    calls = conn.execute(
        "SELECT call_id, lead_id, from_number, placed_at, ordinal, status, final, timed_out, ended_at,"
        " duration, end_reason, recording_url, collected FROM calls ORDER BY lead_id"
    ).fetchall()
    conn.close()
    # Each sent row's call, never followed by the old dialer: given up, no status, no end time,
    # so it is never polled, never waited for, and stays out of the pick-up rate.
    assert calls == [(*row, 1, "", 1, 1, None, None, "", "", "{}") for row in sent]
    Journal(path, "v1").close()  # opened again: nothing left to do


def test_a_failed_migration_to_schema_4_leaves_a_schema_2_journal_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _schema_2(tmp_path)
    from dialer.store import migrations

    monkeypatch.setattr(
        migrations, "STEPS", {**migrations.STEPS, 3: (*migrations.STEPS[3], "SELECT nope FROM calls")}
    )
    with pytest.raises(JournalError, match="cannot open the journal"):
        Journal(path, "v1")
    assert "calls" not in _tables_and_indexes(path)
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() == ("2",)
    conn.close()


def test_a_new_journal_has_the_calls_table_and_its_indexes(tmp_path: Path) -> None:
    Journal(tmp_path / "c.sqlite", "c").close()
    assert {"calls", "calls_lead", "calls_live", "calls_outcome"} <= _tables_and_indexes(
        tmp_path / "c.sqlite"
    )


# -- one number, one row: the intent claims the number (issue 10) -------------------------


def _status(journal: JournalStore, row_id: int) -> tuple[str, str, int]:
    row = journal.row(row_id)
    return row.status, row.error, row.attempts


def test_an_intent_for_a_number_another_row_claimed_is_refused_in_its_transaction(store: Store) -> None:
    """Whatever let two rows hold one number (here a write behind the import's back), the
    second intent is refused: the row becomes `duplicate` naming the caller, nothing sent,
    the caller id's day count untouched; the first row may still be dialed again (a redial)."""
    journal = store.open()
    _import(journal, [_lead(2, "Ann", "+12125550101"), _lead(3, "Bob", "+12125550102")], "a")
    store.execute("UPDATE leads SET phone = '+12125550101' WHERE id = 2")

    async def go() -> list[BaseException | None]:
        writer = journal.writer()
        results: list[BaseException | None] = []
        for row_id in (1, 2, 1):
            try:
                await writer.commit(j.intent(row_id, "+14155550100", "2026-12-01"))
                results.append(None)
            except j.NumberTaken as exc:
                results.append(exc)
        await writer.close()
        return results

    first, second, again = asyncio.run(go())
    assert first is None and again is None
    assert isinstance(second, j.NumberTaken) and second.row_id == 2
    assert _status(journal, 1) == ("unknown", "", 2)
    assert _status(journal, 2) == ("duplicate", "same number as row 2", 0)
    assert store.rows("SELECT phone, lead_id FROM called") == [("+12125550101", 1)]
    assert journal.number_usage() == {("+14155550100", "2026-12-01"): 2}
    journal.close()


def test_a_refused_intent_leaves_the_rest_of_its_group_committed(store: Store) -> None:
    """Intents gathered in one transaction: the refused one is skipped alone."""
    journal = store.open()
    leads = [_lead(2, "Ann", "+12125550101"), _lead(3, "Bob", "+12125550102"), _lead(4, "Cy", "+12125550103")]
    _import(journal, leads, "a")
    store.execute("UPDATE leads SET phone = '+12125550101' WHERE id = 2")

    async def go() -> list[Any]:
        writer = journal.writer()
        results = await asyncio.gather(
            *(writer.commit(j.intent(row_id, "", None)) for row_id in (1, 2, 3)), return_exceptions=True
        )
        commits = writer.commits
        await writer.close()
        return [*results, commits]

    first, second, third, commits = asyncio.run(go())
    assert (first, third, commits) == (None, None, 1)
    assert isinstance(second, j.NumberTaken)
    assert [_status(journal, i)[0] for i in (1, 2, 3)] == ["unknown", "duplicate", "unknown"]
    journal.close()


def test_migration_2_to_3_gives_each_called_number_to_its_first_caller(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    journal = Journal(path, "c")
    leads = [_lead(2, "Ann", "+12125550101"), _lead(3, "Bob", "+12125550102"), _lead(4, "Cy", "+12125550103")]
    _import(journal, leads, "a")
    conn = journal.conn
    conn.execute("UPDATE leads SET status = 'sent', attempts = 1 WHERE id = 1")
    conn.execute("UPDATE leads SET status = 'failed', attempts = 4 WHERE id = 2")
    # As a version-2 journal: no `called` table (nor what later versions add).
    conn.execute("DROP TABLE called")
    conn.execute("DROP TABLE dials")
    conn.execute("ALTER TABLE leads DROP COLUMN state")
    conn.execute("ALTER TABLE leads DROP COLUMN redial_at")
    conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema'")
    journal.close()
    journal = Journal(path, "c")
    assert journal.conn.execute("SELECT phone, lead_id FROM called ORDER BY lead_id").fetchall() == [
        ("+12125550101", 1),
        ("+12125550102", 2),
    ]
    journal.close()


# -- the disk full mid-run: one line, the journal as after a crash (issue 10) -------------


def test_a_full_disk_at_a_commit_is_one_line_and_rolls_back_only_that_group(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    journal = Journal(path, "c")
    _import(journal, [_lead(2, "Ann", "+12125550101"), _lead(3, "Bob", "+12125550102")], "a")
    commits = [0]

    def fault() -> None:
        commits[0] += 1
        if commits[0] == 2:
            raise sqlite3.OperationalError("database or disk is full")

    async def go() -> BaseException | None:
        writer = JournalWriter(path, fault=fault)
        await writer.commit(j.intent(1, "", None))
        try:
            await writer.commit(j.intent(2, "", None))
        except JournalError as exc:
            await writer.commit(j.intent(2, "", None))  # the disk freed: the next commit lands
            await writer.close()
            return exc
        return None

    error = asyncio.run(go())
    assert isinstance(error, JournalError) and error.exit_code == 1
    assert str(error).startswith(f"{path}: cannot write the journal: the disk is full; the dialer stopped.")
    assert "\n" not in str(error)
    assert [_status(journal, i) for i in (1, 2)] == [("unknown", "", 1), ("unknown", "", 1)]
    journal.close()


def test_an_intent_after_another_run_took_the_row_is_refused_and_changes_nothing(pg_url: str) -> None:
    """Run A's lease ran out and run B claimed the row: A's intent must not apply (ClaimLost)."""
    from dialer.store.claims import ClaimLost
    from dialer.store.postgres import PgJournal

    first, second = PgJournal(pg_url, "c"), PgJournal(pg_url, "c")
    _import(first, [_lead(2, "Ann", "+12125550101")], "a")
    lapsing = first.claims(lease_seconds=-1.0)  # a lease already run out: A stalled, say
    assert lapsing.claim_dialable(5) == [1]
    assert second.claims(lease_seconds=30.0).claim_dialable(5) == [1]  # B takes the row over

    async def go(journal: PgJournal) -> BaseException | None:
        writer = journal.writer()
        try:
            await writer.commit(j.intent(1, "+14155550100", "2026-12-01"))
        except ClaimLost as exc:
            return exc
        finally:
            await writer.close()
        return None

    assert isinstance(asyncio.run(go(first)), ClaimLost)
    assert _status(first, 1) == ("pending", "", 0) and first.number_usage() == {}
    assert asyncio.run(go(second)) is None  # the holder's intent applies
    assert _status(second, 1) == ("unknown", "", 1)
    first.close()
    second.close()


def _state_lead(row: int, name: str, phone: str, state: str) -> Lead:
    lead = _lead(row, name, phone)
    return Lead(**{**{f: getattr(lead, f) for f in lead.__dataclass_fields__}, "state": state})


def test_calls_are_placed_once_followed_to_their_end_and_reported(store: Store) -> None:
    """main's calls table through the store: placed (twice is once), live, seen, figures, report."""
    from dialer.model import CallOutcome

    journal = store.open()
    _import(journal, [_lead(2, "Ann", "+12125550101"), _lead(3, "Bob", "+12125550102")], "a")

    async def go(batches: list[list[j.Write]]) -> None:
        writer = journal.writer()
        for writes in batches:
            await writer.commit(writes)
        await writer.close()

    placed = []
    for row_id, call_id in ((1, "c-ann"), (2, "c-bob")):
        placed.append(j.intent(row_id, "+14155550100", "2026-12-01", at=1000.0 + row_id))
        placed.append(j.outcome(row_id, Status.SENT, call_id=call_id) + j.calls.placed(row_id, 5.0))
    placed.append(j.calls.placed(1, 9.0))  # the same call found again by a look-up
    asyncio.run(go(placed))
    live = journal.live_calls()
    assert [(c.call_id, c.lead_id, c.placed_at, c.status) for c in live] == [
        ("c-ann", 1, 1001.0, ""),
        ("c-bob", 2, 1002.0, ""),
    ]
    ended = CallOutcome("c-ann", "completed", 42.0, "hangup", "https://rec/1", {"city": "Oslo"})
    asyncio.run(
        go(
            [
                j.calls.seen(ended, final=True, at=1100.0),
                j.calls.seen(CallOutcome("c-bob", "in-progress"), final=False),
            ]
        )
    )
    assert [(c.call_id, c.status) for c in journal.live_calls()] == [("c-bob", "in-progress")]
    figures = journal.call_figures()
    assert (dict(figures.by_status), figures.live, figures.timed_out) == ({"completed": 1}, 1, 0)
    assert figures.pick_up_rate == 1.0
    assert journal.collected_names() == ["city"]
    rows = [o for _, o in journal.report_rows()]
    assert [(o.call_status, o.end_reason, o.duration, o.calls, o.collected) for o in rows] == [
        ("completed", "hangup", 42.0, 1, {"city": "Oslo"}),
        ("in-progress", "", None, 1, {}),
    ]
    assert store.scalar("SELECT count(*) FROM calls") == 2


def test_dials_count_every_intent_and_a_restore_takes_its_own_back(store: Store) -> None:
    """main's dials table through the store: dials_since, dialable_dials_since, law_groups."""
    journal = store.open()
    _import(
        journal,
        [
            _state_lead(2, "Ann", "+12125550101", "NY"),
            _state_lead(3, "Bob", "+12125550102", ""),
            _state_lead(4, "Cy", "+447700900123", "FL"),
        ],
        "a",
    )
    assert journal.law_groups({Status.PENDING}) == {
        (("America/New_York",), "212", "NY"): 1,
        (("America/New_York",), "212", ""): 1,
        (("America/New_York",), "", "FL"): 1,
    }

    async def go(batches: list[list[j.Write]]) -> None:
        writer = journal.writer()
        for writes in batches:
            await writer.commit(writes)
        await writer.close()

    bob = journal.row(2)  # as the sender held it before its intent
    asyncio.run(
        go(
            [
                j.intent(1, "", None, at=100.0, dialed_at=500.0),
                j.outcome(1, Status.PENDING),  # dialed, and dialable again (a re-dial due)
                j.intent(2, "", None, at=200.0),
            ]
        )
    )
    assert sorted(journal.dials_since("+12125550101", 0.0)) == [500.0]
    assert journal.dials_since("+12125550101", 500.0) == []
    assert journal.dialable_dials_since(0.0) == {("+12125550101", ("America/New_York",), "NY"): [500.0]}
    # Bob's intent was never sent: restored, it does not count towards the cap.
    asyncio.run(go([j.restore(bob, "", None)]))
    assert journal.dials_since("+12125550102", 0.0) == []
    assert store.scalar("SELECT count(*) FROM dials") == 1


def test_redials_opt_outs_and_their_figures_through_the_store(store: Store) -> None:
    """[redial]'s writes and reads through the store: redial_at, placed_count,
    recent_by_caller, redials_waiting, and the by-attempt and waiting parts of call_figures."""
    from dialer.model import CallOutcome

    journal = store.open()
    leads = [_lead(2, "Ann", "+12125550101"), _lead(3, "Bob", "+12125550102"), _lead(4, "Cy", "+12125550103")]
    _import(journal, leads, "a")

    async def go(batches: list[list[j.Write]]) -> None:
        writer = journal.writer()
        for writes in batches:
            await writer.commit(writes)
        await writer.close()

    def call(row_id: int, call_id: str, at: float) -> list[list[j.Write]]:
        return [
            j.intent(row_id, "+14155550100", "2026-12-01", at=at),
            j.outcome(row_id, Status.SENT, call_id=call_id) + j.calls.placed(row_id, 5.0),
        ]

    asyncio.run(go([*call(1, "c-ann", 1001.0), *call(2, "c-bob", 1002.0)]))
    assert (journal.placed_count(1), journal.placed_count(3)) == (1, 0)
    asyncio.run(
        go(
            [
                j.calls.seen(CallOutcome("c-ann", "no-answer"), final=True, at=1100.0)
                + j.calls.redial(1, "c-ann", 5000.0, "no-answer: redial due"),
                j.calls.seen(CallOutcome("c-bob", "completed", 42.0), final=True, at=1100.0)
                + j.calls.opted_out(2, "c-bob", "asked not to be called", cancel=True),
                j.calls.redial(2, "c-bob", 5000.0, "too late: the row is no longer sent"),
            ]
        )
    )
    ann, bob = journal.row(1), journal.row(2)
    assert (ann.status, ann.redial_at, ann.error) == (Status.DEFERRED, 5000.0, "no-answer: redial due")
    assert (bob.status, bob.redial_at, bob.error) == (Status.SUPPRESSED, None, "asked not to be called")
    assert [row.redial_at for row in journal.rows_with_status({Status.DEFERRED})] == [5000.0]
    assert journal.recent_by_caller(0.0) == {"+14155550100": [("completed", 42.0), ("no-answer", None)]}
    assert journal.recent_by_caller(1001.5) == {"+14155550100": [("completed", 42.0)]}
    assert journal.redials_waiting(4000.0) == [("+12125550101", ("America/New_York",), "", 5000.0)]
    assert journal.redials_waiting(5000.0) == []
    figures = journal.call_figures(4000.0)
    assert (figures.by_attempt, figures.redials_waiting, figures.next_redial) == ({1: (1, 2)}, 1, 5000.0)
    assert figures.pick_up_rate_of(1) == 0.5 and figures.pick_up_rate_of(2) is None
    due = journal.call_figures(6000.0)
    assert (due.redials_waiting, due.next_redial) == (0, None)
    # The redial, once due: the lead's second call, counted as its second attempt.
    asyncio.run(
        go(
            [
                *call(1, "c-ann-2", 6001.0),
                j.calls.seen(CallOutcome("c-ann-2", "completed"), final=True, at=6100.0),
            ]
        )
    )
    assert journal.placed_count(1) == 2
    assert journal.call_figures(6000.0).by_attempt == {1: (1, 2), 2: (1, 1)}
    assert store.scalar("SELECT ordinal FROM calls WHERE call_id = 'c-ann-2'") == 2


def test_dialer_migrate_copies_redial_at(tmp_path: Path, pg_url: str) -> None:
    """A redial waiting in a SQLite journal is still waiting, for the same moment, on PostgreSQL."""
    from dialer.store.moving import copy_to_postgres
    from dialer.store.postgres import PgJournal

    path = tmp_path / "c.sqlite"
    journal = Journal(path, "moved")
    _import(journal, [_lead(2, "Ann", "+12125550101"), _lead(3, "Bob", "+12125550102")], "a")
    with journal.conn:
        journal.conn.execute("UPDATE leads SET status = 'deferred', redial_at = 5000.5 WHERE id = 1")
    journal.close()
    copy_to_postgres(path, "moved", pg_url)
    moved = PgJournal(pg_url, "moved")
    try:
        assert [(r.id, r.redial_at) for r in moved.rows_with_status({Status.DEFERRED, Status.PENDING})] == [
            (1, 5000.5),
            (2, None),
        ]
        assert moved.redials_waiting(0.0) == [("+12125550101", ("America/New_York",), "", 5000.5)]
    finally:
        moved.close()


def test_a_postgresql_journal_at_schema_4_gains_the_state_column_and_the_dials(pg_url: str) -> None:
    """PG_STEPS 4 -> 5 -> 6 -> 7, as migrations.STEPS: the last intent of each row backfilled,
    and [redial]'s redial_at added."""
    import psycopg

    from dialer.store.pgurl import schema_name
    from dialer.store.postgres import PgJournal

    journal = PgJournal(pg_url, "old")
    _import(journal, [_lead(2, "Ann", "+12125550101"), _lead(3, "Bob", "+12125550102")], "a")
    journal.close()
    with psycopg.connect(pg_url) as pg:  # back to what a schema-4 dialer wrote
        pg.execute(f'SET search_path TO "{schema_name("old")}"'.encode())
        pg.execute(b"DROP TABLE dials")
        pg.execute(b"ALTER TABLE leads DROP COLUMN state")
        pg.execute(b"ALTER TABLE leads DROP COLUMN redial_at")
        pg.execute(b"UPDATE leads SET intent_at = 700.0, attempts = 1 WHERE id = 1")
        pg.execute(b"UPDATE meta SET value = '4' WHERE key = 'schema'")
    journal = PgJournal(pg_url, "old")
    try:
        assert journal.get_meta("schema") == str(j.SCHEMA_VERSION)
        assert journal.dials_since("+12125550101", 0.0) == [700.0]
        assert [row.state for row in journal.rows_with_status({Status.PENDING})] == ["", ""]
        assert [row.redial_at for row in journal.rows_with_status({Status.PENDING})] == [None, None]
    finally:
        journal.close()
