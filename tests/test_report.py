"""The report: CSV and XLSX, every input row in order, formula-safe, written atomically."""

from __future__ import annotations

import csv
import errno
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path

import openpyxl
import pandas as pd
import pytest

from dialer import cells
from dialer.errors import UserError
from dialer.model import Outcome
from dialer.report import DIALER_COLUMNS, ReportError, report_headers, safe_cell, write_report

HEADERS = ["Name", "Phone", "Company", "Note"]
ROWS: list[tuple[list[str], Outcome]] = [
    (
        ["José Müller", "+14155550132", "Café Ñandú", '=HYPERLINK("http://x")'],
        Outcome("sent", "call-1", "+14155550100", 1, "", "2024-06-03T16:00:00Z"),
    ),
    (
        ["Zoë", "+1 (212) 555-0133", "@SUM(A1)", "-2+3"],
        Outcome("failed", "", "+12125550100", 4, "=1+1 from API", "2024-06-03T16:00:01Z"),
    ),
    (
        ['Åsa, "quoted"', "", "line\nbreak", "0042"],
        Outcome("invalid", error="bad phone: ''"),
    ),
]


def read_csv(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8-sig", newline="") as file:
        return list(csv.reader(file))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("+14155550132", "+14155550132", id="e164-phone"),
        pytest.param("+1 (415) 555-0132", "+1 (415) 555-0132", id="formatted-phone"),
        pytest.param("-12.5", "-12.5", id="negative-number"),
        pytest.param("=1+1", "'=1+1", id="equals"),
        pytest.param("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0", id="plus-dde"),
        pytest.param("-2+3", "'-2+3", id="minus-arithmetic"),
        pytest.param("@SUM(A1)", "'@SUM(A1)", id="at"),
        pytest.param("\t=1", "'\t=1", id="tab"),
        pytest.param("\r=1", "'\r=1", id="carriage-return"),
        pytest.param("\uff1d1+1", "'\uff1d1+1", id="full-width-equals"),
        pytest.param("+", "'+", id="lone-plus"),
        pytest.param("a=1", "a=1", id="equals-inside"),
        pytest.param("", "", id="empty"),
        pytest.param("José", "José", id="accents"),
    ],
)
def test_safe_cell(value: str, expected: str) -> None:
    assert safe_cell(value) == expected


