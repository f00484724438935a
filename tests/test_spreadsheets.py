"""Rows and values as people wrote them (issue 10): Excel's row numbers, XLSX rows that must
not vanish, typed cells from an XLSX input back into the report, and files that are refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time as clock
import zipfile
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from dialer import cells, workbook
from dialer.errors import LeadsFileError
from dialer.load import open_leads
from tests.mapped import campaign, mapped, write_csv
from tests.test_cli import KEY, invoke, write_campaign

# --- row numbers -----------------------------------------------------------------------


def test_csv_row_numbers_are_the_ones_excel_shows(tmp_path: Path) -> None:
    # Excel: header row 1, blank row 2, Ana 3, a record with a line break in a cell
    # is one row (4), a line of spaces 5, Bo 6 (same number as Ana).
    path = tmp_path / "leads.csv"
    path.write_text(
        'Name,Phone\n\nAna,+14155550132\n"Cy\nCy",+14155550199\n   \nBo,+14155550132\n', encoding="utf-8"
    )
    leads = mapped(campaign(tmp_path, path))
    assert [(lead.row, lead.name) for lead in leads] == [(3, "Ana"), (4, "Cy\nCy"), (6, "Bo")]
    assert leads[2].error == "same number as row 3"


def test_csv_blank_lines_above_the_header_count_too(tmp_path: Path) -> None:
    path = tmp_path / "leads.csv"
    path.write_text("\n,,\nName,Phone,Note\nAna,+14155550132,x\n", encoding="utf-8")
    leads = mapped(campaign(tmp_path, path))
    assert [lead.row for lead in leads] == [4]


def test_xlsx_row_numbers_are_the_ones_excel_shows(tmp_path: Path) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet["B2"], sheet["C2"] = "Name", "Phone"  # the table starts at B2
    sheet["B3"], sheet["C3"] = "Ana", "+14155550132"
    sheet["B6"], sheet["C6"] = "Bo", "+14155550132"
    sheet["E7"] = "a note right of the table"  # only right of the last header: kept
    book.save(tmp_path / "leads.xlsx")
    leads = mapped(campaign(tmp_path, tmp_path / "leads.xlsx"))
    assert [(lead.row, lead.status) for lead in leads] == [(3, "pending"), (6, "duplicate"), (7, "invalid")]
    assert leads[1].error == "same number as row 3"


# --- formulas with no saved value ------------------------------------------------------


def scripted_workbook(path: Path) -> Path:
    """A workbook as scripts write it: formulas with no saved values (openpyxl saves none)."""
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["Name", "Phone", "Double"])
    sheet.append(["Ana", "+14155550132", "=2*2"])  # a formula in a column the dialer does not need
    sheet.append(["Bo", '="+1415"&"5550133"', 5])  # the phone is a formula
    sheet.append(['=UPPER("cy")', "+14155550134", 6])  # the name is one
    sheet.append([None, None, "=A5&B5"])  # a row of nothing but a formula: kept
    book.save(path)
    return path


def test_formulas_with_no_saved_value_keep_their_text_and_say_so(tmp_path: Path) -> None:
    path = scripted_workbook(tmp_path / "leads.xlsx")
    chunk = next(open_leads(path).read())
    assert chunk.frame.to_numpy().tolist()[0] == ["Ana", "+14155550132", "=2*2"]
    assert chunk.unsaved == {0: ["Double"], 1: ["Phone"], 2: ["Name"], 3: ["Double"]}
    assert type(chunk.frame.iloc[1, 1]) is cells.Formula

    leads = mapped(campaign(tmp_path, path))
    assert [(lead.row, lead.status) for lead in leads] == [
        (2, "pending"),
        (3, "invalid"),
        (4, "invalid"),
        (5, "invalid"),
    ]
    assert leads[1].error.startswith("Phone: a formula with no saved value")
    assert "open and save it in Excel" in leads[1].error
    assert leads[2].error.startswith("Name: a formula with no saved value")
    assert leads[1].values[1] == '="+1415"&"5550133"'


def test_shared_formula_followers_get_their_own_formula(tmp_path: Path) -> None:
    # Excel's shared formulas: B2 holds the text, B3 and B4 only point at it. None has a value.
    sheet = (
        '<worksheet xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"><sheetData>'
        '<row r="1"><c r="A1" t="inlineStr"><is><t>Phone</t></is></c>'
        '<c r="B1" t="inlineStr"><is><t>Name</t></is></c></row>'
        '<row r="2"><c r="A2"><v>14155550132</v></c><c r="B2"><f t="shared" ref="B2:B4" si="0">'
        "A2&amp;&quot;x&quot;</f></c></row>"
        '<row r="3"><c r="A3"><v>14155550133</v></c><c r="B3"><f t="shared" si="0"/></c></row>'
        '<row r="4"><c r="A4"><v>14155550134</v></c><c r="B4"><f t="shared" si="0"/><v></v></c></row>'
        "</sheetData></worksheet>"
    )
    path = tmp_path / "shared.xlsx"
    source = openpyxl.Workbook()
    source.save(path)
    with zipfile.ZipFile(path) as original:
        members = {name: original.read(name) for name in original.namelist()}
    members["xl/worksheets/sheet1.xml"] = sheet.encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as rewritten:
        for name, data in members.items():
            rewritten.writestr(name, data)
    frame = next(open_leads(path).chunks())
    assert frame["Name"].tolist() == ['=A2&"x"', '=A3&"x"', '=A4&"x"']
    assert frame["Phone"].tolist() == ["14155550132", "14155550133", "14155550134"]


# --- typed cells through the journal ---------------------------------------------------


def test_typed_cells_survive_the_journal_and_old_rows_stay_text() -> None:
    row = [
        "Ana",
        cells.typed(14155550132),
        cells.typed(2.5),
        cells.typed(datetime(2024, 5, 1, 10, 30)),
        cells.typed(date(2024, 5, 1)),
        cells.typed(time(9, 15)),
        cells.typed(True),
        cells.Formula("=A1"),
        "",
    ]
    back = cells.decode_row(cells.encode_row(row))
    assert back == row
    assert [type(c) for c in back] == [type(c) for c in row]
    number, moment = back[1], back[3]
    assert isinstance(number, cells.Number) and isinstance(moment, cells.DateTime)
    assert number.value() == 14155550132.0 and moment.value() == datetime(2024, 5, 1, 10, 30)
    # What journals written before typed cells hold: a JSON list of strings.
    old = cells.decode_row(json.dumps(["Ana", "14155550132"]))
    assert old == ["Ana", "14155550132"] and all(type(c) is str for c in old)


def test_xlsx_input_comes_back_typed_in_the_xlsx_report(tmp_path: Path, sandbox: Any) -> None:
    server = sandbox(api_key=KEY)
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["Name", "Phone", "Amount", "Signed up", "Note", "Active"])
    sheet.append(["Ana", 14155550132, 1500.5, datetime(2024, 5, 1, 10, 30), "-2+3 @risky", True])
    sheet.append(["Bo", '="+1415"&"5550133"', 7, date(2024, 1, 2), "=HYPERLINK(1)", False])
    book.save(tmp_path / "leads.xlsx")
    campaign_file = write_campaign(tmp_path, base_url=server.url, leads="leads.xlsx")
    ran = invoke("run", str(campaign_file), key=KEY)
    assert ran.exit_code == 0, ran.output
    out = tmp_path / "report.xlsx"
    assert invoke("report", str(campaign_file), "--out", str(out)).exit_code == 0

    table = list(openpyxl.load_workbook(out).worksheets[0].iter_rows())
    headers = [c.value for c in table[0]]
    ana, bo = ({h: c for h, c in zip(headers, row, strict=False)} for row in table[1:])
    assert (ana["Phone"].value, ana["Phone"].data_type) == (14155550132, "n")
    assert (ana["Amount"].value, ana["Amount"].data_type) == (1500.5, "n")
    assert ana["Signed up"].value == datetime(2024, 5, 1, 10, 30) and ana["Signed up"].is_date
    assert bo["Signed up"].value == datetime(2024, 1, 2) and bo["Signed up"].is_date
    assert (ana["Active"].value, bo["Active"].value) == (True, False)
    # Risky text and the unsaved formula: text cells, as written, no apostrophe.
    assert (ana["Note"].value, ana["Note"].data_type) == ("-2+3 @risky", "s")
    assert (bo["Note"].value, bo["Note"].data_type) == ("=HYPERLINK(1)", "s")
    assert (bo["Phone"].value, bo["Phone"].data_type) == ('="+1415"&"5550133"', "s")
    assert ana["dialer_status"].value == "sent"
    assert bo["dialer_status"].value == "invalid"
    assert bo["dialer_error"].value.startswith("Phone: a formula with no saved value")


# --- files refused with one line -------------------------------------------------------


def test_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "leads.csv"
    os.mkfifo(fifo)
    started = clock.monotonic()
    with pytest.raises(LeadsFileError) as error:
        open_leads(fifo)
    assert str(error.value) == f"{fifo}: a FIFO (named pipe); save the leads to a file and name that file"
    assert clock.monotonic() - started < 5


def test_a_50_mb_header_line_is_refused_not_called_empty(tmp_path: Path) -> None:
    path = tmp_path / "leads.csv"
    path.write_bytes(b"Phone" + b"x" * 50_000_000 + b"\n+14155550132\n")
    with pytest.raises(LeadsFileError) as error:
        open_leads(path)
    assert str(error.value) == (
        f"{path}: the first row is longer than 4 MB with no line end: not a leads file with a header row"
    )


def test_a_long_cell_in_the_first_rows_is_read(tmp_path: Path) -> None:
    path = tmp_path / "leads.csv"
    path.write_text("Name,Phone,Note\nAna,+14155550132," + "n" * 300_000 + "\n", encoding="utf-8")
    leads = open_leads(path)
    assert leads.headers == ["Name", "Phone", "Note"]
    assert len(next(leads.chunks())["Note"][0]) == 300_000


def test_utf16_named_on_a_file_without_bom_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "leads.csv"
    path.write_bytes("Name,Phone\nAna,+14155550132\n".encode("utf-16-le"))
    with pytest.raises(LeadsFileError) as error:
        open_leads(path, encoding="utf-16")
    assert str(error.value) == (
        f"{path}: encoding 'utf-16' needs a byte-order mark, and the file has none;"
        " name the byte order: utf-16-le (what Windows writes) or utf-16-be"
    )
    assert open_leads(path, encoding="utf-16-le").headers == ["Name", "Phone"]


def test_a_workbook_with_absurdly_many_cells_is_refused(tmp_path: Path, monkeypatch: Any) -> None:
    # The real bound is 2**24 cells; a test file that size takes too long to write.
    monkeypatch.setattr(workbook, "MAX_CELLS", 1000)
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    for i in range(300):
        sheet.append(["Ana", f"+1415555{i:04d}", "x", "y"])
    book.save(tmp_path / "bomb.xlsx")
    with pytest.raises(LeadsFileError) as error:
        open_leads(tmp_path / "bomb.xlsx")
    assert "holds more than 1,000 cells" in str(error.value)
    assert str(error.value).startswith(f"{tmp_path / 'bomb.xlsx'}: ")


def test_a_zip_bomb_is_refused_by_its_unpacked_size(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(workbook, "MAX_XML_BYTES", 100_000)
    path = tmp_path / "bomb.xlsx"
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["Phone"])
    sheet.append(["x" * 5_000])
    book.save(path)
    with zipfile.ZipFile(path) as original:
        members = {name: original.read(name) for name in original.namelist()}
    # 1 MB of whitespace inside the sheet: compresses to ~1 KB.
    members["xl/worksheets/sheet1.xml"] = members["xl/worksheets/sheet1.xml"].replace(
        b"<sheetData>", b"<sheetData>" + b" " * 1_000_000
    )
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as rewritten:
        for name, data in members.items():
            rewritten.writestr(name, data)
    assert path.stat().st_size < 20_000
    with pytest.raises(LeadsFileError) as error:
        open_leads(path)
    assert str(error.value) == (
        f"{path}: the workbook unpacks to more than 0 GB of XML (a damaged file or a zip bomb);"
        " save the leads as CSV"
    )


def test_cli_validate_on_a_fifo_exits_2_at_once(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "leads.csv")
    campaign_file = write_campaign(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "dialer", "validate", str(campaign_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "a FIFO (named pipe)" in result.stderr
    assert "Traceback" not in result.stderr


def test_csv_rows_kept_as_written_and_in_order(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "l.csv", [["Name", "Phone"], ["Ana", "+14155550132"], ["", ""], ["Bo", "1"]])
    assert [lead.row for lead in mapped(campaign(tmp_path, path))] == [2, 4]


# --- the report's file, from the command line ------------------------------------------


def test_report_out_pdf_is_refused_and_run_report_pdf_before_any_call(tmp_path: Path, sandbox: Any) -> None:
    server = sandbox(api_key=KEY)
    write_csv(tmp_path / "leads.csv", [["Name", "Phone"], ["Ana", "+14155550132"]])
    campaign_file = write_campaign(tmp_path, base_url=server.url)
    refused = invoke("run", str(campaign_file), "--report", str(tmp_path / "x.pdf"), key=KEY)
    assert refused.exit_code == 2
    assert refused.stderr.strip().endswith("a report is written as .csv or .xlsx, not .pdf; name the file so")
    assert not server.record.exists() or "POST" not in server.record.read_text()
    assert invoke("run", str(campaign_file), key=KEY).exit_code == 0
    out = invoke("report", str(campaign_file), "--out", str(tmp_path / "x.pdf"))
    assert out.exit_code == 2 and "not .pdf" in out.stderr
    assert not (tmp_path / "x.pdf").exists()


def test_a_report_that_cannot_be_written_is_one_line_and_out_recovers(tmp_path: Path, sandbox: Any) -> None:
    server = sandbox(api_key=KEY)
    write_csv(tmp_path / "leads.csv", [["Name", "Phone"], ["Ana", "+14155550132"]])
    campaign_file = write_campaign(
        tmp_path, base_url=server.url, extra='report = "blocked/r.csv"\njournal = "j.sqlite"'
    )
    (tmp_path / "blocked").write_text("a file where the report's folder should be")
    ran = invoke("run", str(campaign_file), key=KEY)
    assert ran.exit_code == 1
    assert "internal error" not in ran.stderr
    assert f"{tmp_path / 'blocked' / 'r.csv'}: cannot write the report (" in ran.stderr
    assert "--out" in ran.stderr
    again = invoke("report", str(campaign_file), "--out", str(tmp_path / "elsewhere.csv"))
    assert again.exit_code == 0, again.output
    assert "sent" in (tmp_path / "elsewhere.csv").read_text(encoding="utf-8-sig")


def test_xlsx_sheet_parsed_for_the_header_serves_one_read_then_is_read_again(
    tmp_path: Path, monkeypatch: Any
) -> None:
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    for row in (["Name", "Phone"], ["Ana", "+14155550132"], ["Bo", "+14155550133"]):
        sheet.append(row)
    book.save(tmp_path / "l.xlsx")
    parsed: list[Path] = []
    real = workbook._sheet

    def counting(path: Path, name: str | None) -> Any:
        parsed.append(path)
        return real(path, name)

    monkeypatch.setattr(workbook, "_sheet", counting)
    leads = open_leads(tmp_path / "l.xlsx")
    first = [row for frame in leads.chunks() for row in frame.to_numpy().tolist()]
    assert len(parsed) == 1  # the header's parse served the rows too
    again = [row for frame in leads.chunks(1) for row in frame.to_numpy().tolist()]
    assert first == again == [["Ana", "+14155550132"], ["Bo", "+14155550133"]]
    assert len(parsed) == 2


@pytest.mark.parametrize("kind", ["csv", "xlsx"])
def test_report_headers_come_back_exactly_as_written(tmp_path: Path, sandbox: Any, kind: str) -> None:
    server = sandbox(api_key=KEY)
    written = [" Name ", "Phone", "", "Phone", "-notes"]
    rows = [written, ["Ana", "+14155550132", "x", "2nd phone", "n"]]
    if kind == "csv":
        write_csv(tmp_path / "leads.csv", rows)
    else:
        book = openpyxl.Workbook()
        sheet = book.active
        assert sheet is not None
        for row in rows:
            sheet.append([cell or None for cell in row])
        book.save(tmp_path / "leads.xlsx")
    campaign_file = write_campaign(tmp_path, base_url=server.url, leads=f"leads.{kind}")
    assert invoke("run", str(campaign_file), key=KEY).exit_code == 0
    out = tmp_path / "again.xlsx"
    assert invoke("report", str(campaign_file), "--out", str(out)).exit_code == 0
    header = [c.value or "" for c in openpyxl.load_workbook(out).worksheets[0][1]]
    assert header[:5] == written
    assert header[5] == "dialer_status"
