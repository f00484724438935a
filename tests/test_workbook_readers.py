"""The two XLSX readers of dialer/workbook.py: python-calamine-plus streams the sheet, and
python-calamine (the reader before it, which holds the whole sheet) still reads what the
fork cannot stream. Both must give the same cells; the stream must give the first rows
before it has read the last."""

from __future__ import annotations

import gc
import os
import types
import zipfile
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import openpyxl
import pytest
import xlsxwriter

from dialer import cells, workbook
from dialer.errors import LeadsFileError
from dialer.load import open_leads

MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"


def with_sheet_xml(path: Path, sheet_xml: str, shared_strings: str | None = None) -> Path:
    """An openpyxl workbook whose first sheet (and shared strings) are replaced by raw XML."""
    openpyxl.Workbook().save(path)
    with zipfile.ZipFile(path) as original:
        members = {name: original.read(name) for name in original.namelist()}
    members["xl/worksheets/sheet1.xml"] = sheet_xml.encode()
    if shared_strings is not None:
        members["xl/sharedStrings.xml"] = shared_strings.encode()
        members["[Content_Types].xml"] = members["[Content_Types].xml"].replace(
            b"</Types>",
            b'<Override PartName="/xl/sharedStrings.xml" ContentType="application/'
            b'vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml"/></Types>',
        )
        members["xl/_rels/workbook.xml.rels"] = members["xl/_rels/workbook.xml.rels"].replace(
            b"</Relationships>",
            b'<Relationship Id="rIdS" Type="http://schemas.openxmlformats.org/officeDocument/2006/'
            b'relationships/sharedStrings" Target="sharedStrings.xml"/></Relationships>',
        )
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as rewritten:
        for name, data in members.items():
            rewritten.writestr(name, data)
    return path


def openpyxl_book(path: Path) -> Path:
    """Shared strings, data from C3, a blank row, Excel's number edge cases, a far cell."""
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    for column, header in enumerate(["Name", "Phone", "When", "N", "B", "T", "Dur"], start=3):
        sheet.cell(3, column, header)
    sheet.append(
        [None, None, "Ana", 14155550132, date(2024, 5, 1), 1500, True, time(9, 15), timedelta(hours=26)]
    )
    sheet.append([None, None, "Bo", 4155550141.0, datetime(2024, 5, 1, 10, 30), 12.5, False, time(0, 0, 1)])
    sheet.append([])
    sheet.append([None, None, "Cy", "+1 (415) 555-0134", datetime(2024, 5, 1), -0.0])
    sheet.append(
        [None, None, "Dee", 1e20, date(1900, 3, 1), 2**53 + 1, 1.0000000001, 1e-7, 123456789012345678]
    )
    sheet.append([None, None, "Ed", "=1+1", "", "   ", "\u00e9t\u00e9 \u4e2d", "x" * 300, "'=quoted"])
    sheet["K20"] = "far"
    book.save(path)
    return path


def xlsxwriter_book(path: Path) -> Path:
    """Inline strings (constant memory), formulas with saved values of every kind, errors."""
    book = xlsxwriter.Workbook(str(path), {"constant_memory": True})
    sheet = book.add_worksheet("Leads")
    day = book.add_format({"num_format": "yyyy-mm-dd"})
    moment = book.add_format({"num_format": "yyyy-mm-dd hh:mm"})
    hours = book.add_format({"num_format": "[h]:mm:ss"})
    clock = book.add_format({"num_format": "hh:mm:ss"})
    sheet.write_row(0, 0, ["Name", "Phone", "When", "F", "Err", "B", "Dur", "T"])
    sheet.write_string(1, 0, "Ana")
    sheet.write_number(1, 1, 14155550132)
    sheet.write_datetime(1, 2, datetime(2024, 5, 1), day)
    sheet.write_formula(1, 3, "=B2*2", None, 28311100264)
    sheet.write_formula(1, 4, "=1/0", None, "#DIV/0!")
    sheet.write_boolean(1, 5, True)
    sheet.write_number(1, 6, 1.0833333333333333, hours)
    sheet.write_number(1, 7, 0.25, clock)
    sheet.write_string(3, 0, "Bo")
    sheet.write_string(3, 1, "+14155550133")
    sheet.write_datetime(3, 2, datetime(2024, 5, 1, 10, 30), moment)
    sheet.write_formula(3, 3, '="a"&"b"', None, "ab")
    sheet.write_formula(3, 4, "=NA()", None, "#N/A")
    sheet.write_formula(3, 5, "=TRUE", None, False)
    sheet.write_number(3, 6, -0.5, hours)
    sheet.write_string(5, 0, "Cy")
    sheet.write_formula(5, 1, "=1+1")  # no saved value
    sheet.write_formula(5, 2, "=TODAY()", day, 45000)
    book.close()
    return path


