"""Spreadsheets -> rows of text: CSV/TSV/TXT (sniffed delimiter and encoding) and XLSX/XLSM.

Every cell comes out as the text a person would read in it: "" for an empty
cell, 1500 not "1500.0", dates as ISO 8601 (for XLSX a typed cell of
dialer/cells.py, which is that text and remembers the type for the report).
CSV is streamed in chunks so memory does not grow with the number of rows;
XLSX is streamed row by row too (python-calamine-plus, dialer/workbook.py).

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
  outside the table and its value is not read, but its row is kept.
- Blank rows (every cell empty) are skipped, in CSV and XLSX alike, but they
  are counted: every row number is the one Excel shows (the header's row is 1
  when the file starts with it; a CSV record with a quoted line break is one
  row, as Excel opens it). A chunk's index is that row number minus 2.
- Refused with one line: anything but a regular file (a FIFO would block
  forever), a header row longer than 4 MB, a UTF-16/32 encoding named by the
  campaign on a file with no BOM, and workbooks whose size or cell count is
  absurd (see dialer/workbook.py).
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import re
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from dialer import cells
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
# A header is read from the first 4 MB; no header row is longer.
_MAX_HEADER_BYTES = 64 * _SAMPLE_BYTES
# The sample is parsed by the csv module, whose default cell limit (128 KB) would
# make a long note in the first rows look like an unreadable file.
csv.field_size_limit(2 * _MAX_HEADER_BYTES)


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

    `frame` has the file's headers as columns and every value a str (for XLSX,
    a typed cell of dialer.cells for numbers, dates and the like); its index is
    the spreadsheet row minus 2 (the first row under a header in row 1 is 0),
    with gaps where blank rows were.
    `overflow` maps the index of each CSV row that had non-empty cells beyond
    the last header to its number of cells.
    `unsaved` maps the index of each XLSX row holding formulas with no saved
    value (a file written by a script) to the headers of those cells; the cell
    holds the formula's text (a `cells.Formula`).
    """

    frame: pd.DataFrame
    overflow: dict[int, int] = field(default_factory=dict)
    unsaved: dict[int, list[str]] = field(default_factory=dict)


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
    # The spreadsheet row of the header (1 unless blank rows come before it).
    header_row: int = 1
    # The header cells as written (untrimmed, empty or repeated as they are), one per
    # header: what the report shows. `headers` are the names the campaign uses.
    written_headers: tuple[str, ...] = ()

    def chunks(self, rows: int = 50_000) -> Iterator[pd.DataFrame]:
        """Yield DataFrames of at most `rows` rows, columns = headers, every value a str."""
        for chunk in self.read(rows):
            yield chunk.frame

    def read(self, rows: int = 50_000) -> Iterator[Chunk]:
        """Like `chunks`, with what the loader noticed about each row (see `Chunk`)."""
        if rows < 1:
            raise ValueError("rows must be at least 1")
        if self.encoding is None:
            from dialer.workbook import xlsx_chunks

            yield from xlsx_chunks(self, rows)
        else:
            yield from _text_chunks(self, rows)


def open_leads(path: Path, *, encoding: str | None = None, sheet: str | None = None) -> LeadsFile:
    """Open a leads file; raise LeadsFileError (one line, naming the file) if it cannot be read."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        kind = f"file type {suffix}" if suffix else "file without an extension"
        raise LeadsFileError(f"{path}: unsupported {kind} (use .csv, .tsv, .txt, .xlsx or .xlsm)")
    _check_regular(path)
    try:
        with path.open("rb") as handle:
            head = handle.read(_SAMPLE_BYTES)
    except OSError as exc:
        raise LeadsFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not head:
        raise LeadsFileError(f"{path}: file is empty")
    if head.startswith(_OLE2_MAGIC):
        raise LeadsFileError(f"{path}: an old Excel .xls workbook; save it as .xlsx or CSV")
    # A workbook renamed to .csv is still a workbook: read what the user has.
    if suffix in XLSX_SUFFIXES or head.startswith(_ZIP_MAGIC):
        from dialer.workbook import open_xlsx

        return open_xlsx(path, sheet)
    return _open_text(path, head, encoding)


def _check_regular(path: Path) -> None:
    """Refuse what is not a regular file before opening it: opening a FIFO blocks until
    a writer comes, and a device never ends."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise LeadsFileError(f"{path}: file not found") from None
    except OSError as exc:
        raise LeadsFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        raise LeadsFileError(f"{path}: is a folder, not a leads file")
    if not stat.S_ISREG(mode):
        kind = "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "not a regular file"
        raise LeadsFileError(f"{path}: {kind}; save the leads to a file and name that file")


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
        if name in ("utf-16", "utf-32") and bom is None:
            # Without a BOM Python's codec cannot tell the byte order and stops the read.
            raise LeadsFileError(
                f"{path}: encoding {encoding!r} needs a byte-order mark, and the file has none;"
                f" name the byte order: {name}-le (what Windows writes) or {name}-be"
            )
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
            if read >= _MAX_HEADER_BYTES or (
                read >= _SAMPLE_BYTES and ("\n" in parts[-1] or "\r" in parts[-1])
            ):
                break
    sample = "".join(parts)
    cut = max(sample.rfind("\n"), sample.rfind("\r"))
    if cut < 0:
        raise LeadsFileError(
            f"{path}: the first row is longer than {_MAX_HEADER_BYTES // 2**20} MB with no line end:"
            " not a leads file with a header row"
        )
    return sample[: cut + 1], False


