"""The journal: a real SQLite file, imports matched by content, durable group commits, the lock."""

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
from dialer.store import CampaignLock, Journal, JournalWriter

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


def _import(journal: Journal, leads: list[Lead], sha: str) -> j.ImportSummary:
    return journal.import_leads(HEADERS, COLUMNS, leads, {"size": 1, "mtime_ns": 1, "sha256": sha})


def test_first_import_keeps_every_row_in_order(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "c.sqlite", "c")
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
    mode = journal.conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_a_changed_file_is_matched_by_content(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "c.sqlite", "c")
    _import(
        journal,
        [_lead(2, "Ann", "+12125550101"), _lead(3, "Bob", "+12125550102"), _lead(4, "Cy", "+12125550103")],
        "a",
    )
    journal.conn.execute("UPDATE leads SET status = 'sent', call_id = 'c-ann' WHERE name = 'Ann'")
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


def test_group_commits_are_durable_and_fewer_than_the_writes(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    journal = Journal(path, "c")
    _import(journal, [_lead(i + 2, f"L{i}", f"+1212555{i:04d}") for i in range(200)], "a")
    ids = [row.id for row in journal.rows_with_status({Status.PENDING})]

    async def go() -> int:
        writer = JournalWriter(path)
        await asyncio.gather(*(writer.commit(j.intent(i, "+14155550100", "2026-11-21")) for i in ids))
        await asyncio.gather(*(writer.commit(j.outcome(i, Status.SENT, call_id=f"c{i}")) for i in ids))
        await writer.close()
        return writer.commits

    commits = asyncio.run(go())
    # Each gather's writes are queued in one loop turn: one transaction (one fsync) for each.
    assert commits == 2
    # A second connection (another process, after a crash) sees every write.
    other = sqlite3.connect(path)
    assert other.execute("SELECT count(*) FROM leads WHERE status = 'sent'").fetchone()[0] == 200
    assert other.execute("SELECT sum(attempts) FROM leads").fetchone()[0] == 200
    assert other.execute("SELECT calls FROM number_usage").fetchone()[0] == 200


def test_restore_undoes_an_intent(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    journal = Journal(path, "c")
    _import(journal, [_lead(2, "Ann", "+12125550101")], "a")
    row = next(journal.rows_with_status({Status.PENDING}))

    async def go() -> None:
        writer = JournalWriter(path)
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


def test_two_new_rows_with_one_old_number_never_lose_a_row(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "c.sqlite", "c")
    _import(journal, [_lead(2, "Ann", "+12125550101"), _lead(3, "Bob", "+12125550102")], "a")
    journal.conn.execute("UPDATE leads SET status = 'sent' WHERE name = 'Ann'")
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
    assert journal.get_meta("schema") == str(j.SCHEMA_VERSION) == "7"
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
        f"{path}: written by a newer dialer (journal schema 99; this one knows up to 7);"
        " upgrade dialer to continue this campaign"
    )


def test_a_new_journal_is_written_at_the_current_version(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "c.sqlite", "c")
    assert journal.get_meta("schema") == str(j.SCHEMA_VERSION)
    assert "unanswered" in _columns(tmp_path / "c.sqlite")
    journal.close()


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
    assert journal.get_meta("schema") == "7"
    journal.close()

    assert {"calls", "calls_lead", "calls_live"} <= _tables_and_indexes(path)
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
    assert {"calls", "calls_lead", "calls_live"} <= _tables_and_indexes(tmp_path / "c.sqlite")


# -- one number, one row: the intent claims the number (issue 10) -------------------------


def _status(journal: Journal, row_id: int) -> tuple[str, str, int]:
    row = journal.row(row_id)
    return row.status, row.error, row.attempts


def test_an_intent_for_a_number_another_row_claimed_is_refused_in_its_transaction(
    tmp_path: Path,
) -> None:
    """Whatever let two rows hold one number (here a write behind the import's back), the
    second intent is refused: the row becomes `duplicate` naming the caller, nothing sent,
    the caller id's day count untouched; the first row may still be dialed again (a redial)."""
    path = tmp_path / "c.sqlite"
    journal = Journal(path, "c")
    _import(journal, [_lead(2, "Ann", "+12125550101"), _lead(3, "Bob", "+12125550102")], "a")
    journal.conn.execute("UPDATE leads SET phone = '+12125550101' WHERE id = 2")

    async def go() -> list[BaseException | None]:
        writer = JournalWriter(path)
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
    assert journal.conn.execute("SELECT phone, lead_id FROM called").fetchall() == [("+12125550101", 1)]
    assert journal.number_usage() == {("+14155550100", "2026-12-01"): 2}
    journal.close()


def test_a_refused_intent_leaves_the_rest_of_its_group_committed(tmp_path: Path) -> None:
    """Intents gathered in one transaction: the refused one is skipped alone."""
    path = tmp_path / "c.sqlite"
    journal = Journal(path, "c")
    leads = [_lead(2, "Ann", "+12125550101"), _lead(3, "Bob", "+12125550102"), _lead(4, "Cy", "+12125550103")]
    _import(journal, leads, "a")
    journal.conn.execute("UPDATE leads SET phone = '+12125550101' WHERE id = 2")

    async def go() -> list[Any]:
        writer = JournalWriter(path)
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