def raw_book(path: Path) -> Path:
    """What no library writes: shared rich text, t="str", t="e", t="d", gaps, empty rows."""
    strings = (
        f'<sst xmlns="{MAIN}" count="3" uniqueCount="3"><si><t>Name</t></si>'
        '<si><t xml:space="preserve">  Phone </t></si>'
        "<si><r><t>Ri</t></r><r><rPr><b/></rPr><t>ch</t></r></si></sst>"
    )
    sheet = (
        f'<worksheet xmlns="{MAIN}"><dimension ref="B2:E9"/><sheetData>'
        '<row r="2"><c r="B2" t="s"><v>0</v></c><c r="C2" t="s"><v>1</v></c><c r="D2" t="s"><v>2</v></c>'
        '<c r="E2" t="inlineStr"><is><t>Inl</t></is></c></row>'
        '<row r="4"><c r="B4" t="str"><f>"from "&amp;"formula"</f><v>from formula</v></c>'
        '<c r="C4" t="e"><v>#REF!</v></c><c r="D4"><v>45413</v></c><c r="E4"><v>45413.5</v></c></row>'
        '<row r="5"><c r="B5" t="b"><v>1</v></c><c r="C5"><v>1.5E+3</v></c><c r="D5" t="n"><v>-12</v></c>'
        '<c r="E5" t="d"><v>2024-05-01T10:00:00</v></c></row>'
        '<row r="6"><c r="B6" s="0"/><c r="C6" t="s"><v>0</v></c></row>'
        '<row r="7"></row>'
        '<row r="9"><c r="E9"><f>A1</f></c>'
        '<c r="F9" t="inlineStr"><is><t>&lt;tag&gt; &amp; &#233;</t></is></c></row>'
        "</sheetData></worksheet>"
    )
    return with_sheet_xml(path, sheet, strings)


def prefixed_book(path: Path) -> Path:
    """A sheet whose writer prefixes the namespace (<x:row>, <x:c>)."""
    sheet = (
        f'<x:worksheet xmlns:x="{MAIN}"><x:sheetData>'
        '<x:row r="1"><x:c r="A1" t="inlineStr"><x:is><x:t>Phone</x:t></x:is></x:c></x:row>'
        '<x:row r="3"><x:c r="A3"><x:v>14155550132</x:v></x:c><x:c r="B3" t="e"><x:v>#N/A</x:v></x:c></x:row>'
        "</x:sheetData></x:worksheet>"
    )
    return with_sheet_xml(path, sheet)


def _trimmed(row: list[str]) -> list[tuple[str, type]]:
    """The cells with their types, the empty ones at the end dropped (rows are cut or
    padded to the headers later; the two readers end rows at different widths)."""
    while row and row[-1] == "":
        row = row[:-1]
    return [(cell, type(cell)) for cell in row]


# The one difference, on purpose: an error cell shows its text (what Excel shows in the
# cell) where python-calamine gives nothing.
ERRORS = {"#DIV/0!", "#N/A", "#REF!"}


