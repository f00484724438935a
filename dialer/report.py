"""Journal -> the report: every input row and its dialer_* columns, CSV or XLSX, written atomically.

CSV is UTF-8 with a byte-order mark (so Excel shows accents; pandas and the
csv module read it with encoding "utf-8-sig"), comma-separated, minimal
quoting, CRLF line ends as RFC 4180 has them.

XLSX: the rows go to disk as they come, as the XML xlsxwriter's constant-memory
mode writes for them (`_SheetRows`); xlsxwriter writes the rest of the workbook. Cells keep
their type: the typed cells of an XLSX input (dialer/cells.py) come back as
numbers, dates, times, durations and booleans with a display format; every
other cell is a text cell, which Excel never reads as a formula, so no cell
needs an apostrophe (phone numbers keep their "+" and leading zeros).
Control characters XML cannot hold are dropped and cells cut at Excel's
32,767 characters.

In CSV no cell may start a spreadsheet formula (OWASP "CSV injection"): a cell
that starts with = + - @ tab or CR (or their full-width forms) gets a leading
"'", unless it is plainly a number or a phone number ("+14155550132",
"-12.5", "+1 (415) 555-0132", "+1 514 555 0208 ext 7"): digits, spaces and
( ) . - cannot call a function, and an extension word followed by digits at
the end is at most a cell reference, never a call; those must stay readable.

Writing fails in one line (ReportError, naming the file and what to do) when
the folder is read-only, the disk full, or the report open elsewhere; the
previous report stays as it was. Temporary files are named after the report
and the writing process: one that a killed process left behind is removed by
the next write.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import os
import re
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import IO, Any

from dialer import cells
from dialer.errors import DialerError, UserError
from dialer.model import Outcome

REPORT_SUFFIXES = (".csv", ".xlsx")

DIALER_COLUMNS = (
    "dialer_status",
    "dialer_id",
    "dialer_from_number",
    "dialer_attempts",
    "dialer_error",
    "dialer_updated_at",
    # How the row's latest call ended (interface.md, "Call outcomes"); chats: chat_status.
    "dialer_call_status",
    "dialer_end_reason",
    "dialer_duration",
    "dialer_calls",
    "dialer_recording_url",
)
# Then one column per collected variable the campaign's calls returned.
COLLECTED_PREFIX = "dialer_collected_"


# The characters that make Excel, LibreOffice or Google Sheets read a cell as
# a formula (or, for tab and CR, hide one behind whitespace), full-width forms
# included since some spreadsheets fold them to ASCII.
_FORMULA_START = frozenset("=+-@\t\r\uff1d\uff0b\uff0d\uff20")
_PLAIN_NUMBER = re.compile(
    r"[+-]?[\d\s().-]*\d[\d\s().-]*(?:\s*(?:ext\.?|extension|x|#)\s*\d+)?", re.IGNORECASE
)
# openpyxl refuses these control characters in a string cell (XML 1.0 forbids them).
_XML_ILLEGAL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
# Excel will not open a workbook with a longer cell ("repairs" it instead).
_XLSX_MAX_CELL = 32_767


def safe_cell(value: str) -> str:
    """`value`, prefixed with "'" if a spreadsheet would read it as a formula.

    Numbers and phone numbers are left as they are, "+14155550132" included.
    """
    if value and value[0] in _FORMULA_START and not _PLAIN_NUMBER.fullmatch(value):
        return "'" + value
    return value


def report_headers(headers: Sequence[str], collected: Sequence[str] = ()) -> list[str]:
    """The report's header row: the input headers, then DIALER_COLUMNS and a
    dialer_collected_<name> column per name of `collected`, with no duplicates.

    An input column named like a dialer_* column keeps its values under
    "<name> (input)" (or "(input 2)" and so on if that is taken too).
    """
    ours = [*DIALER_COLUMNS, *(COLLECTED_PREFIX + name for name in collected)]
    taken = set(headers) | set(ours)
    out: list[str] = []
    for header in headers:
        if header in ours:
            renamed, n = f"{header} (input)", 1
            while renamed in taken:
                n += 1
                renamed = f"{header} (input {n})"
            taken.add(renamed)
            header = renamed
        out.append(header)
    return out + ours


def _duration(seconds: float | None) -> float | int | str:
    """Seconds as a number (whole ones without a decimal point); '' before the call ended."""
    if seconds is None:
        return ""
    return int(seconds) if float(seconds).is_integer() else round(seconds, 3)


def _call_cells(outcome: Outcome, collected: Sequence[str]) -> list[Any]:
    """The row's latest call: status, end reason, duration, calls, recording, collected values.

    Collected values come from the call (what a person said): never trusted as formulas.
    """
    return [
        safe_cell(outcome.call_status),
        safe_cell(outcome.end_reason),
        _duration(outcome.duration),
        outcome.calls,
        safe_cell(outcome.recording_url),
        *(safe_cell(outcome.collected.get(name, "")) for name in collected),
    ]


def _cells(width: int, values: Sequence[str], outcome: Outcome, collected: Sequence[str] = ()) -> list[Any]:
    """One report row: the input values (padded to the header width), then the outcome."""
    # The first-character test is inlined: this runs for every cell of a
    # million-row report, and most cells start with a letter or a digit.
    start = _FORMULA_START
    if len(values) != width:
        values = [*values[:width], *([""] * (width - len(values)))]
    row: list[Any] = [v if not v or v[0] not in start else safe_cell(v) for v in values]
    for value in (outcome.status, outcome.id, outcome.from_number):
        row.append(value if not value or value[0] not in start else safe_cell(value))
    row.append(outcome.attempts)
    for value in (outcome.error, outcome.updated_at):
        row.append(value if not value or value[0] not in start else safe_cell(value))
    row += _call_cells(outcome, collected)
    return row


def _write_csv(
    file: IO[str],
    headers: Sequence[str],
    rows: Iterable[tuple[Sequence[str], Outcome]],
    collected: Sequence[str] = (),
) -> int:
    writer = csv.writer(file, quoting=csv.QUOTE_MINIMAL, lineterminator="\r\n")
    writer.writerow([safe_cell(h) for h in report_headers(headers, collected)])
    width = len(headers)
    count = 0
    for values, outcome in rows:
        writer.writerow(_cells(width, values, outcome, collected))
        count += 1
    return count


class ReportError(DialerError):
    """The report cannot be written where it should go; the journal is intact."""

    exit_code = 1


def check_report_path(path: Path) -> None:
    """Refuse a report name the dialer cannot write, before anything is done."""
    if Path(path).suffix.lower() not in REPORT_SUFFIXES:
        suffix = Path(path).suffix or "no extension"
        raise UserError(f"{path}: a report is written as .csv or .xlsx, not {suffix}; name the file so")


# Excel's display formats for the typed cells of an XLSX input.
_FORMATS: dict[type[str], str] = {
    cells.Date: "yyyy-mm-dd",
    cells.DateTime: "yyyy-mm-dd hh:mm:ss",
    cells.Time: "hh:mm:ss",
    cells.Duration: "[h]:mm:ss",
}


# xlsxwriter's own escapes for text cells (xmlwriter._escape_control_characters): a literal
# "_x0041_" would read back as "A", so its underscore is escaped; U+FFFE/U+FFFF are no
# XML characters. The control characters it also escapes are dropped before (_XML_ILLEGAL).
_EXCEL_ESCAPE = re.compile(r"(_x[0-9a-fA-F]{4}_)")
_XML_SPECIAL = re.compile(r"[&<>]")


class _SheetRows:
    """The report's rows as the <row> elements of its sheet, written to a text file.

    They are the bytes xlsxwriter's constant-memory mode writes for the same cells
    (tests/test_workbook_report.py holds them to it), made here in one f-string a cell:
    xlsxwriter's per-cell Python (a tuple per cell, attribute lists, escapes by regex)
    was ~80% of a million-row report (105 s). xlsxwriter still writes everything else
    of the workbook: its parts, styles and the sheet around the rows (`_write_xlsx`).
    One difference, on purpose: a text shaped like a rich-text run ("<r>...</r>") is
    escaped like any text, where xlsxwriter writes it into the sheet as raw XML (the
    cell read back empty, or the file broke).
    """

    def __init__(self, out: IO[str], styles: dict[type[str], int], to_serial: Any) -> None:
        self.out = out
        self.styles = styles
        self.to_serial = to_serial  # the sheet's own datetime -> Excel serial number
        self.rows = 0
        self.width = 0
        self.letters: list[str] = []

    def _letters(self, width: int) -> list[str]:
        from xlsxwriter.utility import xl_col_to_name

        while len(self.letters) < width:
            self.letters.append(xl_col_to_name(len(self.letters)))
        return self.letters

    def write(self, values: Sequence[Any]) -> None:
        number = str(self.rows + 1)
        letters = self._letters(len(values)) if len(values) > len(self.letters) else self.letters
        parts = [f'<row r="{number}">']
        for column, value in enumerate(values):
            kind = type(value)
            if kind is str or kind is cells.Formula:
                if value:
                    parts.append(_text_cell(letters[column] + number, value))
            elif kind is int or kind is float:  # dialer_attempts, _duration, _calls
                parts.append(_number_cell(letters[column] + number, value, ""))
            elif value:
                parts.append(self._typed_cell(letters[column] + number, kind, value))
        if len(parts) > 1 and any(parts[1:]):
            parts.append("</row>")
            self.out.write("".join(parts))
            self.width = max(self.width, len(values))
        self.rows += 1

    def _typed_cell(self, ref: str, kind: type, value: Any) -> str:
        if kind is cells.Number:
            return _number_cell(ref, float(value), "")
        if kind is cells.Boolean:
            return f'<c r="{ref}" t="b"><v>{1 if value == "TRUE" else 0}</v></c>'
        if kind is cells.Duration:
            days = value.value().total_seconds() / 86400
            return _number_cell(ref, days, f' s="{self.styles[kind]}"')
        if kind in self.styles:
            return _number_cell(ref, self.to_serial(value.value()), f' s="{self.styles[kind]}"')
        return _text_cell(ref, str(value))


def _text_cell(ref: str, value: str) -> str:
    if _XML_ILLEGAL.search(value):
        value = _XML_ILLEGAL.sub("", value)
        if not value:
            return ""
    if len(value) > _XLSX_MAX_CELL // 2:  # Excel's limit counts UTF-16 units
        value = _utf16_cut(value[:_XLSX_MAX_CELL])
    if "_x" in value:
        value = _EXCEL_ESCAPE.sub(r"_x005F\1", value)
    if "\ufffe" in value or "\uffff" in value:
        value = value.replace("\ufffe", "_xFFFE_").replace("\uffff", "_xFFFF_")
    preserve = ' xml:space="preserve"' if value[0].isspace() or value[-1].isspace() else ""
    if _XML_SPECIAL.search(value):
        value = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return f'<c r="{ref}" t="inlineStr"><is><t{preserve}>{value}</t></is></c>'


def _utf16_cut(value: str) -> str:
    """`value` cut to Excel's 32,767 UTF-16 units (a character past U+FFFF counts two)."""
    units = 0
    for index, char in enumerate(value):
        units += 2 if ord(char) > 0xFFFF else 1
        if units > _XLSX_MAX_CELL:
            return value[:index]
    return value


