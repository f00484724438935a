"""Issue 10, "never twice", the journal's side: whatever happens to the leads file, the
journal's path or the disk, one number is called by one row of a campaign, ever.

End to end against a sandbox process, its `--record` the witness (a placed call is a
recorded `POST /v2/calls` answered 200), with the dialer forked as in test_resilience.
"""

from __future__ import annotations

import csv
import os
import resource
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from dialer.sandbox import RunningSandbox
from tests.test_resilience import (
    KEY,
    Dialer,
    dialer,
    e164,
    journal_rows,
    lead_rows,
    placed,
    read_report,
    write_campaign,
    write_lead_rows,
    written,
)

__all__ = ["dialer"]  # a fixture, used by name

Start = Callable[..., Dialer]
Sandbox = Callable[..., RunningSandbox]


def once_each(record: Path | None) -> dict[str, int]:
    return {phone: len(ids) for phone, ids in placed(record).items()}


def by_name(folder: Path) -> dict[str, dict[str, str]]:
    return {row["Name"]: row for row in read_report(folder / "out" / "report.csv")}


# -- 1. a re-import never makes a called number dialable for another row ---------------


ORIGINAL = [*lead_rows([0, 1]), ["Twice", written(0), "Again"]]

EDITS = {
    # the row Twice duplicated is gone from the file
    "removed": [r for r in ORIGINAL if r[0] != "Lead 0"],
    # its phone edited: Twice is now the only row with that number
    "phone edited": [["Lead 0", written(2), "Company 0"], ORIGINAL[1], ORIGINAL[2]],
    # just reordered: Twice comes first
    "reordered": [ORIGINAL[2], ORIGINAL[1], ORIGINAL[0]],
}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_a_duplicate_never_becomes_dialable_whatever_happens_to_the_file(
    tmp_path: Path, dialer: Start, sandbox_process: Sandbox, edit: str
) -> None:
    api = sandbox_process()
    write_lead_rows(tmp_path / "leads.csv", ORIGINAL)
    campaign = str(write_campaign(tmp_path, base_url=api.url))
    assert dialer("run", campaign).wait() == 0
    assert by_name(tmp_path)["Twice"]["dialer_status"] == "duplicate"

    write_lead_rows(tmp_path / "leads.csv", EDITS[edit])
    second = dialer("run", campaign)
    assert second.wait() == 0, second.stderr
    expected = {e164(0): 1, e164(1): 1} | ({e164(2): 1} if edit == "phone edited" else {})
    assert once_each(api.record) == expected
    twice = by_name(tmp_path)["Twice"]
    assert twice["dialer_status"] == "duplicate"
    if edit == "reordered":
        assert twice["dialer_error"] == "same number as row 4"  # Lead 0, now the file's last row
    else:
        assert twice["dialer_error"] == "same number as row no longer in the file, already called"
    # Once more, unchanged: still nobody called twice.
    assert dialer("run", campaign).wait() == 0
    assert once_each(api.record) == expected


