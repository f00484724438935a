"""Rows -> leads: zones, duplicates, whole rows, values as written, chunks and the parsing pool."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ProcessPoolExecutor
from datetime import date, datetime
from pathlib import Path

import openpyxl
import pytest

from dialer import mapping, phones
from dialer.config import Campaign
from dialer.model import Lead, Status
from dialer.phones import PhoneResult
from dialer.zones import zones_named
from tests.mapped import campaign, mapped, write_csv


def test_time_zones_given_invalid_inferred_and_multi_zone(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "tz.csv",
        [
            ["Name", "Phone", "Timezone"],
            ["A", "+1 212 555 0100", "america/chicago"],
            ["B", "+1 212 555 0101", "EST5"],
            ["C", "+1 212 555 0102", ""],
            ["D", "+1 208 555 0100", " "],  # Idaho: two zones
            ["E", "+800 1234 5678", ""],  # international freephone: no zone
            ["F", "+1 212 555 0103", "EST5EDT"],  # legacy, but zoneinfo knows it
        ],
    )
    leads = mapped(campaign(tmp_path, path))
    assert [(lead.status, lead.timezones, lead.error) for lead in leads] == [
        ("pending", ("America/Chicago",), ""),
        ("invalid", (), 'unknown time zone "EST5" (use an IANA name like America/New_York)'),
        ("pending", ("America/New_York",), ""),
        ("pending", ("America/Boise", "America/Los_Angeles"), ""),
        ("invalid", (), "cannot infer a time zone for +80012345678; add a time zone column"),
        ("pending", ("EST5EDT",), ""),
    ]
    assert zones_named(" europe/LONDON ") == ("Europe/London",)


def test_duplicates_name_the_first_dialable_row(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "dup.csv",
        [
            ["Name", "Phone"],
            ["", "(415) 555-0132"],  # row 2: invalid (no name), claims nothing
            ["Ana", "+1 415 555 0132"],  # row 3: the first dialable
            ["Bo", "415.555.0132"],  # row 4
            ["Cy", "14155550132"],  # row 5
            ["Di", "+1 415 555 0133"],
        ],
    )
    leads = mapped(campaign(tmp_path, path))
    assert [(lead.row, lead.status, lead.error) for lead in leads] == [
        (2, "invalid", "missing name (the API requires one)"),
        (3, "pending", ""),
        (4, "duplicate", "same number as row 3"),
        (5, "duplicate", "same number as row 3"),
        (6, "pending", ""),
    ]
    assert {lead.phone for lead in leads} == {"+14155550132", "+14155550133"}


def test_xlsx_values_and_variables_read_as_a_person_would_write_them(tmp_path: Path) -> None:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = "Leads"
    sheet.append(["Name", "Phone", "Amount", "Signed up", "Met at", "Notes", "Time Zone"])
    sheet.append(
        ["José Müller", 14155550132, 1500.0, datetime(2024, 1, 1), datetime(2024, 1, 1, 9, 30), None, None]
    )
    sheet.append(["Zoë", 4155550141.0, 12.5, date(2024, 2, 29), None, "ça va", "Europe/Paris"])
    path = tmp_path / "leads.xlsx"
    workbook.save(path)

    leads = mapped(campaign(tmp_path, path, sheet="Leads"))

    assert [(lead.row, lead.status, lead.phone, lead.name) for lead in leads] == [
        (2, "pending", "+14155550132", "José Müller"),
        (3, "pending", "+14155550141", "Zoë"),
    ]
    assert leads[0].values == (
        "José Müller",
        "14155550132",
        "1500",
        "2024-01-01",
        "2024-01-01T09:30:00",
        "",
        "",
    )
    assert leads[0].variables == {
        "Amount": "1500",
        "Signed up": "2024-01-01",
        "Met at": "2024-01-01T09:30:00",
        "Notes": "",
    }
    assert leads[1].variables["Notes"] == "ça va"
    assert leads[1].timezones == ("Europe/Paris",)


def test_row_with_shifted_cells_is_refused_and_email_trimmed(tmp_path: Path) -> None:
    path = tmp_path / "l.csv"
    path.write_text(
        "Name,Phone,Email\nSmith, John,+14155550132,j@x.com\nAna,+14155550133, ana@x.com \n",
        encoding="utf-8",
    )
    leads = mapped(campaign(tmp_path, path))
    assert (leads[0].status, leads[0].error) == (
        "invalid",
        "the row has 4 cells but the header has 3: a value may hold an unquoted ','",
    )
    assert (leads[1].status, leads[1].email) == ("pending", "ana@x.com")


def test_invalid_phone_row_keeps_its_values_and_says_why(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "l.csv", [["Name", "Phone"], ["Ané", "1.23457E+10"]])
    [lead] = mapped(campaign(tmp_path, path))
    assert lead == Lead(
        row=2,
        values=("Ané", "1.23457E+10"),
        status=Status.INVALID,
        error="phone 1.23457E+10 is in scientific notation: digits were lost "
        "(format the column as text in Excel)",
        name="Ané",
    )


def ten_rows(tmp_path: Path) -> Campaign:
    rows = [["Name", "Phone", "Company"]]
    rows += [[f"N{i}", f"(415) 555-01{i % 7:02d}", f"Co {i}"] for i in range(10)]
    return campaign(tmp_path, write_csv(tmp_path / "ten.csv", rows))


@pytest.mark.parametrize(
    ("workers", "pools"), [pytest.param(1, 0, id="inline"), pytest.param(2, 1, id="pool")]
)
def test_chunks_of_three_give_the_same_leads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int, pools: int
) -> None:
    c = ten_rows(tmp_path)
    whole = mapped(c)  # one chunk: parsed in this process
    assert [lead.status for lead in whole].count(Status.DUPLICATE) == 3
    started: list[int] = []
    real_pool = phones._pool

    def spy(workers: int) -> ProcessPoolExecutor:
        started.append(workers)
        return real_pool(workers)

    monkeypatch.setattr(phones, "_pool", spy)
    # A daemon thread left by an earlier test (a sandbox's reader) must not
    # turn the pool off here: the workers only parse phones.
    monkeypatch.setattr(phones, "_can_fork", lambda: True)
    assert mapped(c, chunk_rows=3, workers=workers) == whole
    assert len(started) == pools


def test_no_pool_while_other_threads_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    c = ten_rows(tmp_path)
    monkeypatch.setattr(phones, "_pool", lambda n: pytest.fail("forked with a thread running"))
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert len(mapped(c, chunk_rows=3, workers=2)) == 10
    finally:
        stop.set()
        thread.join()


def test_a_dead_worker_does_not_lose_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    c = ten_rows(tmp_path)
    whole = mapped(c)
    parent, real = os.getpid(), phones._normalize_all

    def die_in_worker(values: list[str], region: str) -> list[PhoneResult]:
        if os.getpid() != parent:
            os._exit(1)  # as if killed for lack of memory
        return real(values, region)

    # Pickled by name, as the real one is: the forked worker finds this one.
    die_in_worker.__module__, die_in_worker.__qualname__ = phones.__name__, "_normalize_all"
    monkeypatch.setattr(phones, "_normalize_all", die_in_worker)
    monkeypatch.setattr(phones, "_can_fork", lambda: True)
    assert mapped(c, chunk_rows=3, workers=2) == whole


def test_first_rows_are_remembered_across_chunks() -> None:
    seen = mapping._FirstRows()
    assert seen.claim([14155550105, 14155550103, 14155550105], [2, 3, 4]).tolist() == [0, 0, 2]
    assert seen.claim([14155550103, 19995550100, 19995550100, 11], [5, 6, 7, 8]).tolist() == [3, 0, 6, 0]
    assert seen.claim([11, 14155550105], [9, 10]).tolist() == [8, 2]