@pytest.mark.parametrize("make", [openpyxl_book, xlsxwriter_book, raw_book, prefixed_book])
def test_the_stream_gives_the_cells_python_calamine_gives(tmp_path: Path, make: Any) -> None:
    path = make(tmp_path / "varied.xlsx")
    streamed = workbook._sheet(path, None)
    assert isinstance(streamed.rows, types.GeneratorType)  # python-calamine-plus's stream
    whole = workbook._whole_sheet(path, streamed.name, streamed.scan)
    assert not isinstance(whole.rows, types.GeneratorType)  # python-calamine's range
    got = [
        (number, _trimmed(["" if cell in ERRORS else cell for cell in row]))
        for number, row in streamed.cells()
    ]
    expected = [(number, _trimmed(row)) for number, row in whole.cells()]
    assert got == expected
    assert len(got) >= 2


def test_the_varied_cells_are_typed_as_excel_shows_them(tmp_path: Path) -> None:
    rows = dict(workbook._sheet(openpyxl_book(tmp_path / "o.xlsx"), None).cells())
    assert sorted(rows) == [3, 4, 5, 7, 8, 9, 20]  # Excel's row numbers; row 6 is blank
    assert rows[4][2:9] == ["Ana", "14155550132", "2024-05-01", "1500", "TRUE", "09:15:00", "26:00:00"]
    assert [type(cell) for cell in rows[4][3:9]] == [
        cells.Number,
        cells.Date,
        cells.Number,
        cells.Boolean,
        cells.Time,
        cells.Duration,
    ]
    assert rows[5][3:5] == ["4155550141", "2024-05-01T10:30:00"]
    assert rows[7][5] == "0"  # -0.0
    # Past 2**53 the float the file holds, as python-calamine gave it (the fork gives an int).
    assert rows[8][3:9] == [
        "1e+20",
        "1900-03-01",
        "9007199254740992.0",
        "1.0000000001",
        "1e-07",
        "1.234567890123457e+17",
    ]
    assert rows[9][3] == "=1+1" and type(rows[9][3]) is cells.Formula
    assert rows[20][10] == "far"
    errors = dict(workbook._sheet(xlsxwriter_book(tmp_path / "x.xlsx"), None).cells())
    assert errors[2][4] == "#DIV/0!" and errors[4][4] == "#N/A"


def test_error_cells_show_their_text_through_the_loader(tmp_path: Path) -> None:
    frame = next(open_leads(prefixed_book(tmp_path / "p.xlsx")).chunks())
    assert frame.to_numpy().tolist() == [["14155550132"]]  # B3 is under no header
    leads = open_leads(xlsxwriter_book(tmp_path / "x.xlsx"))
    assert next(leads.chunks())["Err"].tolist() == ["#DIV/0!", "#N/A", ""]


def out_of_order_book(path: Path) -> Path:
    sheet = (
        f'<worksheet xmlns="{MAIN}"><sheetData>'
        '<row r="1"><c r="A1" t="inlineStr"><is><t>Phone</t></is></c>'
        '<c r="B1" t="inlineStr"><is><t>Name</t></is></c></row>'
        '<row r="3"><c r="A3"><v>14155550133</v></c><c r="B3" t="inlineStr"><is><t>Bo</t></is></c></row>'
        '<row r="2"><c r="A2"><v>14155550132</v></c><c r="B2" t="inlineStr"><is><t>Ana</t></is></c></row>'
        "</sheetData></worksheet>"
    )
    return with_sheet_xml(path, sheet)


def test_rows_stored_out_of_order_are_read_whole_in_excel_order(tmp_path: Path) -> None:
    from python_calamine_plus import CalamineWorkbook

    path = out_of_order_book(tmp_path / "shuffled.xlsx")
    with pytest.raises(Exception, match="not stored in"):  # the fork cannot stream it
        list(CalamineWorkbook.from_path(str(path)).stream_sheet_by_index(0))
    opened = workbook._sheet(path, None)
    assert not opened.scan.in_order
    assert not isinstance(opened.rows, types.GeneratorType)
    leads = open_leads(path)
    frame = next(leads.chunks())
    assert frame.to_numpy().tolist() == [["14155550132", "Ana"], ["14155550133", "Bo"]]
    assert frame.index.tolist() == [0, 1]  # spreadsheet rows 2 and 3