def test_an_invalid_row_fixed_by_the_user_never_calls_a_number_another_row_called(
    tmp_path: Path, dialer: Start, sandbox_process: Sandbox
) -> None:
    """The README's own example: a bad time zone fixed makes a row dialable, but not
    with a number another row already called (the fixed row now first in the file, so
    the mapping alone finds the caller the duplicate)."""
    api = sandbox_process()
    leads = tmp_path / "leads.csv"

    def write(rows: list[list[str]]) -> None:
        with leads.open("w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows([["Name", "Phone", "Timezone"], *rows])

    write([["Lead 0", written(0), "America/New_York"], ["Other", written(0), "Mars/Base"]])
    campaign = str(write_campaign(tmp_path, base_url=api.url))
    assert dialer("run", campaign).wait() == 0
    assert by_name(tmp_path)["Other"]["dialer_status"] == "invalid"

    write(
        [
            ["Other", written(0), "America/New_York"],
            ["Lead 0", written(0), "America/New_York"],
            ["New", written(1), "America/New_York"],
        ]
    )
    second = dialer("run", campaign)
    assert second.wait() == 0, second.stderr
    assert once_each(api.record) == {e164(0): 1, e164(1): 1}
    report = by_name(tmp_path)
    assert (report["Other"]["dialer_status"], report["Other"]["dialer_error"]) == (
        "duplicate",
        "same number as row 3",
    )
    assert report["Lead 0"]["dialer_status"] == "sent"


# -- 5. the journal's disk full mid-run -------------------------------------------------


def test_a_full_disk_mid_run_stops_with_one_line_and_the_next_run_calls_nobody_twice(
    tmp_path: Path, dialer: Start, sandbox_process: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer's fault point raises what SQLite raises on a full disk after a few commits:
    calls have gone out, the run ends with exit 1 and one line naming the journal; the next
    run looks up what may have left and dials the rest, each number once."""
    api = sandbox_process()
    write_lead_rows(tmp_path / "leads.csv", lead_rows(range(20)))
    campaign = str(write_campaign(tmp_path, base_url=api.url, concurrency=2, rate=100))
    monkeypatch.setenv("DIALER_TEST_JOURNAL_FULL_AFTER", "6")
    first = dialer("run", campaign)
    assert first.wait() == 1, first.stderr
    journal = tmp_path / "out" / "journal.sqlite"
    lines = [line for line in first.stderr.splitlines() if "cannot write the journal" in line]
    assert len(lines) == 1, first.stderr
    assert f"{journal}: cannot write the journal: the disk is full" in lines[0]
    assert "internal error" not in first.stderr and "Traceback" not in first.stderr
    assert placed(api.record), "the fault came after calls went out"
    statuses = {row["status"] for row in journal_rows(tmp_path)}
    assert statuses <= {"pending", "unknown", "sent"}

    monkeypatch.delenv("DIALER_TEST_JOURNAL_FULL_AFTER")
    second = dialer("run", campaign)
    assert second.wait() == 0, second.stderr
    assert once_each(api.record) == {e164(i): 1 for i in range(20)}
    assert {row["status"] for row in journal_rows(tmp_path)} == {"sent"}


# -- 3. an edit that keeps the file's size and mtime ------------------------------------


def test_an_edit_keeping_size_and_mtime_is_seen_and_the_number_gone_is_not_dialed(
    tmp_path: Path, dialer: Start, sandbox_process: Sandbox
) -> None:
    """As after `cp -p`, `rsync -t` or `tar x`: same size, same mtime, other rows."""
    api = sandbox_process()
    leads = tmp_path / "leads.csv"
    write_lead_rows(leads, lead_rows(range(5)))
    campaign = str(write_campaign(tmp_path, base_url=api.url))
    first = dialer("run", campaign, "--limit", "2")
    assert first.wait() == 75, first.stderr
    before = leads.stat()
    # Lead 4 now has number 5: the same number of characters.
    write_lead_rows(leads, [*lead_rows(range(4)), ["Lead 4", written(5), "Company 4"]])
    os.utime(leads, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (leads.stat().st_size, leads.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)

    second = dialer("run", campaign)
    assert second.wait() == 0, second.stderr
    assert once_each(api.record) == {e164(i): 1 for i in (0, 1, 2, 3, 5)}
    assert by_name(tmp_path)["Lead 4"]["dialer_status"] == "sent"


# -- 4. a setting that decided verdicts, fixed ------------------------------------------


def test_rows_not_yet_dialed_are_judged_again_when_a_verdict_setting_is_fixed(
    tmp_path: Path, dialer: Start, sandbox_process: Sandbox
) -> None:
    """Numbers written without a country code, read with the wrong `default_region` at
    first: invalid. The region fixed, the same file: they are dialed, each once."""
    api = sandbox_process()
    rows = [[f"Lead {i}", f"(212) 555-0{100 + i}", f"Company {i}"] for i in range(3)]
    write_lead_rows(tmp_path / "leads.csv", [*rows, ["Intl", written(250), "Company"]])
    path = write_campaign(tmp_path, base_url=api.url)
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace('mode = "call"\n', 'mode = "call"\ndefault_region = "GB"\n', 1))
    assert dialer("run", str(path)).wait() == 0
    report = by_name(tmp_path)
    assert [report[f"Lead {i}"]["dialer_status"] for i in range(3)] == ["invalid"] * 3
    assert once_each(api.record) == {e164(250): 1}

    path.write_text(text.replace('mode = "call"\n', 'mode = "call"\ndefault_region = "US"\n', 1))
    second = dialer("run", str(path))
    assert second.wait() == 0, second.stderr
    assert once_each(api.record) == {e164(i): 1 for i in (0, 1, 2, 250)}
    assert {row["Name"]: row["dialer_status"] for row in read_report(tmp_path / "out" / "report.csv")} == {
        "Lead 0": "sent",
        "Lead 1": "sent",
        "Lead 2": "sent",
        "Intl": "sent",
    }


# -- 2. one lock per journal, whatever path names it ------------------------------------


def _wait_for_a_call(record: Path | None, run: Dialer) -> None:
    """Until the first run has placed a call (it then holds the lock for a while yet)."""
    deadline = time.monotonic() + 30
    while not placed(record):
        assert run.code is None and time.monotonic() < deadline, run.stderr
        time.sleep(0.01)


@pytest.mark.parametrize("alias", ["symlink", "dot-dot", "hard link"])
def test_two_campaign_files_naming_one_journal_two_ways_never_run_at_once(
    tmp_path: Path, dialer: Start, sandbox_process: Sandbox, alias: str
) -> None:
    api = sandbox_process(latency_ms=100)
    write_lead_rows(tmp_path / "leads.csv", lead_rows(range(20)))
    first_file = write_campaign(tmp_path, base_url=api.url, rate=10, concurrency=1)
    journal = tmp_path / "out" / "journal.sqlite"
    journal.parent.mkdir()
    journal.touch()
    other = tmp_path / "other"
    other.mkdir()
    if alias == "symlink":
        (other / "j.sqlite").symlink_to(journal)
        name = "j.sqlite"
    elif alias == "hard link":
        os.link(journal, other / "j.sqlite")
        name = "j.sqlite"
    else:
        name = "../out/../out/journal.sqlite"
    second_file = other / "campaign.toml"
    second_file.write_text(
        first_file.read_text(encoding="utf-8")
        .replace('leads = "leads.csv"', 'leads = "../leads.csv"')
        .replace('journal = "out/journal.sqlite"', f'journal = "{name}"'),
        encoding="utf-8",
    )

    first = dialer("run", str(first_file))
    _wait_for_a_call(api.record, first)
    second = dialer("run", str(second_file))
    assert second.wait() == 75, second.stderr
    assert "another run of this campaign is in progress; nothing sent" in second.stderr
    assert first.wait() == 0, first.stderr
    assert once_each(api.record) == {e164(i): 1 for i in range(20)}
    # And once the first is done, the second continues the same journal: nobody again.
    assert dialer("run", str(second_file)).wait() == 0
    assert once_each(api.record) == {e164(i): 1 for i in range(20)}


# -- 6. a journal lost, emptied or damaged ----------------------------------------------


def _lose(journal: Path, how: str) -> None:
    if how == "deleted":
        journal.unlink()
    elif how == "truncated":
        journal.write_bytes(b"")
    for suffix in ("-wal", "-shm"):
        Path(f"{journal}{suffix}").unlink(missing_ok=True)


@pytest.mark.parametrize("how", ["deleted", "truncated"])
def test_a_new_journal_for_a_campaign_whose_report_shows_calls_is_refused(
    tmp_path: Path, dialer: Start, sandbox_process: Sandbox, how: str
) -> None:
    api = sandbox_process()
    write_lead_rows(tmp_path / "leads.csv", lead_rows(range(5)))
    campaign = str(write_campaign(tmp_path, base_url=api.url))
    assert dialer("run", campaign, "--limit", "3").wait() == 75
    journal = tmp_path / "out" / "journal.sqlite"
    _lose(journal, how)

    refused = dialer("run", campaign)
    assert refused.wait() == 2, refused.stderr
    assert refused.stderr.strip().splitlines() == [
        f"dialer: {journal}: the journal is new (deleted, emptied, or its -wal lost), but the"
        f" report {tmp_path / 'out' / 'report.csv'} shows 3 rows called: a new journal would"
        " call them again; nothing sent. Restore the journal, or run with --new-journal to"
        " start afresh anyway"
    ]
    assert once_each(api.record) == {e164(i): 1 for i in range(3)}
    # Refused again on the next try: the refusal itself made nothing of the journal.
    assert dialer("run", campaign).wait() == 2
    # The user insists: a new journal, and everyone is called (the first three again).
    insisted = dialer("run", campaign, "--new-journal")
    assert insisted.wait() == 0, insisted.stderr
    assert once_each(api.record) == {e164(i): 2 if i < 3 else 1 for i in range(5)}


def test_a_first_run_with_a_report_that_shows_no_call_is_not_refused(
    tmp_path: Path, dialer: Start, sandbox_process: Sandbox
) -> None:
    api = sandbox_process()
    write_lead_rows(tmp_path / "leads.csv", lead_rows(range(2)))
    campaign = str(write_campaign(tmp_path, base_url=api.url))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "report.csv").write_text(
        "Name,Phone,Company,dialer_status,dialer_id\nLead 0,x,y,pending,\n", encoding="utf-8"
    )
    run = dialer("run", campaign)
    assert run.wait() == 0, run.stderr
    assert once_each(api.record) == {e164(0): 1, e164(1): 1}


@pytest.mark.parametrize("damage", ["not a database", "half of it"])
def test_a_damaged_journal_is_one_line_and_nothing_is_sent(
    tmp_path: Path, dialer: Start, sandbox_process: Sandbox, damage: str
) -> None:
    api = sandbox_process()
    write_lead_rows(tmp_path / "leads.csv", lead_rows(range(300)))
    campaign = str(write_campaign(tmp_path, base_url=api.url))
    assert dialer("run", campaign, "--limit", "1").wait() == 75
    calls = once_each(api.record)
    journal = tmp_path / "out" / "journal.sqlite"
    data = journal.read_bytes()
    if damage == "not a database":
        journal.write_bytes(b"these are not the bytes of a database\n" * 200)
    else:
        journal.write_bytes(data[: len(data) // 2])
    run = dialer("run", campaign)
    code = run.wait()
    lines = run.stderr.strip().splitlines()
    assert code == 1, run.stderr
    assert lines[-1].startswith(f"dialer: {journal}: cannot open the journal: "), run.stderr
    assert lines[-1].endswith(
        "; nothing sent. Restore it from a backup, or move it away and run with --new-journal"
        " (rows already called may be called again)"
    )
    assert "Traceback" not in run.stderr and "internal error" not in run.stderr
    assert once_each(api.record) == calls


def test_a_journal_that_cannot_grow_fails_for_real_with_one_line_and_the_next_run_recovers(
    tmp_path: Path, dialer: Start, sandbox_process: Sandbox
) -> None:
    """A real write failure, unprivileged: the dialer under RLIMIT_FSIZE (Python ignores
    SIGXFSZ, so a write past the limit fails with EFBIG and SQLite reports an I/O error)."""
    api = sandbox_process()
    write_lead_rows(tmp_path / "leads.csv", lead_rows(range(60)))
    campaign = write_campaign(tmp_path, base_url=api.url, concurrency=2)
    assert dialer("run", str(campaign), "--limit", "2").wait() == 75
    journal = tmp_path / "out" / "journal.sqlite"
    limit = journal.stat().st_size + 40_000  # the WAL holds a few commits, then no more

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    done = subprocess.run(
        [sys.executable, "-m", "dialer", "run", str(campaign)],
        env={**os.environ, "SYNTHFLOW_API_KEY": KEY},
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=cap,
    )
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"dialer: {journal}: cannot write the journal: the disk failed"), done.stderr
    assert "internal error" not in done.stderr and "Traceback" not in done.stderr
    assert len(placed(api.record)) > 2, "calls went out before the journal could not grow"

    again = dialer("run", str(campaign))
    assert again.wait() == 0, again.stderr
    assert once_each(api.record) == {e164(i): 1 for i in range(60)}


def test_a_new_journal_is_refused_after_calls_an_xlsx_report_shows_too(
    tmp_path: Path, dialer: Start, sandbox_process: Sandbox
) -> None:
    api = sandbox_process()
    write_lead_rows(tmp_path / "leads.csv", lead_rows(range(3)))
    campaign = str(write_campaign(tmp_path, base_url=api.url))
    report = str(tmp_path / "out" / "report.xlsx")
    assert dialer("run", campaign, "--limit", "2", "--report", report).wait() == 75
    _lose(tmp_path / "out" / "journal.sqlite", "deleted")
    refused = dialer("run", campaign, "--report", report)
    assert refused.wait() == 2, refused.stderr
    assert f"the report {report} shows 2 rows called" in refused.stderr
    assert once_each(api.record) == {e164(0): 1, e164(1): 1}


def test_the_journal_refuses_a_second_row_for_a_called_number_even_behind_the_imports_back(
    tmp_path: Path, dialer: Start, sandbox_process: Sandbox
) -> None:
    """The rule lives in the intent's transaction, not only in the import: a row given a
    called number by any other way (here SQL behind the import) is refused at its intent,
    sent nothing, and becomes a duplicate naming the caller."""
    api = sandbox_process()
    write_lead_rows(tmp_path / "leads.csv", lead_rows(range(3)))
    campaign = str(write_campaign(tmp_path, base_url=api.url))
    assert dialer("run", campaign, "--limit", "1").wait() == 75
    conn = sqlite3.connect(tmp_path / "out" / "journal.sqlite")
    with conn:
        conn.execute("UPDATE leads SET phone = ? WHERE position = 3", (e164(0),))
    conn.close()
    second = dialer("run", campaign)
    assert second.wait() == 0, second.stderr
    assert once_each(api.record) == {e164(0): 1, e164(2): 1}
    report = by_name(tmp_path)
    assert (report["Lead 1"]["dialer_status"], report["Lead 1"]["dialer_error"]) == (
        "duplicate",
        "same number as row 2",
    )
