"""Reading leads files: encodings, delimiters, XLSX cells, chunks, and each bad file's one line."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from pathlib import Path

import openpyxl
import pandas as pd
import pytest

from dialer.errors import LeadsFileError
from dialer.load import LeadsFile, cell_text, open_leads

ROWS = [
    ["José Müller", "+1 415 555 0132", "Zürich"],
    ["Renée Besançon", "(415) 555-0133", "Łódź, Kraków"],  # a delimiter inside a value
]


def write_text(path: Path, rows: list[list[str]], delimiter: str, encoding: str) -> Path:
    def cell(value: str) -> str:
        return f'"{value}"' if delimiter in value else value

    lines = [delimiter.join(cell(v) for v in row) for row in rows]
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode(encoding))
    return path


def read_all(leads: LeadsFile, rows: int = 50_000) -> list[list[str]]:
    return [row for frame in leads.chunks(rows) for row in frame.to_numpy().tolist()]


@pytest.mark.parametrize(
    ("name", "encoding", "delimiter", "expected_encoding"),
    [
        pytest.param("a.csv", "utf-8", ",", "utf-8", id="utf8-comma"),
        pytest.param("a.csv", "utf-8-sig", "|", "utf-8-sig", id="utf8-bom-pipe"),
        pytest.param("a.csv", "cp1252", ";", "cp1252", id="cp1252-semicolon"),
        pytest.param("a.txt", "utf-16", "\t", "utf-16", id="utf16-bom-tab"),
        pytest.param("a.tsv", "utf-16-be", "\t", "utf-16", id="utf16be-bom-tsv"),
        pytest.param("a.csv", "utf-32", ",", "utf-32", id="utf32-bom-comma"),
    ],
)
def test_csv_encodings_and_delimiters_keep_accents(
    tmp_path: Path, name: str, encoding: str, delimiter: str, expected_encoding: str
) -> None:
    rows = [["Name", "Phone", "City"], *ROWS]
    if encoding == "cp1252":
        rows[2][2] = "Besançon, Côte-d'Or"  # Ł is not in Windows-1252
    if encoding == "utf-16-be":
        # Python's utf-16-be codec writes no BOM: put one in front, as Excel does.
        path = tmp_path / name
        text = "\r\n".join(delimiter.join(r) for r in rows) + "\r\n"
        path.write_bytes(b"\xfe\xff" + text.encode("utf-16-be"))
    else:
        path = write_text(tmp_path / name, rows, delimiter, encoding)

    leads = open_leads(path)

    assert leads.headers == ["Name", "Phone", "City"]
    assert leads.delimiter == delimiter
    assert leads.encoding == expected_encoding
    assert read_all(leads) == rows[1:]


def test_utf8_file_with_a_stray_windows_byte_far_down_is_still_read(tmp_path: Path) -> None:
    # The first 64 KB are UTF-8; a row pasted from a Windows export comes later.
    filler = "".join(f"Zoë {i},+1415555{i % 10000:04d}\n" for i in range(4000)).encode()
    path = tmp_path / "mixed.csv"
    path.write_bytes(b"Name,Phone\n" + filler + "Renée,+14155550199\n".encode("cp1252"))

    leads = open_leads(path)
    rows = read_all(leads)

    assert leads.encoding == "utf-8"
    assert rows[0] == ["Zoë 0", "+14155550000"]
    assert rows[-1] == ["Renée", "+14155550199"]


def test_campaign_encoding_is_used_strictly(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes("Name;Phone\nJosé;1\n".encode("latin-1"))
    assert read_all(open_leads(path, encoding="latin-1")) == [["José", "1"]]
    with pytest.raises(LeadsFileError) as error:
        open_leads(path, encoding="utf-8")
    assert str(error.value) == f"{path}: cannot be read as utf-8: invalid continuation byte"
    with pytest.raises(LeadsFileError) as error:
        open_leads(path, encoding="klingon")
    assert str(error.value) == f"{path}: unknown encoding 'klingon'"


def test_headers_are_trimmed_named_and_made_unique(tmp_path: Path) -> None:
    path = tmp_path / "h.csv"
    path.write_text(" Phone ,Phone,,Phone (2), Name ,,\n1,2,3,4,5,,\n", encoding="utf-8")
    leads = open_leads(path)
    assert leads.headers == ["Phone", "Phone (3)", "Column C", "Phone (2)", "Name"]
    assert read_all(leads) == [["1", "2", "3", "4", "5"]]


def test_cells_stay_text_as_written(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("Zip,Amount,Flag,Note\n00123,1500.0,NA,nan\n,  x  ,None,\n", encoding="utf-8")
    assert read_all(open_leads(path)) == [["00123", "1500.0", "NA", "nan"], ["", "  x  ", "None", ""]]


def test_short_rows_padded_blank_rows_skipped_but_counted_quoted_newlines_kept(tmp_path: Path) -> None:
    path = tmp_path / "ragged.csv"
    path.write_text('\n\nName,Phone,Note\n\nAna,1\n,,\n"Bo\nBo",2,"a, b"\n   \nCy,3,x,,\n', encoding="utf-8")
    leads = open_leads(path)
    frames = list(leads.chunks())
    assert leads.headers == ["Name", "Phone", "Note"]
    assert frames[0].to_numpy().tolist() == [
        ["Ana", "1", ""],
        ["Bo\nBo", "2", "a, b"],
        ["Cy", "3", "x"],  # trailing empty cells are not extra cells
    ]
    # Blank rows are not records, but they count: Excel shows Ana on row 5, the
    # two-line "Bo\nBo" on row 7 (one row, as Excel opens it) and Cy on row 9.
    assert list(frames[0].index + 2) == [5, 7, 9]


def test_extra_cells_with_text_are_flagged_and_too_many_refused(tmp_path: Path) -> None:
    path = tmp_path / "extra.csv"
    path.write_text("Name,Phone\nSmith, John,+14155550132\nAna,1\n", encoding="utf-8")
    chunks = list(open_leads(path).read())
    assert chunks[0].frame.to_numpy().tolist() == [["Smith", " John"], ["Ana", "1"]]
    assert chunks[0].overflow == {0: 3}

    path.write_text("Name,Phone\nAna,1\n" + ",".join("x" * 20) + "\n", encoding="utf-8")
    with pytest.raises(LeadsFileError) as error:
        list(open_leads(path).chunks())
    assert str(error.value) == (
        f"{path}: line 3 has 20 cells but the header has 2; quote values that contain ','"
    )


@pytest.mark.parametrize(
    ("text", "delimiter"),
    [
        pytest.param("Phone\n+14155550132\n", ",", id="single-column"),
        pytest.param("Name;Phone;Amount\nAna;1;1,5\nBo;2;2,75\n", ";", id="semicolon-decimal-comma"),
        pytest.param("Name|Phone\n", "|", id="header-only-pipe"),
        pytest.param("Name\tPhone, work\nAna\t1\n", "\t", id="tab-comma-in-header"),
    ],
)
def test_delimiter_is_sniffed(tmp_path: Path, text: str, delimiter: str) -> None:
    path = tmp_path / "s.txt"
    path.write_text(text, encoding="utf-8")
    assert open_leads(path).delimiter == delimiter


def test_chunks_of_three_give_the_same_rows(tmp_path: Path) -> None:
    rows = [[f"Name {i}", f"+1415555{i:04d}"] for i in range(10)]
    path = write_text(tmp_path / "ten.csv", [["Name", "Phone"], *rows], ",", "utf-8")
    leads = open_leads(path)
    frames = list(leads.chunks(3))
    assert [len(f) for f in frames] == [3, 3, 3, 1]
    assert [i for f in frames for i in f.index] == list(range(10))
    assert read_all(leads, 3) == rows
    assert all(list(f.columns) == ["Name", "Phone"] for f in frames)


# --- XLSX ------------------------------------------------------------------------------


def write_xlsx(path: Path, sheets: dict[str, list[list[object]]]) -> Path:
    workbook = openpyxl.Workbook()
    workbook.remove(workbook.active)
    for title, rows in sheets.items():
        sheet = workbook.create_sheet(title)
        for row in rows:
            sheet.append(row)
    workbook.save(path)
    return path


def test_xlsx_cells_are_read_as_text_a_person_would_write(tmp_path: Path) -> None:
    path = write_xlsx(
        tmp_path / "leads.xlsx",
        {
            "Leads": [
                ["Name ", "Phone", "Amount", "Rate", "Signed", "Call at", "Met", "Active"],
                [
                    "José",
                    14155550132,
                    1500,
                    0.1,
                    date(2024, 1, 1),
                    time(9, 30),
                    datetime(2024, 1, 1, 9, 30),
                    True,
                ],
                [None, None, None, None, None, None, None, None],  # a blank row: skipped
                ["Zoë", 4155550141.0, 1500.0, 2.5, datetime(2024, 3, 5), None, None, False],
            ]
        },
    )
    leads = open_leads(path)
    assert (leads.headers, leads.sheet, leads.encoding) == (
        ["Name", "Phone", "Amount", "Rate", "Signed", "Call at", "Met", "Active"],
        "Leads",
        None,
    )
    assert read_all(leads) == [
        ["José", "14155550132", "1500", "0.1", "2024-01-01", "09:30:00", "2024-01-01T09:30:00", "TRUE"],
        ["Zoë", "4155550141", "1500", "2.5", "2024-03-05", "", "", "FALSE"],
    ]


def test_xlsx_named_sheet_blank_top_rows_and_cells_outside_the_table(tmp_path: Path) -> None:
    path = write_xlsx(
        tmp_path / "book.xlsm",
        {
            "Notes": [["not the leads"]],
            "Spring": [
                [],
                [None, None],
                ["Name", "Phone"],
                ["Ana", "+1 415 555 0132", "stray"],
                [None, None, "stray only"],
                ["Bo"],
            ],
        },
    )
    leads = open_leads(path, sheet="spring")  # sheet names match ignoring case
    assert (leads.sheet, leads.headers, leads.header_row) == ("Spring", ["Name", "Phone"], 3)
    # The row with text only right of the last header does not vanish: its cells
    # under the headers are empty (the mapping says what is missing).
    assert read_all(leads) == [["Ana", "+1 415 555 0132"], ["", ""], ["Bo", ""]]
    assert [i + 2 for frame in leads.chunks() for i in frame.index] == [4, 5, 6]
    assert open_leads(path).sheet == "Notes"  # the first sheet by default


def test_xlsx_chunks_of_three(tmp_path: Path) -> None:
    rows: list[list[object]] = [[f"N{i}", 14155550100 + i] for i in range(10)]
    path = write_xlsx(tmp_path / "ten.xlsx", {"S": [["Name", "Phone"], *rows]})
    frames = list(open_leads(path).chunks(3))
    assert [len(f) for f in frames] == [3, 3, 3, 1]
    assert [i for f in frames for i in f.index] == list(range(10))
    assert frames[3].to_numpy().tolist() == [["N9", "14155550109"]]


def test_workbook_renamed_to_csv_is_read_as_a_workbook(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "leads.csv", {"S": [["Phone"], [14155550132]]})
    assert read_all(open_leads(path)) == [["14155550132"]]


@pytest.mark.parametrize(
    ("value", "text"),
    [
        pytest.param(None, "", id="none"),
        pytest.param(14155550132, "14155550132", id="int"),
        pytest.param(4155550141.0, "4155550141", id="integral-float"),
        pytest.param(0.1, "0.1", id="float"),
        pytest.param(1e20, "1e+20", id="huge-float"),
        pytest.param(True, "TRUE", id="bool"),
        pytest.param(datetime(2024, 1, 1), "2024-01-01", id="midnight"),
        pytest.param(datetime(2024, 1, 1, 9, 30, 5), "2024-01-01T09:30:05", id="datetime"),
        pytest.param(date(2024, 2, 29), "2024-02-29", id="date"),
        pytest.param(time(9, 30), "09:30:00", id="time"),
        pytest.param(timedelta(hours=26, minutes=5), "26:05:00", id="duration"),
        pytest.param(" as typed ", " as typed ", id="text"),
    ],
)
def test_cell_text(value: object, text: str) -> None:
    assert cell_text(value) == text


# --- bad files ---------------------------------------------------------------------------


def test_missing_sheet_lists_the_sheets(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "b.xlsx", {"Leads": [["Phone"]], "Old": [["Phone"]]})
    with pytest.raises(LeadsFileError) as error:
        open_leads(path, sheet="Spring")
    assert str(error.value) == f'{path}: no sheet "Spring"; the sheets are: "Leads", "Old"'


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        pytest.param("leads.csv", None, "file not found", id="missing"),
        pytest.param("leads.csv", b"", "file is empty", id="empty"),
        pytest.param("leads.csv", b"\r\n\n  \n,,\n", "file is empty (no header row)", id="blank-lines"),
        pytest.param("leads.csv", b"\xef\xbb\xbf", "file is empty (no header row)", id="bom-only"),
        pytest.param(
            "leads.csv", b"Name,Phone\x00\x01\x02", "not a text file (it holds binary data)", id="binary"
        ),
        pytest.param("leads.xlsx", b"Name,Phone\n", "not a valid XLSX file", id="xlsx-not-zip"),
        pytest.param("leads.xlsx", b"PK\x03\x04broken", "not a valid XLSX file", id="xlsx-bad-zip"),
        pytest.param(
            "leads.csv",
            b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 100,
            "an old Excel .xls workbook; save it as .xlsx or CSV",
            id="old-xls-as-csv",
        ),
        pytest.param(
            "leads.xls",
            b"whatever",
            "unsupported file type .xls (use .csv, .tsv, .txt, .xlsx or .xlsm)",
            id="xls",
        ),
        pytest.param(
            "leads",
            b"Phone\n",
            "unsupported file without an extension (use .csv, .tsv, .txt, .xlsx or .xlsm)",
            id="no-extension",
        ),
    ],
)
def test_bad_file_gives_one_line(tmp_path: Path, name: str, content: bytes | None, problem: str) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(LeadsFileError) as error:
        open_leads(path)
    assert str(error.value) == f"{path}: {problem}"


def test_empty_sheet_and_folder(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "e.xlsx", {"Leads": []})
    with pytest.raises(LeadsFileError) as error:
        open_leads(path)
    assert str(error.value) == f"{path}: the first sheet is empty (no header row)"
    folder = tmp_path / "dir.csv"
    folder.mkdir()
    with pytest.raises(LeadsFileError) as error:
        open_leads(folder)
    assert str(error.value) == f"{folder}: is a folder, not a leads file"


def test_frames_hold_python_strings_only(tmp_path: Path) -> None:
    path = tmp_path / "n.csv"
    path.write_text("A,B\n,1\nnull,\n", encoding="utf-8")
    frame = next(open_leads(path).chunks())
    assert not frame.isna().to_numpy().any()
    assert all(type(v) is str for v in frame.to_numpy().ravel())
    assert isinstance(frame, pd.DataFrame)


def test_a_longer_row_after_the_first_chunks_is_flagged_and_no_chunk_comes_twice(tmp_path: Path) -> None:
    # Read first with as many columns as the header (faster), then again with slack columns
    # from the row pandas refused: the chunks already given are not given again.
    path = tmp_path / "late.csv"
    path.write_text("Name,Phone\nA,1\nB,2\n\nC,3\nD,4,x\nE,5,,\nF,6\n", encoding="utf-8")
    chunks = list(open_leads(path).read(2))
    assert [chunk.frame.to_numpy().tolist() for chunk in chunks] == [
        [["A", "1"], ["B", "2"]],
        [["C", "3"]],  # the blank row is counted, not read
        [["D", "4"], ["E", "5"]],
        [["F", "6"]],
    ]
    assert [list(chunk.frame.index + 2) for chunk in chunks] == [[2, 3], [5], [6, 7], [8]]
    assert [chunk.overflow for chunk in chunks] == [{}, {}, {4: 3}, {}]