def _records(sample: str, delimiter: str) -> list[list[str]]:
    """Non-blank records of the sample, as pandas will see them."""
    return [row for row in _all_records(sample, delimiter) if not _is_blank(row)]


def _all_records(sample: str, delimiter: str) -> list[list[str]]:
    try:
        return list(csv.reader(io.StringIO(sample, newline=""), delimiter=delimiter))
    except csv.Error:
        return []


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


def written_headers(cells_: Sequence[str], headers: Sequence[str]) -> tuple[str, ...]:
    """The header row as written, cut to the headers kept (a BOM is not part of the text)."""
    written = [str(cell) for cell in cells_[: len(headers)]]
    if written:
        written[0] = written[0].lstrip("\ufeff")
    return tuple(written)


def _open_text(path: Path, head: bytes, encoding: str | None) -> LeadsFile:
    chosen, errors = _choose_encoding(path, head, encoding)
    try:
        sample, complete = _read_sample(path, chosen, errors)
    except UnicodeDecodeError as exc:
        raise LeadsFileError(f"{path}: cannot be read as {chosen}: {exc.reason}") from None
    except UnicodeError as exc:  # e.g. "UTF-16 stream does not start with BOM"
        raise LeadsFileError(f"{path}: cannot be read as {chosen}: {_one_line(exc)}") from None
    except OSError as exc:
        raise LeadsFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if "\x00" in sample:
        raise LeadsFileError(f"{path}: not a text file (it holds binary data)")
    preferred = "\t" if path.suffix.lower() == ".tsv" else ","
    delimiter = _sniff_delimiter(sample, complete, preferred)
    every = _all_records(sample, delimiter)
    header_at = next((i for i, row in enumerate(every) if not _is_blank(row)), None)
    if header_at is None:
        raise LeadsFileError(f"{path}: file is empty (no header row)")
    written = every[header_at]
    headers = _clean_headers(written)
    if not headers:
        raise LeadsFileError(f"{path}: the header row is empty")
    return LeadsFile(
        path=path,
        headers=headers,
        encoding=chosen,
        delimiter=delimiter,
        sheet=None,
        encoding_errors=errors,
        header_cells=len(written),
        header_row=header_at + 1,
        written_headers=written_headers(written, headers),
    )


def _text_chunks(leads: LeadsFile, rows: int) -> Iterator[Chunk]:
    """The chunks of a text file; see _text_pass for the two ways it is read."""
    width = max(len(leads.headers), leads.header_cells)
    given = 0
    try:
        for chunk in _text_pass(leads, rows, width, slack=False):
            yield chunk
            given += 1
        return
    except _LongerRow:
        pass
    # The same records in the same chunks: skip those already given.
    for at, chunk in enumerate(_text_pass(leads, rows, width + _SLACK_COLUMNS, slack=True)):
        if at >= given:
            yield chunk


class _LongerRow(Exception):
    """pandas met a row longer than the names it was given (or could not read the file)."""


