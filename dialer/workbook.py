"""XLSX/XLSM leads files, streamed row by row by python-calamine-plus (Rust's calamine).

A million-row sheet is read in ~4 s in ~15 MiB: python-calamine-plus (a fork of
python-calamine, pinned) decodes each row straight from the zip, where
python-calamine 0.9.1 holds the whole sheet (~95 bytes a cell, ~620 MiB for a
million rows of 7 cells). Rows start at the sheet's row 1 and column A, blank
rows included, so a row's position is its spreadsheet row.
`dialer.cells.typed` turns each cell's saved value (number, date, time,
duration, boolean, text) into the text a person reads, keeping the type for the
report: a chunk's rows column by column, each distinct value of a column typed
once (`_columns`). Cells holding an error show its text (`#N/A`, `#DIV/0!`), as
Excel does; python-calamine gave them empty.

The stream holds the GIL, so a thread beside it gains nothing: a big sheet's
rows (`PROCESS_BYTES` of XML or more) are read and typed by a forked process of
its own, forked as soon as the sheet is chosen: it reads ahead while this
process makes the bounds pass below (`_read_ahead`), then hands blocks of typed
columns over a pipe while this process maps the chunk before. A sheet the
bounds pass finds formulas without saved values in, or rows out of order, is
read as below (or, if big, forked after the bounds pass: `_chunks_from_reader`).

A sheet the fork cannot stream (rows stored out of order, which no common
writer does, or a sheet found some other way than the workbook's own list) is
read whole by python-calamine, as before: its rows start at the first used
column, so the cells left of it are put back.

Two things calamine does not do, done here in one pass over the XML before any
row is read:

- Bounds. A 4 MB "zip bomb" of repeated cells unpacks to gigabytes of XML. The
  zip members calamine will read (the chosen sheet and the shared strings, which
  it holds) are streamed once through zlib, counting bytes and cells (one
  search a tag: ~2 s of CPU for a million rows, zlib's ~0.7 s of it); a workbook
  over `MAX_XML_BYTES` or `MAX_CELLS` is refused with one line. The same pass
  checks that the rows are stored in order (else the sheet is read whole).
- Formulas with no saved value (files written by scripts: openpyxl, xlsxwriter
  and others write the formula and leave computing it to Excel) read as empty
  cells in calamine. The same pass finds them in the XML (a `<c>` holding an
  `<f>` and no `<v>`); their formula text comes back in the cell as a
  `cells.Formula`, and `Chunk.unsaved` names them for the mapping. A shared
  formula's follower cells hold no text: openpyxl's formula Translator (the
  one place openpyxl serves the reader) rewrites the master's for them.
"""

from __future__ import annotations

import contextlib
import gc
import html
import itertools
import multiprocessing
import multiprocessing.connection
import operator
import os
import pickle
import posixpath
import queue
import re
import signal
import threading
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import numpy as np
import pandas as pd

from dialer import cells
from dialer.cells import typed
from dialer.errors import LeadsFileError
from dialer.forked import prepare_child
from dialer.load import Chunk, LeadsFile, _clean_headers, _one_line, written_headers

# Excel's own sheet is 1,048,576 rows by 16,384 columns; a leads file of a million
# rows and 16 columns (16.8 million cells, ~1.6 GB if python-calamine holds it) is the
# most read. 2 GiB of XML is ~30 million of the smallest cells written by Excel.
MAX_CELLS = 2**24
MAX_XML_BYTES = 2 * 2**30
_READ_BYTES = 4 * 2**20
# Rows over which equal cells are shared (one object each); then forgotten, so that memory
# stays flat in a file of unique values.
_SHARE_ROWS = 50_000
# A sheet of this much XML or more is read by a process of its own (see _chunks_from_reader).
PROCESS_BYTES = 16 * 2**20
# The first cells of a column that tell whether its texts repeat.
_SAMPLE = 2_000

