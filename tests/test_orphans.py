"""kill -9 during a multi-chunk import: no phone-parsing worker outlives the run or keeps its lock."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from dialer import phones
from tests.conftest import read_record

KEY = "test-key"
ROWS = 600  # six chunks of 100: parsed by forked workers
# The run as `dialer run`, with small chunks, two workers, and a stop after the first chunk
# is mapped: the import is then in progress, its workers alive, and the process is killed there.
RUN_STOPPING_MID_IMPORT = """
import os, sys, time
from pathlib import Path
from dialer import cli, mapping
mapping.CHUNK_ROWS = 100
mapping.default_workers = lambda: 2
real = mapping._Mapper.chunk
def chunk(self, *args):
    rows = real(self, *args)
    Path(sys.argv[2]).write_text(str(os.getpid()))
    time.sleep(3600)  # until killed
    return rows
mapping._Mapper.chunk = chunk
cli.main(["run", sys.argv[1]])
"""


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            # pid (comm) state ppid ...: comm may hold spaces, so split after its ")".
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie holds no descriptor and runs no code


def _wait_for(condition: Any, what: str, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_kill_9_mid_import_leaves_no_worker_and_no_lock(tmp_path: Path, sandbox: Any) -> None:
    server = sandbox(api_key=KEY)
    with (tmp_path / "leads.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Name", "Phone"])
        writer.writerows([f"Lead {i}", f"+1 212 555 {i:04d}"] for i in range(ROWS))
    campaign = tmp_path / "campaign.toml"
    campaign.write_text(
        f'name = "t"\nmode = "call"\nleads = "leads.csv"\n[api]\nbase_url = "{server.url}"\n'
        '[call]\nmodel_id = "m"\n[numbers]\npool = ["+12125550100"]\nstrategy = "round_robin"\n'
        "[limits]\nrate_per_second = 500\nconcurrency = 10\n"
        '[hours]\nstart = "00:00"\nend = "24:00"\ndays = ["mon","tue","wed","thu","fri","sat","sun"]\n',
        encoding="utf-8",
    )
    marker = tmp_path / "mid-import"
    env = {**os.environ, "SYNTHFLOW_API_KEY": KEY}
    first = subprocess.Popen(
        [sys.executable, "-c", RUN_STOPPING_MID_IMPORT, str(campaign), str(marker)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for(lambda: marker.exists() or first.poll() is not None, "the first chunk to be mapped")
        assert first.poll() is None, first.stderr.read() if first.stderr else ""
        workers = _children(first.pid)
        assert workers, "the import ran without worker processes: nothing was tested"
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
        if first.stderr:
            first.stderr.close()
    try:
        _wait_for(lambda: not any(_alive(w) for w in workers), "the workers to die with their parent", 10.0)
    finally:
        for worker in workers:
            if _alive(worker):
                os.kill(worker, signal.SIGKILL)  # leave no orphan behind when the test fails

    second = subprocess.run(
        [sys.executable, "-m", "dialer", "run", str(campaign)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert second.returncode == 0, second.stderr
    calls = [r["body"]["phone"] for r in read_record(server.record) if r["method"] == "POST"]
    assert sorted(calls) == sorted(f"+1212555{i:04d}" for i in range(ROWS))  # each once


def _shared_locks_here() -> list[str]:
    """In a worker: the lock lines of its descriptors (see phones._close_inherited_locks)."""
    found = []
    for name in os.listdir("/proc/self/fdinfo"):
        try:
            text = Path(f"/proc/self/fdinfo/{name}").read_text()
        except OSError:
            continue
        found += [line for line in text.splitlines() if line.startswith("lock:") and "FLOCK" in line]
    return found


def test_a_worker_holds_no_copy_of_the_parents_flock(tmp_path: Path) -> None:
    import fcntl

    fd = os.open(tmp_path / "c.sqlite.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        pool = phones._pool(1)
        try:
            assert pool.submit(_shared_locks_here).result(timeout=60) == []
        finally:
            pool.shutdown(wait=True)
        # The parent's lock is untouched: a second open of the file cannot take it.
        other = os.open(tmp_path / "c.sqlite.lock", os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(other)
    finally:
        os.close(fd)


# A big workbook is read by a forked process of its own (dialer/workbook.py); this reads
# one that way (PROCESS_BYTES 0), stops after its first chunk, and waits to be killed.
READ_WORKBOOK_AND_WAIT = """
import sys, time
from pathlib import Path
from dialer import workbook
from dialer.load import open_leads
workbook.PROCESS_BYTES = 0
workbook._AHEAD_ROWS, workbook._AHEAD_BLOCKS = 100, 1  # the reader soon waits on a full pipe
chunks = open_leads(Path(sys.argv[1])).read(100)
next(chunks)
Path(sys.argv[2]).write_text("read")
time.sleep(3600)  # until killed
"""


def _workbook(path: Path, rows: int) -> Path:
    import xlsxwriter

    book = xlsxwriter.Workbook(str(path))
    sheet = book.add_worksheet("Leads")
    sheet.write_row(0, 0, ["Name", "Phone"])
    for i in range(rows):
        sheet.write_row(i + 1, 0, [f"Lead {i}", f"+1 212 555 {i:04d}"])
    book.close()
    return path


def test_a_workbooks_reading_process_dies_with_its_parent(tmp_path: Path) -> None:
    path = _workbook(tmp_path / "leads.xlsx", 20_000)
    marker = tmp_path / "read"
    reader = subprocess.Popen(
        [sys.executable, "-c", READ_WORKBOOK_AND_WAIT, str(path), str(marker)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for(lambda: marker.exists() or reader.poll() is not None, "the first chunk")
        assert reader.poll() is None, reader.stderr.read() if reader.stderr else ""
        children = _children(reader.pid)
        assert children, "the workbook was read without a process of its own: nothing was tested"
        os.kill(reader.pid, signal.SIGKILL)
        reader.wait(timeout=30)
    finally:
        if reader.poll() is None:
            reader.kill()
        if reader.stderr:
            reader.stderr.close()
    try:
        # Blocked on a full pipe nobody reads, an orphan would wait there for ever.
        _wait_for(lambda: not any(_alive(c) for c in children), "the reader to die with its parent", 10.0)
    finally:
        for child in children:
            if _alive(child):
                os.kill(child, signal.SIGKILL)


def test_a_workbooks_reading_process_holds_no_copy_of_the_parents_flock(
    tmp_path: Path, monkeypatch: Any
) -> None:
    import fcntl

    from dialer import workbook
    from dialer.load import open_leads

    path = _workbook(tmp_path / "leads.xlsx", 20_000)
    monkeypatch.setattr(workbook, "PROCESS_BYTES", 0)
    fd = os.open(tmp_path / "c.sqlite.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as `dialer run` holds the campaign's
        chunks = open_leads(path).read(100)
        assert isinstance(chunks, Generator)
        next(chunks)
        children = _children(os.getpid())
        assert children, "the workbook was read without a process of its own: nothing was tested"
        try:
            # A copy of the descriptor in a reader would keep the campaign locked after a
            # kill -9 until the reader ended: the next run would exit 75.
            held = [c for c in children if _locks_of(c)]
            assert held == []
        finally:
            chunks.close()
    finally:
        os.close(fd)


def _locks_of(pid: int) -> list[str]:
    found = []
    for name in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            text = Path(f"/proc/{pid}/fdinfo/{name}").read_text()
        except OSError:
            continue
        found += [line for line in text.splitlines() if line.startswith("lock:") and "FLOCK" in line]
    return found