def _text_pass(leads: LeadsFile, rows: int, columns: int, *, slack: bool) -> Iterator[Chunk]:
    """The chunks of a text file, read with `columns` positional names.

    First with as many names as the header has cells: pandas builds a Python text for
    every cell of every named column, and eight columns of nothing cost a quarter of the
    read. A longer row (or any row pandas refuses) stops that pass with _LongerRow; the
    file is then read again with slack names (`slack`): pandas pads short rows with ""
    and accepts a few extra cells, flagged in Chunk.overflow, instead of stopping there.
    """
    width = len(leads.headers)
    names = [str(i) for i in range(columns)]
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
            # Blank lines are records too: Excel shows them as rows, and counts them.
            skip_blank_lines=False,
            quotechar='"',
            doublequote=True,
            encoding=leads.encoding,
            encoding_errors=leads.encoding_errors,
            chunksize=rows,
            engine="c",
        )
    except (OSError, UnicodeError, pd.errors.ParserError) as exc:
        raise LeadsFileError(f"{path}: cannot read: {_one_line(exc)}") from None
    records = 0  # records read so far, header and blank lines included
    with reader:
        while True:
            # The header (and any blank rows above it) come with the first chunk,
            # so that every chunk but the last holds `rows` rows.
            frame = _next_frame(reader, rows + leads.header_row if not records else rows, leads, slack)
            if frame is None:
                return
            # Record k (from 0) is spreadsheet row k + 1; a chunk's index is that row - 2.
            frame.index = pd.RangeIndex(records - 1, records - 1 + len(frame))
            records += len(frame)
            keep = ~_blank_rows(frame)
            keep &= frame.index.to_numpy() >= leads.header_row - 1  # the header, and blank rows above it
            if not keep.all():
                frame = frame[keep]
            if len(frame):
                yield _text_chunk(frame, names, width, leads.headers)


def _next_frame(reader: Any, rows: int, leads: LeadsFile, slack: bool = True) -> pd.DataFrame | None:
    """The next `rows` records from pandas' reader; None at the end; one line for a bad file
    (without `slack`, _LongerRow for a row pandas refuses: see _text_pass)."""
    path = leads.path
    try:
        frame: pd.DataFrame = reader.get_chunk(rows)
    except StopIteration:
        return None
    except UnicodeError as exc:
        reason = getattr(exc, "reason", str(exc))
        raise LeadsFileError(f"{path}: cannot be read as {leads.encoding}: {reason}") from None
    except pd.errors.ParserError as exc:
        if not slack:
            raise _LongerRow from None
        raise LeadsFileError(f"{path}: {_parser_problem(exc, len(leads.headers), leads)}") from None
    except (OSError, ValueError) as exc:
        raise LeadsFileError(f"{path}: cannot read: {_one_line(exc)}") from None
    return frame


def _text_chunk(frame: pd.DataFrame, names: list[str], width: int, headers: list[str]) -> Chunk:
    """The chunk of a frame of positional columns: the header's columns, extra cells flagged."""
    extra = frame[names[width:]]
    overflow_mask = np.zeros(len(frame), dtype=bool)
    for name in names[width:]:
        overflow_mask |= extra[name].to_numpy() != ""
    index = frame.index
    frame = frame[names[:width]]
    frame.columns = pd.Index(headers)
    overflow: dict[int, int] = {}
    if overflow_mask.any():
        flagged = extra[overflow_mask].itertuples(index=False, name=None)
        for at, cells_ in zip(index[overflow_mask], flagged, strict=True):
            last = max(i for i, cell in enumerate(cells_) if cell != "")
            overflow[int(at)] = width + last + 1
    return Chunk(frame, overflow)


def _blank_rows(frame: pd.DataFrame) -> npt.NDArray[np.bool_]:
    """A mask of the rows whose every cell is "" (the first may be spaces: a line of spaces).

    Column by column on numpy arrays, and only over rows still in doubt: a
    whole-frame comparison costs ten times more, for rows that are rare.
    """
    columns = list(frame.columns)
    doubt = np.arange(len(frame))
    for column in columns[1:]:
        values = frame[column].to_numpy()[doubt]
        doubt = doubt[values == ""]
        if not len(doubt):
            break
    first = frame[columns[0]].to_numpy()
    blank = np.zeros(len(frame), dtype=bool)
    blank[[i for i in doubt if not first[i].strip()]] = True
    return blank


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


def cell_text(value: Any) -> str:
    """The text a person would write for a spreadsheet cell's value (see dialer.cells)."""
    return str(cells.typed(value))