def _number_cell(ref: str, value: float, style: str) -> str:
    if value != value or value in (float("inf"), float("-inf")):
        return _text_cell(ref, str(value))  # Excel has no NaN or infinity
    return f'<c r="{ref}"{style}><v>{value:.16G}</v></c>'


def _write_xlsx(
    path: Path,
    scratch: Path,
    headers: Sequence[str],
    rows: Iterable[tuple[Sequence[str], Outcome]],
    collected: Sequence[str] = (),
) -> int:
    """xlsxwriter writes the workbook around an empty sheet; the rows, written meanwhile to
    a scratch file by `_SheetRows`, are put in the sheet as the workbook is copied to `path`."""
    # Imported here: only XLSX reports pay for xlsxwriter's import time.
    import xlsxwriter

    package = scratch / "package.xlsx"
    workbook = xlsxwriter.Workbook(
        str(package),
        {"constant_memory": True, "tmpdir": str(scratch), "strings_to_numbers": False},
    )
    sheet = workbook.add_worksheet("report")
    # Each format's index in the styles, given now (xlsxwriter gives one on first use).
    styles = {
        kind: workbook.add_format({"num_format": fmt})._get_xf_index() for kind, fmt in _FORMATS.items()
    }
    try:
        with open(scratch / "rows.xml", "w", encoding="utf-8", newline="") as out:
            sheet_rows = _SheetRows(out, styles, sheet._convert_date_time)
            count = _fill_xlsx(sheet_rows, headers, rows, collected)
        workbook.close()
    except BaseException:
        # In constant-memory mode each sheet's rows wait in a temporary file until close();
        # a write that fails (a full disk, a signal) must not leave those files open.
        for each in workbook.worksheets():
            if each.row_data_fh is not None and not each.row_data_fh.closed:
                each.row_data_fh.close()
        raise
    _put_rows(package, path, scratch / "rows.xml", sheet_rows)
    return count