def test_a_cell_filed_under_an_earlier_row_is_one_line(tmp_path: Path) -> None:
    # Rows in order, but row 3 holds a cell addressed A2: the fork stops there.
    sheet = (
        f'<worksheet xmlns="{MAIN}"><sheetData>'
        '<row r="1"><c r="A1" t="inlineStr"><is><t>Phone</t></is></c></row>'
        '<row r="2"><c r="A2"><v>14155550132</v></c></row>'
        '<row r="3"><c r="A3"><v>14155550133</v></c><c r="A2"><v>1</v></c></row>'
        "</sheetData></worksheet>"
    )
    path = with_sheet_xml(tmp_path / "odd.xlsx", sheet)
    with pytest.raises(LeadsFileError) as error:
        list(open_leads(path).chunks())
    assert str(error.value) == (
        f"{path}: the sheet's cells are not stored in row order (a damaged file):"
        " open and save it in Excel, or save the leads as CSV"
    )


def test_the_first_rows_come_before_the_last_is_read(tmp_path: Path) -> None:
    # A damaged last row (a shared string that is not there): python-calamine, which parses
    # the whole sheet first, failed before the header; the stream gives every row before it.
    body = "".join(f'<row r="{n}"><c r="A{n}"><v>1415555{n:04d}</v></c></row>' for n in range(2, 2002))
    sheet = (
        f'<worksheet xmlns="{MAIN}"><sheetData>'
        f'<row r="1"><c r="A1" t="inlineStr"><is><t>Phone</t></is></c></row>{body}'
        '<row r="2002"><c r="A2002" t="s"><v>99</v></c></row>'
        "</sheetData></worksheet>"
    )
    path = with_sheet_xml(tmp_path / "late.xlsx", sheet)
    leads = open_leads(path)
    assert leads.headers == ["Phone"]
    chunks = leads.chunks(500)
    first = next(chunks)
    assert first["Phone"].tolist()[:2] == ["14155550002", "14155550003"]
    seen = len(first)
    with pytest.raises(LeadsFileError) as error:
        for chunk in chunks:
            seen += len(chunk)
    assert seen >= 1500  # the stream reads a cell ahead: the last row's own chunk may fail with it
    assert str(error.value).startswith(f"{path}: cannot read the workbook: ")


def test_equal_cells_are_one_object_as_in_pandas_csv_chunks(tmp_path: Path) -> None:
    # The mapping holds a few chunks at once: repeated names, zones and dates held once each.
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["Name", "Phone", "Signup"])
    for i in range(4):
        sheet.append(["Ana", f"+1415555{i:04d}", date(2024, 5, 1)])
    book.save(tmp_path / "same.xlsx")
    rows = [row for _, row in workbook._sheet(tmp_path / "same.xlsx", None).cells()][1:]
    assert all(row[0] is rows[0][0] and row[2] is rows[0][2] for row in rows)
    assert type(rows[0][2]) is cells.Date and rows[0][2] == "2024-05-01"
    assert len({id(row[1]) for row in rows}) == 4