# A cell whose formula is followed by no value: <c r="B2"><f>A2*2</f></c>, <f .../>, <v/> or <v></v>.
_UNSAVED = re.compile(
    rb"<(?:\w+:)?c\s([^>]*?[^/>])?>\s*<(?:\w+:)?f\b([^>]*?)(?:/>|>([^<]*)</(?:\w+:)?f>)\s*"
    rb"(?:<(?:\w+:)?v\s*/>|<(?:\w+:)?v>\s*</(?:\w+:)?v>)?\s*</(?:\w+:)?c>"
)
# The master of a shared formula, value or not: <c r="B2" ...><f t="shared" ref=".." si="0">A2*2</f>
_SHARED = re.compile(
    rb"<(?:\w+:)?c\s([^>]*?[^/>])?>\s*<(?:\w+:)?f\b([^>]*\bsi=\"\d+\"[^>/]*)>([^<]+)</(?:\w+:)?f>"
)
_REF = re.compile(rb'\br="([A-Z]{1,3})(\d+)"')
_SI = re.compile(rb'\bsi="(\d+)"')
# A row's own number, <row r="12" ...> (~0.4 s of CPU for a million rows), or <x:row ...>
# from writers that prefix the namespace (a pattern 4x slower: used only on those).
_ROW = re.compile(rb'<row\s[^>]*?\br="(\d+)"')
_PREFIXED_ROW = re.compile(rb'<\w+:row\s[^>]*?\br="(\d+)"')
# A sheet whose root element, or a namespace it declares, is prefixed (<x:worksheet>,
# xmlns:x="...main"): its tags are looked for in both spellings. Looked for in the first
# bytes, where the root element is.
_PREFIXED = re.compile(
    rb"<\w+:worksheet\b|xmlns:\w+=\"http://schemas\.openxmlformats\.org/spreadsheetml/2006/main\""
)
_ROOT_BYTES = 64 * 1024
_REL_NS = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}id"


@dataclass
class _Scan:
    """What one pass over a sheet's XML found."""

    cells: int = 0
    xml_bytes: int = 0
    formulas: bool = False
    # Rows stored in ascending order, as the streaming reader needs them; the last seen.
    in_order: bool = True
    last_row: int = 0
    # row (from 1) -> column (from 0) -> formula text (no "="), for formulas with no saved value
    unsaved: dict[int, dict[int, str]] = field(default_factory=dict)
    # shared formula index -> (master cell "B2", its formula text)
    shared: dict[bytes, tuple[str, str]] = field(default_factory=dict)
    # (row, column) -> shared index, for followers with no text and no value
    followers: dict[tuple[int, int], bytes] = field(default_factory=dict)


def _column_index(letters: bytes) -> int:
    index = 0
    for letter in letters:
        index = index * 26 + letter - 64
    return index - 1


