"""Spreadsheets -> rows of text: CSV/TSV/TXT (sniffed delimiter and encoding) and XLSX/XLSM.

Every cell comes out as the text a person would read in it: "" for an empty
cell, 1500 not "1500.0", dates as ISO 8601. Large files are streamed in
chunks so memory does not grow with the number of rows.

Choices a user may meet:

- Text encodings: a BOM decides (UTF-8, UTF-16, UTF-32). Without one, a file
  whose first 64 KB are valid UTF-8 is read as UTF-8, and any stray byte later
  on that is not UTF-8 is read as Windows-1252 (files pasted together from two
  exports are common); otherwise the whole file is Windows-1252, what Excel on
  Windows writes. A campaign `encoding` is taken at its word, strictly.
- Rows shorter than the header are padded with "". Rows with extra cells that
  are empty (trailing delimiters) are read as if the cells were not there.
  A CSV row with extra cells that hold text is read, and flagged in
  `Chunk.overflow`: it usually means a value held an unquoted delimiter and the
  cells are shifted, so the mapping refuses that row (it names the problem)
  rather than dial it with the wrong values. In XLSX a cell under no header is
  simply outside the table and is ignored.
- Blank rows (every cell empty) are skipped, in CSV and XLSX alike, and do not
  count as records: the record index starts at 0 with the first non-blank row
  after the header.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt
import pandas as pd

from dialer.errors import LeadsFileError

TEXT_SUFFIXES = (".csv", ".tsv", ".txt")
XLSX_SUFFIXES = (".xlsx", ".xlsm")
SUPPORTED_SUFFIXES = TEXT_SUFFIXES + XLSX_SUFFIXES

DELIMITERS = (",", "\t", ";", "|")
_SAMPLE_BYTES = 64 * 1024
# A CSV row may carry this many cells beyond the header before the file is
# refused outright; up to it, the row is read and flagged (see Chunk.overflow).
_SLACK_COLUMNS = 8
_ZIP_MAGIC = b"PK\x03\x04"
_OLE2_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"  # the pre-2007 binary .xls
_BOMS = (
    # UTF-32 first: its little-endian BOM begins with UTF-16's.
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_TOO_MANY_FIELDS = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")


def _cp1252_byte(byte: int) -> str:
    # Windows maps the five bytes cp1252 leaves undefined (0x81, 0x8D, ...) to
    # the C1 control characters of the same value; Python's codec refuses them.
    try:
        return bytes([byte]).decode("cp1252")
    except UnicodeDecodeError:
        return chr(byte)


def _utf8_else_cp1252(error: UnicodeError) -> tuple[str, int]:
    """Error handler: bytes that are not UTF-8 are read as Windows-1252."""
    if not isinstance(error, UnicodeDecodeError):
        raise error
    bad = error.object[error.start : error.end]
    return "".join(_cp1252_byte(b) for b in bad), error.end


codecs.register_error("dialer-utf8-else-cp1252", _utf8_else_cp1252)
codecs.register_error("dialer-cp1252-c1", _utf8_else_cp1252)


@dataclass(frozen=True)
class Chunk:
    """Up to `rows` records of a leads file, as `LeadsFile.read` yields them.

    `frame` has the file's headers as columns and every value a str; its index
    is the record index (0 = first data row, so the spreadsheet row is 2 + index).
    `overflow` maps the record index of each CSV row that had non-empty cells
    beyond the last header to its number of cells.
    """

    frame: pd.DataFrame
    overflow: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class LeadsFile:
    """An opened leads file: its headers (trimmed, in file order) and a way to stream its rows."""

    path: Path
    headers: list[str]
    encoding: str | None  # the encoding used for text files, None for XLSX
    delimiter: str | None  # the sniffed delimiter for text files, None for XLSX
    sheet: str | None  # the sheet read, for XLSX
    # How undecodable bytes are handled: "strict" when the campaign named the
    # encoding, else a fallback handler (see the module docstring).
    encoding_errors: str = "strict"
    # Cells in the header row as written, trailing empty ones included (text files).
    header_cells: int = 0

    def chunks(self, rows: int = 50_000) -> Iterator[pd.DataFrame]:
        """Yield DataFrames of at most `rows` rows, columns = headers, every value a str."""
        for chunk in self.read(rows):
            yield chunk.frame

    def read(self, rows: int = 50_000) -> Iterator[Chunk]:
        """Like `chunks`, with what the loader noticed about each row (see `Chunk`)."""
        if rows < 1:
            raise ValueError("rows must be at least 1")
        if self.encoding is None:
            yield from _xlsx_chunks(self, rows)
        else:
            yield from _text_chunks(self, rows)


def open_leads(path: Path, *, encoding: str | None = None, sheet: str | None = None) -> LeadsFile:
    """Open a leads file; raise LeadsFileError (one line, naming the file) if it cannot be read."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        kind = f"file type {suffix}" if suffix else "file without an extension"
        raise LeadsFileError(f"{path}: unsupported {kind} (use .csv, .tsv, .txt, .xlsx or .xlsm)")
    try:
        with path.open("rb") as handle:
            head = handle.read(_SAMPLE_BYTES)
    except FileNotFoundError:
        raise LeadsFileError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise LeadsFileError(f"{path}: is a folder, not a leads file") from None
    except OSError as exc:
        raise LeadsFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not head:
        raise LeadsFileError(f"{path}: file is empty")
    if head.startswith(_OLE2_MAGIC):
        raise LeadsFileError(f"{path}: an old Excel .xls workbook; save it as .xlsx or CSV")
    # A workbook renamed to .csv is still a workbook: read what the user has.
    if suffix in XLSX_SUFFIXES or head.startswith(_ZIP_MAGIC):
        return _open_xlsx(path, sheet)
    return _open_text(path, head, encoding)