def test_values_equal_across_types_keep_each_its_own_type(tmp_path: Path) -> None:
    # A column is typed through one table of its distinct values, unless values of different
    # types are equal (True == 1 == 1.0; a formula's text == the same plain text).
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["Phone", "Flag", "Note", "N"])
    sheet.append(["+14155550132", True, "=2*2", 1])
    sheet.append(["+14155550133", 1, None, 1.0])
    sheet.append(["+14155550134", 1.0, "x", 1.5])
    sheet.append(["+14155550135", False, "=2*2", 0])
    book.save(tmp_path / "mixed.xlsx")
    chunk = next(open_leads(tmp_path / "mixed.xlsx").read())
    flags = chunk.frame["Flag"].tolist()
    assert flags == ["TRUE", "1", "1", "FALSE"]
    assert [type(flag) for flag in flags] == [cells.Boolean, cells.Number, cells.Number, cells.Boolean]
    notes = chunk.frame["Note"].tolist()
    assert notes == ["=2*2", "", "x", "=2*2"] and type(notes[0]) is cells.Formula
    assert chunk.unsaved == {0: ["Note"], 3: ["Note"]}
    assert [type(n) for n in chunk.frame["N"].tolist()] == [cells.Number] * 4
    assert chunk.frame["N"].tolist() == ["1", "1", "1.5", "0"]


def test_the_collector_is_on_while_the_chunks_are_used(tmp_path: Path) -> None:
    # The reader pauses the garbage collector while it makes a chunk, never while the
    # caller works on one, nor after a read that failed.
    path = tmp_path / "late.xlsx"
    body = "".join(f'<row r="{n}"><c r="A{n}"><v>1415555{n:04d}</v></c></row>' for n in range(2, 40))
    sheet = (
        f'<worksheet xmlns="{MAIN}"><sheetData>'
        f'<row r="1"><c r="A1" t="inlineStr"><is><t>Phone</t></is></c></row>{body}'
        '<row r="40"><c r="A40" t="s"><v>99</v></c></row>'
        "</sheetData></worksheet>"
    )
    with_sheet_xml(path, sheet)
    seen = []
    with pytest.raises(LeadsFileError):
        for _ in open_leads(path).chunks(10):
            seen.append(gc.isenabled())
    assert seen == [True, True, True] and gc.isenabled()


# --- a big sheet read by a process of its own ------------------------------------------


def _chunks(path: Path, rows: int) -> list[Any]:
    return [
        (chunk.frame.index.tolist(), _typed_frame(chunk.frame), chunk.unsaved)
        for chunk in open_leads(path).read(rows)
    ]


def _typed_frame(frame: Any) -> list[list[tuple[str, type]]]:
    return [[(cell, type(cell)) for cell in row] for row in frame.to_numpy().tolist()]


@pytest.mark.parametrize("make", [openpyxl_book, xlsxwriter_book, raw_book, prefixed_book])
def test_the_reading_process_gives_the_chunks_this_one_gives(
    tmp_path: Path, make: Any, monkeypatch: Any, forked: list[int]
) -> None:
    path = make(tmp_path / "varied.xlsx")
    with monkeypatch.context() as here_only:
        here_only.setattr(workbook, "PROCESS_BYTES", 1 << 62)  # read in this process
        here = _chunks(path, 2)
    assert not forked
    assert _chunks(path, 2) == here
    # Read there (two processes for a sheet with formulas with no saved value: the one
    # started before the bounds pass found them is stopped), and every one reaped.
    assert _reaped(forked)


def test_the_reading_process_names_the_formulas_with_no_saved_value(tmp_path: Path, monkeypatch: Any) -> None:
    from tests.test_spreadsheets import scripted_workbook

    monkeypatch.setattr(workbook, "PROCESS_BYTES", 0)
    chunk = next(open_leads(scripted_workbook(tmp_path / "leads.xlsx")).read())
    assert chunk.unsaved == {0: ["Double"], 1: ["Phone"], 2: ["Name"], 3: ["Double"]}
    assert type(chunk.frame.iloc[1, 1]) is cells.Formula