def _put_rows(package: Path, path: Path, rows_xml: Path, rows: _SheetRows) -> None:
    """Copy the workbook xlsxwriter wrote to `path`, its sheet's empty <sheetData/> filled."""
    import zipfile

    from xlsxwriter.utility import xl_col_to_name

    with zipfile.ZipFile(package) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            data = source.read(info)
            if info.filename != "xl/worksheets/sheet1.xml":
                target.writestr(info, data)
                continue
            head, empty, tail = data.partition(b"<sheetData/>")
            if not empty:
                raise ValueError("xlsxwriter wrote no empty <sheetData/> to fill")
            if rows.width:
                last = f"{xl_col_to_name(rows.width - 1)}{rows.rows}"
                head = head.replace(b'<dimension ref="A1"/>', f'<dimension ref="A1:{last}"/>'.encode())
            with target.open(info, "w", force_zip64=True) as member:
                member.write(head + b"<sheetData>")
                with rows_xml.open("rb") as written:
                    shutil.copyfileobj(written, member, 4 * 2**20)
                member.write(b"</sheetData>" + tail)


def _fill_xlsx(
    out: _SheetRows,
    headers: Sequence[str],
    rows: Iterable[tuple[Sequence[str], Outcome]],
    collected: Sequence[str] = (),
) -> int:
    out.write(report_headers(headers, collected))
    width = len(headers)
    count = 0
    for values, outcome in rows:
        if len(values) != width:
            values = [*values[:width], *([""] * (width - len(values)))]
        out.write(
            [
                *values,
                outcome.status,
                outcome.id,
                outcome.from_number,
                outcome.attempts,
                outcome.error,
                outcome.updated_at,
                *_call_cells(outcome, collected),
            ]
        )
        count += 1
    return count


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable; not possible (nor needed) on Windows."""
    if os.name == "nt":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _os_error(exc: BaseException) -> OSError | None:
    """The OSError that xlsxwriter wrapped in its own exception (FileCreateError(OSError))."""
    inner = [arg for arg in exc.args if isinstance(arg, OSError)]
    if inner:
        return inner[0]
    return exc.__cause__ if isinstance(exc.__cause__, OSError) else None


_HINTS = {
    errno.EACCES: "check the folder's permissions, and close the report if it is open (Excel locks it)",
    errno.EPERM: "check the folder's permissions, and close the report if it is open (Excel locks it)",
    errno.EROFS: "the folder is on a read-only disk",
    errno.ENOSPC: "the disk is full; free some space",
    errno.EDQUOT: "the disk quota is used up; free some space",
}


def _cannot_write(path: Path, error: OSError) -> ReportError:
    hint = _HINTS.get(error.errno or 0, "check the folder")
    return ReportError(
        f"{path}: cannot write the report ({error.strerror or error}): {hint};"
        " or write it elsewhere with `dialer report CAMPAIGN.toml --out OTHER.csv`"
        " (the journal is intact)"
    )


def _temp_prefix(path: Path, pid: int) -> str:
    return f".{path.name}.{pid}."


def _remove_stale_temps(path: Path) -> None:
    """Remove the temporary files of earlier writes of this report whose process is gone."""
    head = f".{path.name}."
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return
    for entry in entries:
        name = entry.name
        if not (name.startswith(head) and name.endswith(".tmp")):
            continue
        pid = name[len(head) :].split(".", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # alive, someone else's
    return True


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """While the report is written, SIGTERM unwinds (removing the temporary file) rather
    than killing the process on the spot; the handler of whoever installed one is kept."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_DFL:
        yield
        return

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def write_report(
    path: Path,
    headers: Sequence[str],
    rows: Iterable[tuple[Sequence[str], Outcome]],
    collected: Sequence[str] = (),
) -> int:
    """Write the report to `path` (.csv or .xlsx); return the row count.

    `collected`: the collected variables' names, a dialer_collected_<name> column each.

    Atomic: written to a temporary file beside `path`, fsynced, then os.replace'd.
    `rows` is consumed once, row by row, so memory does not grow with its length.
    If anything fails, the previous report (if any) is left as it was; a folder
    or disk that refuses the file is a ReportError (one line).
    """
    path = Path(path)
    check_report_path(path)
    with _sigterm_raises():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _remove_stale_temps(path)
            return _write_atomically(path, headers, rows, collected)
        except OSError as exc:
            raise _cannot_write(path, exc) from None
        except Exception as exc:
            error = _os_error(exc)
            if error is None:
                raise
            raise _cannot_write(path, error) from None