def test_csv_round_trip_with_csv_module(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    assert write_report(path, HEADERS, iter(ROWS)) == 3
    assert path.read_bytes().startswith(b"\xef\xbb\xbfName,Phone,")
    rows = read_csv(path)
    assert rows[0] == [*HEADERS, *DIALER_COLUMNS]
    assert rows[1] == [
        "José Müller",
        "+14155550132",
        "Café Ñandú",
        '\'=HYPERLINK("http://x")',
        "sent",
        "call-1",
        "+14155550100",
        "1",
        "",
        "2024-06-03T16:00:00Z",
        "",
        "",
        "",
        "0",
        "",
    ]
    assert rows[2] == [
        "Zoë",
        "+1 (212) 555-0133",
        "'@SUM(A1)",
        "'-2+3",
        "failed",
        "",
        "+12125550100",
        "4",
        "'=1+1 from API",
        "2024-06-03T16:00:01Z",
        "",
        "",
        "",
        "0",
        "",
    ]
    assert rows[3][:4] == ['Åsa, "quoted"', "", "line\nbreak", "0042"]
    assert rows[3][4:] == ["invalid", "", "", "0", "bad phone: ''", "", "", "", "", "0", ""]


def test_csv_round_trip_with_pandas(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    write_report(path, HEADERS, iter(ROWS))
    frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    assert list(frame.columns) == [*HEADERS, *DIALER_COLUMNS]
    assert frame["Phone"].tolist() == ["+14155550132", "+1 (212) 555-0133", ""]
    assert frame["Name"].tolist() == ["José Müller", "Zoë", 'Åsa, "quoted"']
    assert frame["Note"].tolist()[2] == "0042"
    assert frame["dialer_status"].tolist() == ["sent", "failed", "invalid"]


def test_no_cell_starts_a_formula(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    write_report(path, HEADERS, iter(ROWS))
    risky = [cell for row in read_csv(path) for cell in row if cell and cell[0] in "=+-@\t\r"]
    # Only plain phone numbers start that way; every other such cell got its "'".
    assert risky == ["+14155550132", "+14155550100", "+1 (212) 555-0133", "+12125550100"]


def test_header_collision_renames_input_column(tmp_path: Path) -> None:
    headers = ["Phone", "dialer_status", "dialer_status (input)", "=cmd"]
    path = tmp_path / "r.csv"
    write_report(path, headers, iter([(["+14155550132", "old", "older", "x"], Outcome("sent"))]))
    rows = read_csv(path)
    assert rows[0] == [
        "Phone",
        "dialer_status (input 2)",
        "dialer_status (input)",
        "'=cmd",
        *DIALER_COLUMNS,
    ]
    assert len(set(rows[0])) == len(rows[0])
    assert rows[1][:5] == ["+14155550132", "old", "older", "x", "sent"]


def test_report_headers_simple_collision() -> None:
    assert report_headers(["dialer_id", "Phone"])[:2] == ["dialer_id (input)", "Phone"]


def test_short_rows_are_padded(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    write_report(path, ["A", "B", "C"], iter([(["1"], Outcome("pending"))]))
    assert read_csv(path)[1] == ["1", "", "", "pending", "", "", "0", "", "", "", "", "", "0", ""]


def test_empty_input_gives_header_only(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    assert write_report(path, HEADERS, iter([])) == 0
    assert read_csv(path) == [[*HEADERS, *DIALER_COLUMNS]]


def test_creates_missing_folder(tmp_path: Path) -> None:
    path = tmp_path / "out" / "deeper" / "r.csv"
    assert write_report(path, HEADERS, iter(ROWS[:1])) == 1
    assert path.exists()


def test_xlsx_keeps_phones_as_text(tmp_path: Path) -> None:
    path = tmp_path / "r.xlsx"
    assert write_report(path, HEADERS, iter(ROWS)) == 3
    sheet = openpyxl.load_workbook(path).active
    assert sheet is not None
    rows = list(sheet.iter_rows())
    assert [c.value for c in rows[0]] == [*HEADERS, *DIALER_COLUMNS]
    phone = rows[1][1]
    assert phone.value == "+14155550132" and phone.data_type == "s"
    assert rows[1][0].value == "José Müller"
    # Risky text is a text cell (Excel never runs it), with no apostrophe to show.
    assert rows[1][3].value == '=HYPERLINK("http://x")' and rows[1][3].data_type == "s"
    assert rows[2][8].value == "=1+1 from API" and rows[2][8].data_type == "s"
    assert rows[1][7].value == 1  # dialer_attempts stays a number
    assert rows[3][3].value == "0042"
    assert rows[2][5].value is None  # empty dialer_id: an empty cell
    for row in rows:
        for cell in row:
            assert cell.value is None or cell.data_type in ("s", "n"), cell.coordinate


def test_xlsx_drops_characters_xml_cannot_hold(tmp_path: Path) -> None:
    path = tmp_path / "r.xlsx"
    write_report(path, ["A"], iter([(["bell\x07here"], Outcome("pending"))]))
    sheet = openpyxl.load_workbook(path).active
    assert sheet is not None
    assert sheet["A2"].value == "bellhere"


def exploding(rows: Sequence[tuple[list[str], Outcome]], after: int) -> Iterator[tuple[list[str], Outcome]]:
    for index, row in enumerate(rows):
        if index == after:
            raise RuntimeError("journal went away")
        yield row


@pytest.mark.parametrize("name", ["r.csv", "r.xlsx"])
def test_failure_mid_write_leaves_old_report_and_no_temp(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    write_report(path, HEADERS, iter(ROWS[:1]))
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="journal went away"):
        write_report(path, HEADERS, exploding(ROWS, after=2))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_rewrite_replaces_and_keeps_permissions(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    write_report(path, HEADERS, iter(ROWS))
    path.chmod(0o640)
    assert write_report(path, HEADERS, iter(ROWS[:1])) == 1
    assert len(read_csv(path)) == 2
    assert path.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv"]


def test_rows_are_consumed_lazily(tmp_path: Path) -> None:
    # A generator, read once: nothing forces the whole input into a list first. Rows asked
    # for late must find the early ones already on their way to the file (a writer that
    # lists the rows first has written none of them by then).
    seen: list[int] = []
    on_disk_when_last_asked: list[int] = []

    def rows() -> Iterator[tuple[list[str], Outcome]]:
        for n in range(1000):
            seen.append(n)
            if n == 999:
                temp = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
                on_disk_when_last_asked.append(sum(p.stat().st_size for p in temp))
            yield [str(n), "+14155550132", "", ""], Outcome("pending")

    assert write_report(tmp_path / "r.csv", HEADERS, rows()) == 1000
    assert seen == list(range(1000))
    row_bytes = len((tmp_path / "r.csv").read_bytes()) // 1001
    # The file's buffer holds a few kB; at least half the rows must be written by then.
    assert on_disk_when_last_asked[0] > 500 * row_bytes


# --- issue 10: readable phones, typed cells, failures in one line, no temp left ------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("+1 514 555 0208 ext 7", "+1 514 555 0208 ext 7", id="ext"),
        pytest.param("+1 514 555 0208 x7", "+1 514 555 0208 x7", id="x"),
        pytest.param("+1-514-555-0208 #12", "+1-514-555-0208 #12", id="hash"),
        pytest.param("+1 514 555 0208 ext SUM(A1)", "'+1 514 555 0208 ext SUM(A1)", id="ext-call"),
        pytest.param("+1 514 x7 555", "'+1 514 x7 555", id="x-in-the-middle"),
    ],
)
def test_csv_phones_with_an_extension_stay_readable(value: str, expected: str) -> None:
    assert safe_cell(value) == expected


def test_typed_cells_in_a_csv_report_are_their_text(tmp_path: Path) -> None:
    row = [cells.typed(14155550132), cells.typed(datetime(2024, 5, 1, 10, 30)), cells.Formula("=A1*2")]
    write_report(tmp_path / "r.csv", ["Phone", "When", "F"], iter([(row, Outcome("sent"))]))
    assert read_csv(tmp_path / "r.csv")[1][:3] == ["14155550132", "2024-05-01T10:30:00", "'=A1*2"]


def test_xlsx_headers_come_back_as_written(tmp_path: Path) -> None:
    path = tmp_path / "r.xlsx"
    write_report(path, ["-notes", "=x", "@who"], iter([(["a", "b", "c"], Outcome("sent"))]))
    sheet = openpyxl.load_workbook(path).active
    assert sheet is not None
    assert [c.value for c in sheet[1]][:3] == ["-notes", "=x", "@who"]
    assert {c.data_type for c in sheet[1]} == {"s"}


@pytest.mark.parametrize("name", ["r.pdf", "r", "r.xls"])
def test_a_report_name_it_cannot_write_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(UserError) as error:
        write_report(tmp_path / name, HEADERS, iter(ROWS))
    assert str(error.value).startswith(f"{tmp_path / name}: a report is written as .csv or .xlsx")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("code", "hint"),
    [
        pytest.param(errno.EACCES, "close the report if it is open", id="eacces"),
        pytest.param(errno.EROFS, "read-only disk", id="erofs"),
        pytest.param(errno.ENOSPC, "the disk is full", id="enospc"),
    ],
)
@pytest.mark.parametrize("name", ["r.csv", "r.xlsx"])
def test_a_report_that_cannot_be_replaced_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, code: int, hint: str
) -> None:
    path = tmp_path / name
    write_report(path, HEADERS, iter(ROWS[:1]))
    before = path.read_bytes()

    def refuse(src: object, dst: object) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(ReportError) as error:
        write_report(path, HEADERS, iter(ROWS))
    message = str(error.value)
    assert message.startswith(f"{path}: cannot write the report ({os.strerror(code)}): ")
    assert hint in message and "--out" in message and "\n" not in message
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_a_folder_that_cannot_be_written_is_one_line(tmp_path: Path) -> None:
    # A file where the folder should be: mkdir fails whoever runs the test (root too).
    (tmp_path / "out").write_text("not a folder")
    with pytest.raises(ReportError) as error:
        write_report(tmp_path / "out" / "r.xlsx", HEADERS, iter(ROWS))
    assert str(error.value).startswith(f"{tmp_path / 'out' / 'r.xlsx'}: cannot write the report (")


def test_stale_temp_files_of_a_killed_writer_are_removed(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    pid = int(dead.stdout)  # a process that has exited
    (tmp_path / f".r.csv.{pid}.abc123.tmp").write_text("half a report")
    (tmp_path / f".r.csv.{pid}.def456.tmp").mkdir()  # xlsxwriter's scratch folder
    (tmp_path / f".r.csv.{os.getppid()}.live.tmp").write_text("a live writer's")  # alive: kept
    (tmp_path / ".other.csv.1.x.tmp").write_text("another report's")
    write_report(tmp_path / "r.csv", HEADERS, iter(ROWS))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".other.csv.1.x.tmp",
        f".r.csv.{os.getppid()}.live.tmp",
        "r.csv",
    ]


SIGTERM_WRITER = """
import os, signal, sys
from dialer.report import Outcome, write_report

def rows():
    for n in range(200_000):
        if n == 50_000:
            os.kill(os.getpid(), signal.SIGTERM)
        yield [str(n), "+14155550132"], Outcome("pending")

write_report(sys.argv[1], ["N", "Phone"], rows())
"""


@pytest.mark.parametrize("name", ["r.csv", "r.xlsx"])
def test_sigterm_while_writing_leaves_no_temp_files(tmp_path: Path, name: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SIGTERM_WRITER, str(tmp_path / name)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 143, result.stderr
    assert list(tmp_path.iterdir()) == []


def test_xlsxwriter_failing_to_create_the_file_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # xlsxwriter wraps the OSError of its zip file in its own FileCreateError.
    import xlsxwriter.workbook

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(xlsxwriter.workbook, "ZipFile", full)
    with pytest.raises(ReportError, match="the disk is full"):
        write_report(tmp_path / "r.xlsx", HEADERS, iter(ROWS))
    assert list(tmp_path.iterdir()) == []


def test_call_outcomes_and_collected_variables_have_their_columns(tmp_path: Path) -> None:
    path = tmp_path / "r.csv"
    called = Outcome(
        "sent",
        id="c-1",
        attempts=1,
        call_status="completed",
        end_reason="human_ended_call",
        duration=83.25,
        calls=1,
        recording_url="https://x/r.mp3",
        collected={"interest": "=1+1", "email": "a@b.c"},
    )
    write_report(path, ["A"], iter([(["x"], called), (["y"], Outcome("pending"))]), ["email", "interest"])
    header, first, second = read_csv(path)
    assert header == ["A", *DIALER_COLUMNS, "dialer_collected_email", "dialer_collected_interest"]
    assert first[7:] == ["completed", "human_ended_call", "83.25", "1", "https://x/r.mp3", "a@b.c", "'=1+1"]
    assert second[7:] == ["", "", "", "0", "", "", ""]


def test_xlsx_call_outcomes_keep_numbers_and_collected_columns(tmp_path: Path) -> None:
    path = tmp_path / "r.xlsx"
    called = Outcome(
        "sent", id="c-1", call_status="busy", duration=12.5, calls=2, collected={"interest": "no"}
    )
    write_report(path, ["A"], iter([(["x"], called)]), ["interest"])
    sheet = openpyxl.load_workbook(path).active
    assert sheet is not None
    header, row = ([c.value for c in r] for r in sheet.iter_rows())
    assert header == ["A", *DIALER_COLUMNS, "dialer_collected_interest"]
    assert row[7:] == ["busy", None, 12.5, 2, None, "no"]
