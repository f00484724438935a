"""The first import's writer thread: rows written while the next chunks are mapped, and
still one transaction (a failure or a kill -9 anywhere leaves the journal as it was)."""

from __future__ import annotations

import gc
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dialer import phones
from dialer.columns import ColumnMap
from dialer.errors import LeadsFileError
from dialer.model import PENDING_CODE, Lead, LeadRows
from dialer.store import Journal, importing

COLUMNS = ColumnMap(phone="Phone", name=("Name",), timezone=None, email=None, variables=())
HEADERS = ["Name", "Phone"]


def _chunk(first: int, count: int) -> LeadRows:
    rows = range(first, first + count)
    names = [f"Lead {i}" for i in rows]
    numbers = [f"+1212555{i:04d}" for i in rows]
    return LeadRows(
        rows=np.array([i + 2 for i in rows], dtype=np.int64),
        codes=np.full(count, PENDING_CODE, dtype=np.int8),
        numbers=np.array([int(n) for n in numbers], dtype=np.int64),
        errors=np.array([""] * count, dtype=object),
        phone=numbers,
        timezones=[("America/New_York",)] * count,
        state=[""] * count,
        cells=lambda: [names, numbers],
        name=lambda: names,
        email=lambda: [""] * count,
        variable_names=(),
        variable_at=[],
    )


def _chunks(count: int, rows: int, fail_at: int | None = None) -> Iterator[LeadRows]:
    for i in range(count):
        if i == fail_at:
            raise LeadsFileError("leads.csv: cannot read: a bad byte in row 9,000")
        yield _chunk(i * rows, rows)


def _import(journal: Journal, leads: Any) -> importing.ImportSummary:
    return journal.import_leads(HEADERS, COLUMNS, leads, {"size": 1, "mtime_ns": 1, "sha256": "a"})


def _leads(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT count(*) FROM leads").fetchone()[0])
    finally:
        conn.close()


def test_rows_written_in_blocks_keep_file_order_and_every_field(tmp_path: Path) -> None:
    # Chunks of a size that is no multiple of the statement's block, Leads handed one by
    # one mixed with chunks: the journal holds what lead_records gives, row for row.
    leads: list[Lead | LeadRows] = [_chunk(0, 4_321), *_chunk(4_321, 5).leads(), _chunk(4_326, 2_000)]
    journal = Journal(tmp_path / "c.sqlite", "c")
    try:
        summary = _import(journal, iter(leads))
        got = journal.conn.execute(
            f"SELECT {', '.join(importing.RECORD_COLUMNS)} FROM leads ORDER BY id"
        ).fetchall()
        now = got[0][importing.RECORD_COLUMNS.index("updated_at")]
    finally:
        journal.close()
    assert summary.added == 6_326
    assert got == list(importing.lead_records(leads, now))
    assert [row[0] for row in got] == list(range(2, 6_328))


def test_a_file_failing_mid_way_leaves_the_journal_empty_and_the_writer_gone(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "c.sqlite", "c")
    try:
        with pytest.raises(LeadsFileError, match="row 9,000"):
            _import(journal, _chunks(6, 3_000, fail_at=4))  # 4 chunks written or queued first
        assert not journal.is_imported
        assert journal.counts() == {}
        assert not any(t.name == "journal-import" for t in threading.enumerate())
        assert gc.isenabled()  # the collector is back on, even after a failure
        summary = _import(journal, _chunks(6, 3_000))  # and the import can be done again
        assert (summary.added, summary.first_import) == (18_000, True)
    finally:
        journal.close()


def test_the_writers_error_is_raised_and_nothing_is_kept(tmp_path: Path, monkeypatch: Any) -> None:
    real = importing._insert
    done: list[int] = []

    def insert(conn: sqlite3.Connection, columns: Any, now: str) -> None:
        if done:
            raise sqlite3.OperationalError("database or disk is full")
        real(conn, columns, now)
        done.append(len(columns[0]))

    monkeypatch.setattr(importing, "_insert", insert)
    journal = Journal(tmp_path / "c.sqlite", "c")
    try:
        with pytest.raises(sqlite3.OperationalError, match="disk is full"):
            _import(journal, _chunks(8, 1_000))
        assert done == [1_000]
        assert journal.counts() == {}
        assert not journal.is_imported
        assert gc.isenabled()
    finally:
        journal.close()


def test_the_phone_workers_are_forked_before_the_writer_starts(tmp_path: Path, monkeypatch: Any) -> None:
    # A fork beside a running thread is unsafe, so phones._can_fork says no once a thread
    # runs, and the phones would then be parsed in this process, on the critical path.
    from dialer.columns import resolve_columns
    from dialer.load import open_leads
    from dialer.mapping import map_rows
    from tests.mapped import campaign, write_csv

    answers: list[bool] = []
    real = phones._can_fork

    def can_fork() -> bool:
        answers.append(real())
        return answers[-1]

    monkeypatch.setattr(phones, "_can_fork", can_fork)
    body = [["Name", "Phone"]] + [[f"Lead {i}", f"(212) 555-{i:04d}"] for i in range(600)]
    c = campaign(tmp_path, write_csv(tmp_path / "leads.csv", body))
    leads = open_leads(c.leads)
    columns = resolve_columns(c, leads.headers)
    journal = Journal(tmp_path / "c.sqlite", "c")
    try:
        summary = journal.import_leads(
            leads.headers, columns, map_rows(c, leads, columns, chunk_rows=100, workers=2), {"sha256": "a"}
        )
    finally:
        journal.close()
    assert summary.added == 600
    assert answers == [True]


# A first import killed (-9) while its writer thread has written some chunks into the
# transaction (and waits before the next): the journal must be as it was, empty.
IMPORT_KILLED_MID_WRITE = """
import sys, time
from pathlib import Path
from dialer.columns import ColumnMap
from dialer.store import Journal, importing
from tests.test_import_writer import COLUMNS, HEADERS, _chunks
real = importing._insert
written = []
def insert(conn, columns, now):
    real(conn, columns, now)
    written.append(len(columns[0]))
    if len(written) == 3:
        Path(sys.argv[2]).write_text("3 chunks written")
        time.sleep(3600)  # until killed
importing._insert = insert
journal = Journal(Path(sys.argv[1]), "c")
journal.conn.execute("PRAGMA cache_size=10")  # the transaction's pages spill into the -wal
journal.import_leads(HEADERS, COLUMNS, _chunks(8, 2_000), {"sha256": "a"})
"""


def test_kill_9_while_rows_are_written_leaves_the_journal_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    marker = tmp_path / "written"
    victim = subprocess.Popen(
        [sys.executable, "-c", IMPORT_KILLED_MID_WRITE, str(path), str(marker)],
        cwd=Path(__file__).parent.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and victim.poll() is None:
            assert time.monotonic() < deadline, "timed out waiting for the writer"
            time.sleep(0.05)
        assert victim.poll() is None, victim.stderr.read() if victim.stderr else ""
        assert Path(f"{path}-wal").stat().st_size > 500_000  # rows were written, uncommitted
        os.kill(victim.pid, signal.SIGKILL)
        assert victim.wait(timeout=30) == -signal.SIGKILL
    finally:
        if victim.poll() is None:
            victim.kill()
        if victim.stderr:
            victim.stderr.close()
    assert _leads(path) == 0
    journal = Journal(path, "c")
    try:
        assert not journal.is_imported
        summary = _import(journal, _chunks(8, 2_000))
        assert (summary.added, summary.first_import) == (16_000, True)
    finally:
        journal.close()
    assert _leads(path) == 16_000
