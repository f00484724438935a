"""The XLSX report's rows (dialer/report.py's `_SheetRows`) are the bytes xlsxwriter's own
constant-memory mode writes for the same cells, so that Excel opens the report as it opens
any xlsxwriter file; the one difference is a text shaped like rich-text XML, which
xlsxwriter wrote into the sheet unescaped."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Any

import openpyxl
import pytest
import xlsxwriter
from python_calamine import CalamineWorkbook

from dialer import cells
from dialer.model import Outcome
from dialer.report import _FORMATS, report_headers, write_report

ILLEGAL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")

VALUES: list[Any] = [
    "plain",
    "a & b < c > d \"quoted\" 'single'",
    "line\nbreak",
    " leading",
    "trailing ",
    "\ttab",
    "literal _x0041_ escape",
    "non\ufffecharacter\uffff",
    "bell\x07 and \x1f dropped",
    "\x01\x02",  # nothing left: an empty cell
    "été 中文 \U0001f600",
    "x" * 40_000,  # cut at Excel's 32,767
    "\U0001f600" * 20_000,  # 40,000 UTF-16 units: cut at 16,383 characters
    "",
    "=SUM(A1:A2)",
    cells.Formula("=A2*2"),
    cells.Number("14155550132"),
    cells.Number("12.5"),
    cells.Number("-0.000123"),
    cells.Number("1.2345678901234567e+20"),
    cells.Boolean("TRUE"),
    cells.Boolean("FALSE"),
    cells.Date("2024-05-01"),
    cells.Date("1900-01-01"),
    cells.DateTime("2024-05-01T10:30:00"),
    cells.Time("09:15:00"),
    cells.Duration("26:00:00"),
    cells.Duration("-0:30:00"),
]
HEADERS = [f"H{i}" for i in range(len(VALUES))]


def outcomes() -> list[tuple[list[Any], Outcome]]:
    rows = []
    for shift in range(3):  # each value in several columns, so column letters vary too
        values = VALUES[shift:] + VALUES[:shift]
        rows.append(
            (values, Outcome("sent", f"call-{shift}", "+14155550100", shift, "", "2024-06-03T16:00:00Z"))
        )
    rows.append((["short row"], Outcome("invalid", "", "", 0, "no phone & no name", "2024-06-03T16:00:00Z")))
    return rows


def reference_xlsx(path: Path, rows: list[tuple[list[Any], Outcome]]) -> None:
    """The same cells through xlsxwriter's public writers, as the report wrote them before."""
    book = xlsxwriter.Workbook(str(path), {"constant_memory": True, "strings_to_numbers": False})
    sheet = book.add_worksheet("report")
    formats = {kind: book.add_format({"num_format": fmt}) for kind, fmt in _FORMATS.items()}
    for each in formats.values():
        each._get_xf_index()  # the same order of styles as the report's
    lines: list[list[Any]] = [list(report_headers(HEADERS))]
    for values, outcome in rows:
        values = [*values[: len(HEADERS)], *([""] * (len(HEADERS) - len(values)))]
        lines.append(
            [
                *values,
                outcome.status,
                outcome.id,
                outcome.from_number,
                outcome.attempts,
                outcome.error,
                outcome.updated_at,
                "",
                "",
                "",
                outcome.calls,
                "",
            ]
        )
    for row, line in enumerate(lines):
        for column, value in enumerate(line):
            kind = type(value)
            if kind is int or kind is float:
                sheet.write_number(row, column, value)
            elif kind is cells.Number:
                sheet.write_number(row, column, float(value))
            elif kind is cells.Boolean:
                sheet.write_boolean(row, column, value == "TRUE")
            elif kind is cells.Duration:
                sheet.write_number(row, column, value.value().total_seconds() / 86400, formats[kind])
            elif kind in formats:
                sheet.write_datetime(row, column, value.value(), formats[kind])
            elif value:
                text = ILLEGAL.sub("", str(value))[:32_767]
                if text:
                    sheet.write_string(row, column, text)
    book.close()


def member(path: Path, name: str) -> bytes:
    with zipfile.ZipFile(path) as archive:
        return archive.read(name)


def test_the_sheet_is_the_bytes_xlsxwriter_writes(tmp_path: Path) -> None:
    rows = outcomes()
    write_report(tmp_path / "report.xlsx", HEADERS, rows)
    reference_xlsx(tmp_path / "reference.xlsx", rows)
    ours = member(tmp_path / "report.xlsx", "xl/worksheets/sheet1.xml")
    theirs = member(tmp_path / "reference.xlsx", "xl/worksheets/sheet1.xml")
    assert ours.count(b"<row ") == 5
    assert ours == theirs
    for name in ("xl/styles.xml", "xl/workbook.xml", "[Content_Types].xml"):
        assert member(tmp_path / "report.xlsx", name) == member(tmp_path / "reference.xlsx", name)


def test_the_report_reads_back_typed_in_openpyxl_and_calamine(tmp_path: Path) -> None:
    path = tmp_path / "report.xlsx"
    write_report(path, HEADERS, outcomes())
    book = openpyxl.load_workbook(path, read_only=True)
    sheet = book["report"]
    assert sheet.max_row == 5 and sheet.max_column == len(HEADERS) + 11  # the <dimension>
    first = next(sheet.iter_rows(min_row=2, max_row=2, values_only=True))
    book.close()
    assert first[1] == "a & b < c > d \"quoted\" 'single'"
    assert first[6] == "literal _x005F_x0041_ escape"  # openpyxl does not undo Excel's escape
    assert first[8] == "bell and  dropped" and first[9] is None
    assert len(first[11]) == 32_767 and len(first[12]) == 16_383
    assert first[16] == 14155550132 and first[20] is True
    assert str(first[22]) == "2024-05-01 00:00:00"
    rows = CalamineWorkbook.from_path(str(path)).get_sheet_by_name("report").to_python()
    assert [len(row) for row in rows] == [len(HEADERS) + 11] * 5
    assert rows[1][6] == "literal _x0041_ escape"  # calamine does, as Excel
    assert rows[1][7] == "non_xFFFE_character_xFFFF_"  # as xlsxwriter writes them
    assert rows[4][0] == "short row" and rows[4][len(HEADERS) + 4] == "no phone & no name"


@pytest.mark.parametrize("text", ["<r>x</r>", "<r><t>bold?</t></r>", "<r></t></is></c></r>"])
def test_a_text_shaped_like_rich_text_xml_comes_back_as_written(tmp_path: Path, text: str) -> None:
    path = tmp_path / "report.xlsx"
    write_report(path, ["Name", "Note"], [(["Ana", text], Outcome("sent", "id", "+14155550100", 1, "", "t"))])
    rows = CalamineWorkbook.from_path(str(path)).get_sheet_by_name("report").to_python()
    assert rows[1][:3] == ["Ana", text, "sent"]
    book = openpyxl.load_workbook(path)
    assert book["report"]["B2"].value == text
    book.close()