def _column_letters(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        letters = chr(65 + rem) + letters
    return letters


def _sheet_members(archive: zipfile.ZipFile) -> dict[str, str]:
    """Sheet name -> its zip member, from the workbook and its relationships."""
    try:
        book = ElementTree.fromstring(archive.read("xl/workbook.xml"))
        rels = ElementTree.fromstring(archive.read("xl/_rels/workbook.xml.rels"))
    except (KeyError, ElementTree.ParseError):
        return {}
    targets = {rel.get("Id"): rel.get("Target", "") for rel in rels}
    members: dict[str, str] = {}
    for sheet in book.iter():
        if sheet.tag.endswith("}sheet") and sheet.get(_REL_NS) in targets:
            target = targets[sheet.get(_REL_NS)] or ""
            member = target.lstrip("/") if target.startswith("/") else posixpath.join("xl", target)
            members[sheet.get("name", "")] = posixpath.normpath(member)
    return members


def _stream(archive: zipfile.ZipFile, member: str, path: Path) -> Iterator[bytes]:
    """The member's bytes, block by block, refusing more than MAX_XML_BYTES."""
    total = 0
    with archive.open(member) as handle:
        while block := handle.read(_READ_BYTES):
            total += len(block)
            if total > MAX_XML_BYTES:
                raise LeadsFileError(
                    f"{path}: the workbook unpacks to more than {MAX_XML_BYTES // 2**30} GB of XML"
                    " (a damaged file or a zip bomb); save the leads as CSV"
                )
            yield block


def _too_many_cells(path: Path) -> LeadsFileError:
    return LeadsFileError(
        f"{path}: the sheet holds more than {MAX_CELLS:,} cells (Excel's rows times 16 columns):"
        " not read; delete unused columns or save the leads as CSV"
    )


def _scan_sheet(archive: zipfile.ZipFile, member: str, path: Path) -> _Scan:
    scan = _Scan()
    tail = b""
    plain: bool | None = None
    for block in _stream(archive, member, path):
        scan.xml_bytes += len(block)
        if plain is None:
            plain = _PREFIXED.search(block, 0, _ROOT_BYTES) is None
        # Every search is a pass over the bytes at ~1 GB/s (a million rows are ~370 MB):
        # a sheet in the default namespace, what every common writer makes, needs one
        # search for cells, one for formulas and one for rows. Cells are <c ...> (counted
        # with the few other tags starting "<c": a bound errs on the safe side), or <x:c ...>
        # from writers that prefix the namespace.
        if plain:
            scan.cells += block.count(b"<c")
        else:
            found = block.count(b"<c ") + block.count(b"<c>")
            scan.cells += found or block.count(b":c ") + block.count(b":c>")
        if scan.cells > MAX_CELLS:
            raise _too_many_cells(path)
        # Formulas are looked for in whole rows only: a block's cut-off last row
        # waits for the next block.
        text = tail + block
        cut = text.rfind(b"</row>")
        if cut < 0:
            tail = text
            continue
        body, tail = text[:cut], text[cut:]
        _scan_rows(body, scan, plain)
    _scan_rows(tail, scan, bool(plain))
    return scan


def _scan_rows(text: bytes, scan: _Scan, plain: bool) -> None:
    _check_order(text, scan, plain)
    if b"<f" in text or (not plain and b":f" in text):
        scan.formulas = True
        _find_formulas(text, scan)


def _check_order(text: bytes, scan: _Scan, plain: bool) -> None:
    """Note rows stored out of order (a row's number not above the one before it)."""
    if not scan.in_order:
        return
    pattern = _PREFIXED_ROW if not plain and b":row" in text else _ROW
    numbers = list(map(int, pattern.findall(text)))
    if not numbers:
        return
    if numbers[0] <= scan.last_row or not all(map(operator.lt, numbers, itertools.islice(numbers, 1, None))):
        scan.in_order = False
        return
    scan.last_row = numbers[-1]


def _find_formulas(text: bytes, scan: _Scan) -> None:
    for match in _SHARED.finditer(text):
        ref = _REF.search(match[1] or b"")
        si = _SI.search(match[2])
        if ref and si and b"ref=" in match[2]:
            scan.shared[si[1]] = ((ref[1] + ref[2]).decode(), html.unescape(match[3].decode()))
    for match in _UNSAVED.finditer(text):
        ref = _REF.search(match[1] or b"")
        if ref is None:
            continue  # a cell with no address: calamine places it, we cannot
        at = (int(ref[2]), _column_index(ref[1]))
        formula = match[3]
        if formula:
            scan.unsaved.setdefault(at[0], {})[at[1]] = html.unescape(formula.decode())
        else:
            si = _SI.search(match[2])
            if si:
                scan.followers[at] = si[1]


def _translate_followers(scan: _Scan) -> None:
    """Give each shared-formula follower its own formula, as Excel would show it."""
    if not scan.followers:
        return
    from openpyxl.formula.translate import Translator

    for (row, column), si in scan.followers.items():
        if si not in scan.shared:
            continue
        origin, formula = scan.shared[si]
        target = f"{_column_letters(column)}{row}"
        # A formula openpyxl's tokenizer cannot read: show the master's.
        with contextlib.suppress(Exception):
            formula = Translator("=" + formula, origin=origin).translate_formula(target)[1:]
        scan.unsaved.setdefault(row, {})[column] = formula


def _inspect(path: Path, sheet_name: str) -> _Scan:
    """Bounds and formulas of one sheet (and the shared strings every sheet reads)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if "xl/sharedStrings.xml" in names:
                strings = 0
                for block in _stream(archive, "xl/sharedStrings.xml", path):
                    strings += block.count(b"<si>") + block.count(b":si>")
                    if strings > 2 * MAX_CELLS:
                        raise _too_many_cells(path)
            member = _sheet_members(archive).get(sheet_name)
            if member is None or member not in names:
                # calamine found the sheet another way: bound every sheet, find no formulas,
                # and read the sheet whole (its order is not known).
                for other in sorted(n for n in names if n.startswith("xl/worksheets/")):
                    _scan_sheet(archive, other, path)
                return _Scan(in_order=False)
            scan = _scan_sheet(archive, member, path)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:
        raise LeadsFileError(f"{path}: not a valid XLSX file ({_one_line(exc)})") from None
    _translate_followers(scan)
    return scan


def _open_book(path: Path, module: Any) -> Any:
    """The workbook, opened by `module` (python_calamine_plus or python_calamine)."""
    try:
        if path.suffix.lower() in (".xlsx", ".xlsm"):
            return module.CalamineWorkbook.from_path(str(path))
        # from_filelike: calamine picks the format by the name's extension, and a
        # workbook renamed to .csv is still a workbook (held in memory: its zip only).
        with path.open("rb") as handle:
            return module.CalamineWorkbook.from_filelike(handle)
    except OSError as exc:
        raise LeadsFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except Exception:  # zip, XML or format errors: calamine raises several kinds
        raise LeadsFileError(f"{path}: not a valid XLSX file") from None


def _pick_sheet(path: Path, workbook: Any, sheet: str | None) -> str:
    from python_calamine_plus import SheetTypeEnum

    names = [meta.name for meta in workbook.sheets_metadata if meta.typ == SheetTypeEnum.WorkSheet]
    if not names:
        raise LeadsFileError(f"{path}: the workbook has no sheet of cells")
    if sheet is None:
        return str(names[0])
    for want in (sheet, sheet.strip().casefold()):
        for name in names:
            if name == want or name.strip().casefold() == want:
                return str(name)
    listed = ", ".join(f'"{name}"' for name in workbook.sheet_names)
    raise LeadsFileError(f'{path}: no sheet "{sheet}"; the sheets are: {listed}')


@dataclass
class _Sheet:
    """An opened sheet: its rows as the reader gives them (raw values), from spreadsheet row 1."""

    path: Path
    name: str
    scan: _Scan
    rows: Iterator[list[Any]]
    first_column: int
    # python-calamine-plus's stream (else python-calamine's whole sheet)
    streamed: bool = False
    # The process reading this sheet since before the bounds pass (then `rows` is not read here)
    ahead: _Ahead | None = None

    def numbered(self) -> Iterator[tuple[int, list[Any]]]:
        """(spreadsheet row, raw values from column A) of each row that is not blank, the
        formulas with no saved value put in. One step a row; the typing is `_columns`'s."""
        pad = [""] * self.first_column
        unsaved = self.scan.unsaved
        number = 0
        blank: list[Any] = []
        try:
            for number, values in enumerate(self.rows, start=1):
                if pad:
                    values = pad + values
                if number in unsaved:
                    _put_formulas(values, unsaved[number])
                # The stream pads every row to the sheet's width: a blank row is that many "".
                if values == blank:
                    continue
                if len(values) != len(blank):
                    blank = [""] * len(values)
                    if values == blank:
                        continue
                yield number, values
        except LeadsFileError:
            raise
        except Exception as exc:  # a damaged member calamine meets only now
            raise _read_error(self.path, exc) from None
        # calamine's rows end with its last cell holding a value: rows below of
        # nothing but unsaved formulas come from the scan.
        for later in sorted(n for n in unsaved if n > number):
            row: list[Any] = []
            _put_formulas(row, unsaved[later])
            yield later, row

    def cells(self) -> Iterator[tuple[int, list[str]]]:
        """(spreadsheet row, typed cells from column A) of each row that is not blank."""
        batch: list[list[Any]] = []
        numbers: list[int] = []
        for number, values in self.numbered():
            batch.append(values)
            numbers.append(number)
            if len(batch) >= _SHARE_ROWS:
                yield from _typed_rows(numbers, batch)
                batch, numbers = [], []
        yield from _typed_rows(numbers, batch)


def _read_error(path: Path, exc: Exception) -> LeadsFileError:
    if "not stored in" in str(exc):  # a cell filed under an earlier row
        return LeadsFileError(
            f"{path}: the sheet's cells are not stored in row order (a damaged file):"
            " open and save it in Excel, or save the leads as CSV"
        )
    return LeadsFileError(f"{path}: cannot read the workbook: {_one_line(exc)}")


def _typed_rows(numbers: list[int], rows: list[list[Any]]) -> Iterator[tuple[int, list[str]]]:
    columns = _columns(rows, max(map(len, rows), default=0))
    return (
        zip(numbers, (list(row) for row in zip(*columns, strict=True)), strict=True) if columns else iter(())
    )


def _columns(rows: list[list[Any]], width: int) -> list[Sequence[str]]:
    """The first `width` columns of raw rows (padded with ""), each as typed cells.

    Column by column, so that the per-cell work is C's (zip, map, set, dict) and Python
    types each distinct value of a column once: a chunk of a million-row sheet holds few
    distinct names, companies, zones and dates.
    """
    if not rows:
        return [[] for _ in range(width)]
    if len(set(map(len, rows))) == 1:
        found = list(itertools.islice(zip(*rows, strict=True), width))
    else:  # rows lengthened by formulas right of the reader's range
        found = list(itertools.islice(itertools.zip_longest(*rows, fillvalue=""), width))
    empty = ("",) * len(rows)
    return [_typed_column(column) for column in found] + [empty] * (width - len(found))


def _typed_column(values: tuple[Any, ...]) -> Sequence[str]:
    """A column's typed cells. Equal texts and dates are one object, as pandas' CSV reader
    shares them within a chunk: the mapping holds a few chunks at once, and the workbook's
    took ~60% more memory than the CSV's without it. A column of mostly distinct texts
    (phones, e-mails) is left as it is: sharing would only cost its hashing."""
    kinds = set(map(type, values))
    if kinds == {str}:
        sample = values[:_SAMPLE]
        if len(set(sample)) * 2 > len(sample):
            return values
        shared: dict[str, str] = {}
        return list(map(shared.setdefault, values, values))
    if (bool in kinds and (int in kinds or float in kinds)) or cells.Formula in kinds:
        # Values equal across types (True == 1, a formula's text == the same plain text):
        # one lookup table would mix them up; cell by cell.
        texts: dict[str, str] = {}
        return [texts.setdefault(v, v) if type(v) is str else _typed(v) for v in values]
    table = {value: value if type(value) is str else _typed(value) for value in set(values)}
    return list(map(table.__getitem__, values))


def _typed(value: Any) -> str:
    kind = type(value)
    if kind is date:  # the commonest typed cell: typed()'s own answer, without its tests
        return cells.Date(value.isoformat())
    # python-calamine-plus gives a whole number as an int, python-calamine as the float
    # the file holds: the float, so that both readers give the same text past 2**53.
    return typed(float(value) if kind is int else value)


def _put_formulas(row: list[str], formulas: dict[int, str]) -> None:
    """Put each formula's text in its cell (left of, inside or right of calamine's range)."""
    for column, formula in formulas.items():
        if column >= len(row):
            row.extend([""] * (column + 1 - len(row)))
        if row[column] == "":
            row[column] = cells.Formula("=" + formula)


def _streamed(book: Any, stream: Any) -> Iterator[list[Any]]:
    """The stream's rows; the workbook (which the stream reads from) closed at the end."""
    try:
        yield from stream
    finally:
        book.close()


def _sheet(path: Path, sheet: str | None) -> _Sheet:
    import python_calamine_plus

    book = _open_book(path, python_calamine_plus)
    try:
        name = _pick_sheet(path, book, sheet)
        ahead = _read_ahead(path, book, name)
        try:
            scan = _inspect(path, name)
        except BaseException:
            if ahead is not None:
                ahead.stop()
            raise
        if ahead is not None:
            if scan.in_order and not scan.unsaved:
                book.close()  # here only: the reading process has its own
                return _Sheet(path, name, scan, iter(()), 0, streamed=True, ahead=ahead)
            # Formulas to put in, or rows out of order: read as below, from a workbook
            # opened again (the file offset of this one is the reading process's).
            ahead.stop()
            book.close()
            book = _open_book(path, python_calamine_plus)
        if scan.in_order:
            with contextlib.suppress(python_calamine_plus.StreamingNotSupported):
                stream = book.stream_sheet_by_name(name)
                return _Sheet(path, name, scan, _streamed(book, stream), 0, streamed=True)
    except BaseException:
        book.close()
        raise
    book.close()
    return _whole_sheet(path, name, scan)


def _whole_sheet(path: Path, name: str, scan: _Scan) -> _Sheet:
    """The sheet read whole by python-calamine, for a sheet the fork cannot stream."""
    import python_calamine

    book = _open_book(path, python_calamine)
    try:
        data = book.get_sheet_by_name(name)
    except Exception as exc:
        raise LeadsFileError(f"{path}: cannot read the workbook: {_one_line(exc)}") from None
    finally:
        book.close()
    start = data.start
    first_column = start[1] if start is not None else 0
    return _Sheet(path, name, scan, data.iter_rows(), first_column)


# The sheet `open_xlsx` opened for the header (its scan done, its stream started) is
# kept, the last one only, for the `xlsx_chunks` that follows, rather than scanned
# twice. Keyed by the file's identity and stamp.
_opened: dict[tuple[object, ...], tuple[_Sheet, Iterator[tuple[int, list[Any]]]]] = {}


def _identity(path: Path, sheet: str) -> tuple[object, ...]:
    try:
        info = path.stat()
    except OSError:
        return (str(path), sheet)
    return (str(path), sheet, info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


def open_xlsx(path: Path, sheet: str | None) -> LeadsFile:
    opened = _sheet(path, sheet)
    rows: Iterator[tuple[int, list[Any]]] = iter(())
    if opened.ahead is not None:
        try:
            found = opened.ahead.header()
        except BaseException:
            opened.ahead.stop()
            raise
        if found is None:
            opened.ahead.stop()
    else:
        rows = opened.numbered()
        raw = next(rows, None)
        found = None if raw is None else (raw[0], [column[0] for column in _columns([raw[1]], len(raw[1]))])
    if found is None:
        where = f'sheet "{sheet}"' if sheet else "the first sheet"
        raise LeadsFileError(f"{path}: {where} is empty (no header row)")
    header_row, cells_ = found
    _forget_opened()
    _opened[_identity(path, opened.name)] = (opened, rows)
    headers = _clean_headers([str(cell) for cell in cells_])
    return LeadsFile(
        path=path,
        headers=headers,
        encoding=None,
        delimiter=None,
        sheet=opened.name,
        header_row=header_row,
        written_headers=written_headers(cells_, headers),
    )


def _forget_opened() -> None:
    for opened, _ in _opened.values():
        if opened.ahead is not None:
            opened.ahead.stop()
    _opened.clear()


def xlsx_chunks(leads: LeadsFile, rows: int) -> Iterator[Chunk]:
    """The data rows of the sheet, `rows` at a time; a row with cells only right of the last
    header is kept (its cells under the headers are empty), so that no row vanishes."""
    kept = _opened.pop(_identity(leads.path, leads.sheet or ""), None)
    opened, rows_of = kept if kept is not None else (None, None)
    if opened is None or rows_of is None:
        opened = _sheet(leads.path, leads.sheet)
        rows_of = opened.numbered()
    if opened.ahead is not None:
        yield from _rechunked(opened.ahead, rows, leads.headers)
        return
    header_row = leads.header_row
    rows_of = itertools.dropwhile(lambda found: found[0] <= header_row, rows_of)
    if opened.streamed and opened.scan.xml_bytes >= PROCESS_BYTES and hasattr(os, "fork"):
        yield from _chunks_from_reader(opened, rows_of, rows, leads.headers)
        return
    while True:
        with _collector_paused():
            found = _next_rows(rows_of, rows)
            chunk = _chunk(*found, leads.headers, opened.scan.unsaved) if found[0] else None
        if chunk is None:
            return
        yield chunk


def _chunks_from_reader(
    opened: _Sheet, rows_of: Iterator[tuple[int, list[Any]]], rows: int, headers: list[str]
) -> Iterator[Chunk]:
    """The chunks of a big sheet, read and typed by a process of its own (forked: it goes
    on with the stream the header was read from) while this one maps the last chunk.

    Reading and typing a million rows is ~6 s of CPU, the mapping that follows ~4 s: in
    one process they add up; on two cores they overlap. A chunk comes over a pipe as its
    typed columns, pickled (~15 ms a chunk of 50,000 rows to unpickle; equal cells stay one
    object); the pipe holds about one chunk, so the reader is never far ahead.
    """
    pid, receive = _fork_reader(lambda send: _reader(opened, rows_of, rows, headers, send))
    ended = False
    try:
        while True:
            try:
                message = pickle.loads(receive.recv_bytes())
            except EOFError:
                raise LeadsFileError(f"{opened.path}: cannot read the workbook: its reader stopped") from None
            if message[0] == "end":
                ended = True
                return
            if message[0] == "error":
                ended = True
                raise LeadsFileError(message[1])
            _, numbers, columns, named = message
            yield _frame_chunk(columns, numbers, headers, named)
    finally:
        receive.close()
        if not ended:  # the caller stopped early: the reader has nothing left to do
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def _fork_reader(
    read: Callable[[multiprocessing.connection.Connection], None],
) -> tuple[int, multiprocessing.connection.Connection]:
    """A forked process running `read` into a pipe: its pid and the pipe's end to read.

    The child dies with this process and holds no copy of its flock (dialer/forked.py),
    and ends with os._exit: it runs none of this process's clean-up."""
    receive, send = multiprocessing.Pipe(duplex=False)
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # the reader
        code = 1
        try:
            prepare_child(parent)
            receive.close()
            read(send)
            code = 0
        finally:
            os._exit(code)
    send.close()
    return pid, receive


def _reader(
    opened: _Sheet,
    rows_of: Iterator[tuple[int, list[Any]]],
    rows: int,
    headers: list[str],
    send: multiprocessing.connection.Connection,
) -> None:
    """The reading process: every chunk's typed columns, then "end" (or one error line)."""
    gc.disable()  # short-lived, and it makes no cycle (see _collector_paused)
    try:
        while True:
            batch, numbers = _next_rows(rows_of, rows)
            if not batch:
                break
            columns = _columns(batch, len(headers))
            named = _unsaved_named(columns, numbers, headers, opened.scan.unsaved)
            send.send_bytes(
                pickle.dumps(("chunk", numbers, columns, named), protocol=pickle.HIGHEST_PROTOCOL)
            )
        message: tuple[str, ...] = ("end",)
    except LeadsFileError as exc:
        message = ("error", str(exc))
    except Exception as exc:
        message = ("error", str(_read_error(opened.path, exc)))
    with contextlib.suppress(OSError):  # BrokenPipeError: the caller stopped reading
        send.send_bytes(pickle.dumps(message))


def _read_ahead(path: Path, book: Any, name: str) -> _Ahead | None:
    """A process reading a big sheet from now on, while this one makes the bounds pass
    (~2 s of CPU for a million rows: the rows read meanwhile are that much less to wait
    for). None for a sheet under PROCESS_BYTES (its zip's own word for its size), or one
    the fork cannot stream."""
    import python_calamine_plus

    if not hasattr(os, "fork"):
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            member = _sheet_members(archive).get(name)
            size = archive.getinfo(member).file_size if member is not None else 0
    except (KeyError, zipfile.BadZipFile, OSError):
        return None
    if size < PROCESS_BYTES:
        return None
    try:
        stream = book.stream_sheet_by_name(name)
    except python_calamine_plus.StreamingNotSupported:
        return None
    pid, receive = _fork_reader(
        lambda send: _ahead_reader(_Sheet(path, name, _Scan(), stream, 0, streamed=True), send)
    )
    return _Ahead(path, pid, receive)


# Rows a block that the reading-ahead process sends, and the blocks it may hold unsent
# (~0.6 MB each pickled, ~20 MB in all: more than the bounds pass gives it time to read).
_AHEAD_ROWS = 10_000
_AHEAD_BLOCKS = 32


def _ahead_reader(sheet: _Sheet, send: multiprocessing.connection.Connection) -> None:
    """The reading-ahead process: its messages, pickled, wait in a queue for a thread that
    writes them into the pipe as the other process reads them."""
    gc.disable()  # short-lived, and it makes no cycle (see _collector_paused)
    out: queue.Queue[bytes | None] = queue.Queue(maxsize=_AHEAD_BLOCKS)
    thread = threading.Thread(target=_send_all, args=(out, send), name="xlsx-ahead", daemon=True)
    thread.start()
    for message in _ahead_messages(sheet):
        out.put(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))
    out.put(None)
    thread.join()


def _send_all(out: queue.Queue[bytes | None], send: multiprocessing.connection.Connection) -> None:
    broken = False
    while (item := out.get()) is not None:
        if not broken:
            try:
                send.send_bytes(item)
            except OSError:  # the other process stopped reading: drain, send no more
                broken = True


def _ahead_messages(sheet: _Sheet) -> Iterator[tuple[Any, ...]]:
    """The header's cells, every block of typed columns under it (the rows read before a
    damaged one too), then "end" or one error line."""
    batch: list[list[Any]] = []
    numbers: list[int] = []
    width: int | None = None  # until the header is read
    last: tuple[str, ...] = ("end",)
    try:
        for number, raw in sheet.numbered():
            if width is None:
                cells_ = [column[0] for column in _columns([raw], len(raw))]
                yield ("header", number, cells_)
                width = len(_clean_headers([str(cell) for cell in cells_]))
                continue
            batch.append(raw)
            numbers.append(number)
            if len(batch) >= _AHEAD_ROWS:
                yield ("rows", numbers, _columns(batch, width))
                batch, numbers = [], []
    except LeadsFileError as exc:
        last = ("error", str(exc))
    except Exception as exc:
        last = ("error", str(_read_error(sheet.path, exc)))
    if batch and width is not None:
        yield ("rows", numbers, _columns(batch, width))
    yield last


@dataclass
class _Ahead:
    """This side of a reading-ahead process (see _read_ahead)."""

    path: Path
    pid: int
    receive: multiprocessing.connection.Connection
    ended: bool = False
    stopped: bool = False

    def _next(self) -> tuple[Any, ...]:
        try:
            message: tuple[Any, ...] = pickle.loads(self.receive.recv_bytes())
        except (EOFError, OSError):
            self.stop()
            raise LeadsFileError(f"{self.path}: cannot read the workbook: its reader stopped") from None
        if message[0] == "error":
            self.ended = True
            self.stop()
            raise LeadsFileError(message[1])
        if message[0] == "end":
            self.ended = True
        return message

    def header(self) -> tuple[int, list[str]] | None:
        """(spreadsheet row, typed cells) of the first row that is not blank; None if none."""
        message = self._next()
        return None if message[0] == "end" else (message[1], message[2])

    def blocks(self) -> Iterator[tuple[list[int], list[Sequence[str]]]]:
        """(spreadsheet rows, typed columns) of each block under the header."""
        try:
            while (message := self._next())[0] != "end":
                if message[0] == "rows":  # not the header, when the sheet is read again
                    yield message[1], message[2]
        finally:
            self.stop()

    def stop(self) -> None:
        """End the process (at once, if it is not done) and reap it."""
        if self.stopped:
            return
        self.stopped = True
        self.receive.close()
        if not self.ended:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)