# --- text files ----------------------------------------------------------------------


def _choose_encoding(path: Path, head: bytes, encoding: str | None) -> tuple[str, str]:
    """(encoding, errors handler) for a text file, from the campaign or from its bytes."""
    bom = next((name for magic, name in _BOMS if head.startswith(magic)), None)
    if encoding is not None:
        try:
            name = codecs.lookup(encoding).name
        except LookupError:
            raise LeadsFileError(f"{path}: unknown encoding {encoding!r}") from None
        # "utf-8" on a file with a BOM means utf-8-sig: the BOM is not a character of the header.
        if name == "utf-8" and bom == "utf-8-sig":
            return "utf-8-sig", "strict"
        return encoding, "strict"
    if bom is not None:
        return bom, "strict"
    if b"\x00" in head:
        raise LeadsFileError(f"{path}: not a text file (it holds binary data)")
    try:
        # final=False: a multi-byte character cut at the end of the sample is fine.
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return "cp1252", "dialer-cp1252-c1"
    return "utf-8", "dialer-utf8-else-cp1252"


def _read_sample(path: Path, encoding: str, errors: str) -> tuple[str, bool]:
    """The first ~64 KB of text (whole lines only) and whether it is the whole file."""
    decoder = codecs.getincrementaldecoder(encoding)(errors)
    parts: list[str] = []
    read = 0
    with path.open("rb") as handle:
        while True:
            block = handle.read(_SAMPLE_BYTES)
            read += len(block)
            parts.append(decoder.decode(block, final=not block))
            if not block:
                return "".join(parts), True
            # Enough once a whole line is in; a header longer than 4 MB is not a header.
            if read >= 64 * _SAMPLE_BYTES or (
                read >= _SAMPLE_BYTES and ("\n" in parts[-1] or "\r" in parts[-1])
            ):
                break
    sample = "".join(parts)
    cut = max(sample.rfind("\n"), sample.rfind("\r"))
    return (sample[: cut + 1] if cut >= 0 else sample), False


def _records(sample: str, delimiter: str) -> list[list[str]]:
    """Non-blank records of the sample, as pandas will see them."""
    try:
        rows = list(csv.reader(io.StringIO(sample, newline=""), delimiter=delimiter))
    except csv.Error:
        return []
    return [row for row in rows if not _is_blank(row)]


def _is_blank(row: Sequence[str]) -> bool:
    # pandas skips empty and whitespace-only lines; a row of empty cells is
    # blank too (Excel writes a blank row as ",,,").
    return all(cell == "" for cell in row) or (len(row) == 1 and not row[0].strip())


def _sniff_delimiter(sample: str, complete: bool, preferred: str) -> str:
    """The delimiter that splits the sample into the most rows as wide as the header.

    csv.Sniffer guesses from character frequencies and quote positions and is
    easily fooled (a decimal comma in a semicolon file); counting rows that
    agree with the header is simpler to reason about.
    """
    order = [preferred] + [d for d in DELIMITERS if d != preferred]
    best, best_key = ",", (-1, -1, 0)
    for rank, delimiter in enumerate(order):
        records = _records(sample, delimiter)
        if not complete:
            records = records[:-1]  # the last line may be cut mid-record
        if not records:
            continue
        width = len(records[0])
        agreeing = sum(1 for row in records[1:] if len(row) == width)
        key = (agreeing if width > 1 else -1, width, -rank)
        if key > best_key:
            best, best_key = delimiter, key
    return best if best_key[0] >= 0 else ","