def test_the_reading_process_reports_a_damaged_row_in_one_line(tmp_path: Path, monkeypatch: Any) -> None:
    body = "".join(f'<row r="{n}"><c r="A{n}"><v>1415555{n:04d}</v></c></row>' for n in range(2, 2002))
    sheet = (
        f'<worksheet xmlns="{MAIN}"><sheetData>'
        f'<row r="1"><c r="A1" t="inlineStr"><is><t>Phone</t></is></c></row>{body}'
        '<row r="2002"><c r="A2002" t="s"><v>99</v></c></row>'
        "</sheetData></worksheet>"
    )
    path = with_sheet_xml(tmp_path / "late.xlsx", sheet)
    monkeypatch.setattr(workbook, "PROCESS_BYTES", 0)
    chunks = open_leads(path).chunks(500)
    assert next(chunks)["Phone"].tolist()[:2] == ["14155550002", "14155550003"]
    with pytest.raises(LeadsFileError) as error:
        list(chunks)
    assert str(error.value).startswith(f"{path}: cannot read the workbook: ")
    assert "\n" not in str(error.value)


def test_a_read_stopped_early_ends_its_reading_process(tmp_path: Path, forked: list[int]) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["Name", "Phone"])
    for i in range(3000):
        sheet.append(["Ana", f"+1415555{i:04d}"])
    book.save(tmp_path / "l.xlsx")
    chunks = open_leads(tmp_path / "l.xlsx").chunks(100)
    assert len(next(chunks)) == 100
    assert isinstance(chunks, types.GeneratorType)
    chunks.close()
    assert len(forked) == 1 and _reaped(forked)


@pytest.fixture
def forked(monkeypatch: Any) -> list[int]:
    """Every sheet read by a process of its own; the pids of those processes."""
    forks: list[int] = []
    real_fork = os.fork

    def fork() -> int:
        pid = real_fork()
        if pid:
            forks.append(pid)
        return pid

    monkeypatch.setattr(workbook, "PROCESS_BYTES", 0)
    monkeypatch.setattr(os, "fork", fork)
    return forks


def _reaped(forks: list[int]) -> bool:
    return bool(forks) and not any(Path(f"/proc/{pid}").exists() for pid in forks)


def test_the_bounds_still_refuse_a_sheet_read_ahead(
    tmp_path: Path, monkeypatch: Any, forked: list[int]
) -> None:
    monkeypatch.setattr(workbook, "MAX_CELLS", 1000)
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    for i in range(300):
        sheet.append(["Ana", f"+1415555{i:04d}", "x", "y"])
    book.save(tmp_path / "bomb.xlsx")
    with pytest.raises(LeadsFileError, match="holds more than 1,000 cells"):
        open_leads(tmp_path / "bomb.xlsx")
    assert _reaped(forked)


def test_rows_out_of_order_read_ahead_are_read_whole_instead(tmp_path: Path, forked: list[int]) -> None:
    frame = next(open_leads(out_of_order_book(tmp_path / "shuffled.xlsx")).chunks())
    assert frame.to_numpy().tolist() == [["14155550132", "Ana"], ["14155550133", "Bo"]]
    assert frame.index.tolist() == [0, 1]
    assert _reaped(forked)


def test_a_sheet_opened_again_ends_the_last_ones_reading_process(tmp_path: Path, forked: list[int]) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    for row in (["Name", "Phone"], ["Ana", "+14155550132"], ["Bo", "+14155550133"]):
        sheet.append(row)
    book.save(tmp_path / "l.xlsx")
    leads = open_leads(tmp_path / "l.xlsx")  # read ahead, never read
    assert len(forked) == 1
    again = open_leads(tmp_path / "l.xlsx")
    assert _reaped(forked[:1])
    rows = [row for frame in again.chunks(1) for row in frame.to_numpy().tolist()]
    assert rows == [["Ana", "+14155550132"], ["Bo", "+14155550133"]]
    assert [row for frame in leads.chunks() for row in frame.to_numpy().tolist()] == rows  # read again
    assert _reaped(forked) and len(forked) == 3


def test_an_empty_sheet_read_ahead_is_one_line(tmp_path: Path, forked: list[int]) -> None:
    openpyxl.Workbook().save(tmp_path / "empty.xlsx")
    with pytest.raises(LeadsFileError, match="is empty"):
        open_leads(tmp_path / "empty.xlsx")
    assert _reaped(forked)