def _rechunked(ahead: _Ahead, rows: int, headers: list[str]) -> Iterator[Chunk]:
    """The reading-ahead process's blocks as chunks of `rows` rows."""
    width = len(headers)
    numbers: list[int] = []
    columns: list[list[str]] = [[] for _ in range(width)]
    for block_numbers, block_columns in ahead.blocks():
        numbers += block_numbers
        for column, block in zip(columns, block_columns, strict=True):
            column += block
        while len(numbers) >= rows:
            yield _frame_chunk([column[:rows] for column in columns], numbers[:rows], headers, {})
            numbers = numbers[rows:]
            columns = [column[rows:] for column in columns]
    if numbers:
        yield _frame_chunk(list(columns), numbers, headers, {})


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """The garbage collector off while a chunk is read (back on while its reader works).

    A chunk's raw rows are tens of thousands of lists held until they are typed, and
    zip(*rows) makes an iterator per row: the collector counted them and walked them again
    and again (~1 s of CPU a million rows) to find no cycle: none of them is in one, and
    each is freed by its count as soon as the chunk is made.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _next_rows(rows_of: Iterator[tuple[int, list[Any]]], rows: int) -> tuple[list[list[Any]], list[int]]:
    buffer: list[list[Any]] = []
    numbers: list[int] = []
    for number, row in rows_of:
        buffer.append(row)
        numbers.append(number)
        if len(buffer) >= rows:
            break
    return buffer, numbers


def _chunk(rows: list[list[Any]], numbers: list[int], headers: list[str], unsaved: dict[int, Any]) -> Chunk:
    """A chunk of raw rows: typed column by column, cells under no header left out."""
    columns = _columns(rows, len(headers))
    return _frame_chunk(columns, numbers, headers, _unsaved_named(columns, numbers, headers, unsaved))


def _unsaved_named(
    columns: list[Sequence[str]], numbers: list[int], headers: list[str], unsaved: dict[int, Any]
) -> dict[int, list[str]]:
    """Chunk.unsaved: the headers of each row's formulas with no saved value."""
    named: dict[int, list[str]] = {}
    for at, number in enumerate(numbers) if unsaved else ():
        if number in unsaved:
            found = [headers[i] for i, column in enumerate(columns) if type(column[at]) is cells.Formula]
            if found:
                named[number - 2] = found
    return named


def _frame_chunk(
    columns: list[Sequence[str]], numbers: list[int], headers: list[str], named: dict[int, list[str]]
) -> Chunk:
    values = np.empty((len(headers), len(numbers)), dtype=object)
    for at, column in enumerate(columns):
        values[at] = column
    index = pd.Index([number - 2 for number in numbers], dtype="int64")
    # A 2-D object array, its columns contiguous: pandas takes it as its block, uncopied.
    frame = pd.DataFrame(values.T, index=index, columns=pd.Index(headers), dtype=object, copy=False)
    return Chunk(frame, unsaved=named)