def _column_letter(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        letters = chr(65 + rem) + letters
    return letters


def _clean_headers(cells: Sequence[str]) -> list[str]:
    """Trim, drop trailing empty headers, name empty ones, and make them unique."""
    names = [cell.strip().lstrip("\ufeff").strip() for cell in cells]
    while names and not names[-1]:
        names.pop()
    names = [name or f"Column {_column_letter(i)}" for i, name in enumerate(names)]
    written = set(names)
    unique: list[str] = []
    for name in names:
        candidate, n = name, 2
        # "Phone", "Phone" -> "Phone", "Phone (2)", stepping over any "Phone (2)" the file has.
        while candidate in unique or (candidate != name and candidate in written):
            candidate = f"{name} ({n})"
            n += 1
        unique.append(candidate)
    return unique


def _open_text(path: Path, head: bytes, encoding: str | None) -> LeadsFile:
    chosen, errors = _choose_encoding(path, head, encoding)
    try:
        sample, complete = _read_sample(path, chosen, errors)
    except UnicodeDecodeError as exc:
        raise LeadsFileError(f"{path}: cannot be read as {chosen}: {exc.reason}") from None
    except OSError as exc:
        raise LeadsFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if "\x00" in sample:
        raise LeadsFileError(f"{path}: not a text file (it holds binary data)")
    preferred = "\t" if path.suffix.lower() == ".tsv" else ","
    delimiter = _sniff_delimiter(sample, complete, preferred)
    records = _records(sample, delimiter)
    if not records:
        raise LeadsFileError(f"{path}: file is empty (no header row)")
    headers = _clean_headers(records[0])
    if not headers:
        raise LeadsFileError(f"{path}: the header row is empty")
    return LeadsFile(
        path=path,
        headers=headers,
        encoding=chosen,
        delimiter=delimiter,
        sheet=None,
        encoding_errors=errors,
        header_cells=len(records[0]),
    )


def _text_chunks(leads: LeadsFile, rows: int) -> Iterator[Chunk]:
    width = len(leads.headers)
    # Positional names with slack: pandas then pads short rows with "" and
    # accepts a few extra cells instead of stopping the whole file.
    names = [str(i) for i in range(max(width, leads.header_cells) + _SLACK_COLUMNS)]
    path = leads.path
    try:
        reader = pd.read_csv(
            path,
            sep=leads.delimiter,
            header=None,
            names=names,
            index_col=False,
            dtype=object,
            na_filter=False,  # no type or NA inference: "00123" and "NA" stay as written
            skip_blank_lines=True,
            quotechar='"',
            doublequote=True,
            encoding=leads.encoding,
            encoding_errors=leads.encoding_errors,
            chunksize=rows,
            engine="c",
        )
    except (OSError, UnicodeError, pd.errors.ParserError) as exc:
        raise LeadsFileError(f"{path}: cannot read: {_one_line(exc)}") from None
    header_pending = True
    start = 0
    with reader:
        while True:
            try:
                # One more row while the header record is still to come, so
                # that every chunk but the last holds `rows` rows.
                frame = reader.get_chunk(rows + 1 if header_pending else rows)
            except StopIteration:
                return
            except UnicodeError as exc:
                reason = getattr(exc, "reason", str(exc))
                raise LeadsFileError(f"{path}: cannot be read as {leads.encoding}: {reason}") from None
            except pd.errors.ParserError as exc:
                raise LeadsFileError(f"{path}: {_parser_problem(exc, width, leads)}") from None
            except (OSError, ValueError) as exc:
                raise LeadsFileError(f"{path}: cannot read: {_one_line(exc)}") from None
            blank = _blank_rows(frame)
            if blank.any():
                frame = frame[~blank]
            if header_pending and len(frame):
                frame = frame.iloc[1:]  # the header record, already read by open_leads
                header_pending = False
            if not len(frame):
                continue
            extra = frame[names[width:]]
            overflow_mask = np.zeros(len(frame), dtype=bool)
            for name in names[width:]:
                overflow_mask |= extra[name].to_numpy() != ""
            frame = frame[names[:width]]
            frame.columns = pd.Index(leads.headers)
            frame.index = pd.RangeIndex(start, start + len(frame))
            overflow: dict[int, int] = {}
            if overflow_mask.any():
                flagged = extra[overflow_mask].itertuples(index=False, name=None)
                for index, cells in zip(frame.index[overflow_mask], flagged, strict=True):
                    last = max(i for i, cell in enumerate(cells) if cell != "")
                    overflow[int(index)] = width + last + 1
            start += len(frame)
            yield Chunk(frame, overflow)


def _blank_rows(frame: pd.DataFrame) -> npt.NDArray[np.bool_]:
    """A mask of the rows whose every cell is "".

    Column by column on numpy arrays, and only over rows still in doubt: a
    whole-frame comparison costs ten times more, for rows that are rare.
    """
    columns = list(frame.columns)
    blank = frame[columns[0]].to_numpy() == ""
    if blank.any():
        doubt = np.flatnonzero(blank)
        for column in columns[1:]:
            values = frame[column].to_numpy()[doubt]
            doubt = doubt[values == ""]
            if not len(doubt):
                break
        blank = np.zeros(len(frame), dtype=bool)
        blank[doubt] = True
    return np.asarray(blank, dtype=bool)


def _parser_problem(exc: Exception, width: int, leads: LeadsFile) -> str:
    match = _TOO_MANY_FIELDS.search(str(exc))
    if match:
        return (
            f"line {match[2]} has {match[3]} cells but the header has {width}; "
            f"quote values that contain {leads.delimiter!r}"
        )
    return f"cannot read: {_one_line(exc)}"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


# --- XLSX ----------------------------------------------------------------------------


def cell_text(value: Any) -> str:
    """The text a person would write for a spreadsheet cell's value."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        # Up to 2**53 every integer is exact, so 4155550141.0 is the integer 4155550141.
        if value.is_integer() and abs(value) < 2**53:
            return str(int(value))
        return repr(value)
    if isinstance(value, datetime):
        if value.time() == time(0):
            return value.date().isoformat()
        return value.replace(tzinfo=None).isoformat()
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        # A duration cell ([h]:mm:ss): hours may pass 24.
        seconds = int(value.total_seconds())
        sign = "-" if seconds < 0 else ""
        hours, rest = divmod(abs(seconds), 3600)
        return f"{sign}{hours}:{rest // 60:02d}:{rest % 60:02d}"
    return str(value)


def _load_workbook(path: Path, handle: BinaryIO) -> Any:
    from openpyxl import load_workbook

    try:
        # A file object rather than the path: openpyxl would refuse a workbook
        # named .csv by its extension alone.
        return load_workbook(handle, read_only=True, data_only=True)
    except Exception:  # BadZipFile, KeyError, openpyxl's InvalidFileException, bad XML...
        raise LeadsFileError(f"{path}: not a valid XLSX file") from None


def _pick_sheet(path: Path, workbook: Any, sheet: str | None) -> Any:
    sheets = [ws for ws in workbook.worksheets]
    if not sheets:
        raise LeadsFileError(f"{path}: the workbook has no sheet of cells")
    if sheet is None:
        return sheets[0]
    for want in (sheet, sheet.strip().casefold()):
        for ws in sheets:
            if ws.title == want or ws.title.strip().casefold() == want:
                return ws
    listed = ", ".join(f'"{name}"' for name in workbook.sheetnames)
    raise LeadsFileError(f'{path}: no sheet "{sheet}"; the sheets are: {listed}')


def _xlsx_rows(path: Path, sheet: str | None) -> Generator[tuple[Any, list[str]], None, None]:
    """(worksheet, cells as text) for each non-blank row, the header first."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise LeadsFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        workbook = _load_workbook(path, handle)
    except LeadsFileError:
        handle.close()
        raise
    try:
        ws = _pick_sheet(path, workbook, sheet)
        # Some writers record a wrong sheet size; forgetting it makes openpyxl
        # read every cell that is really there.
        ws.reset_dimensions()
        for values in ws.iter_rows(values_only=True):
            cells = [cell_text(v) for v in values]
            if any(cells):
                yield ws, cells
    except LeadsFileError:
        raise
    except Exception as exc:  # corrupt XML or zip members: openpyxl raises many kinds
        raise LeadsFileError(f"{path}: cannot read the workbook: {_one_line(exc)}") from None
    finally:
        workbook.close()
        handle.close()


def _open_xlsx(path: Path, sheet: str | None) -> LeadsFile:
    rows = _xlsx_rows(path, sheet)
    try:
        ws, cells = next(rows)
    except StopIteration:
        where = f'sheet "{sheet}"' if sheet else "the first sheet"
        raise LeadsFileError(f"{path}: {where} is empty (no header row)") from None
    finally:
        rows.close()
    headers = _clean_headers(cells)
    return LeadsFile(path=path, headers=headers, encoding=None, delimiter=None, sheet=str(ws.title))


def _xlsx_chunks(leads: LeadsFile, rows: int) -> Iterator[Chunk]:
    width = len(leads.headers)
    buffer: list[list[str]] = []
    start = 0
    records = _xlsx_rows(leads.path, leads.sheet)
    try:
        next(records, None)  # the header
        for _, cells in records:
            if len(cells) < width:
                cells.extend([""] * (width - len(cells)))
            elif len(cells) > width:
                del cells[width:]  # cells under no header are outside the table
                if not any(cells):
                    continue
            buffer.append(cells)
            if len(buffer) >= rows:
                yield Chunk(_frame(buffer, leads.headers, start))
                start += len(buffer)
                buffer = []
        if buffer:
            yield Chunk(_frame(buffer, leads.headers, start))
    finally:
        records.close()


def _frame(rows: list[list[str]], headers: list[str], start: int) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=pd.Index(headers), dtype=object)
    frame.index = pd.RangeIndex(start, start + len(rows))
    return frame