def _write_atomically(
    path: Path,
    headers: Sequence[str],
    rows: Iterable[tuple[Sequence[str], Outcome]],
    collected: Sequence[str] = (),
) -> int:
    # Same folder as the target, so os.replace is a rename within one filesystem.
    prefix = _temp_prefix(path, os.getpid())
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed below, kept on success
        mode="w",
        encoding="utf-8-sig",
        newline="",
        dir=path.parent,
        prefix=prefix,
        suffix=".tmp",
        delete=False,
    )
    temp = Path(handle.name)
    scratch: Path | None = None
    try:
        if path.suffix.lower() == ".xlsx":
            handle.close()  # xlsxwriter writes the file by name
            # xlsxwriter's own scratch files, beside the report so that one cleanup finds them.
            scratch = Path(tempfile.mkdtemp(dir=path.parent, prefix=prefix, suffix=".tmp"))
            count = _write_xlsx(temp, scratch, headers, rows, collected)
            with open(temp, "rb") as written:
                os.fsync(written.fileno())
        else:
            with handle:
                count = _write_csv(handle, headers, rows, collected)
                handle.flush()
                os.fsync(handle.fileno())
        # mkstemp makes the file 0600; a report is for sharing, like any file the user writes.
        os.chmod(temp, _mode_for(path))
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            handle.close()
            temp.unlink()
        raise
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    _fsync_dir(path.parent)
    return count


def _mode_for(path: Path) -> int:
    """Keep the permissions of the report being replaced; 0644 for a new one."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        return 0o644
