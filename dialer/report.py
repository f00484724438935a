"""Journal -> the report: every input row and its dialer_* columns, CSV or XLSX, written atomically.

CSV is UTF-8 with a byte-order mark (so Excel shows accents; pandas and the
csv module read it with encoding "utf-8-sig"), comma-separated, minimal
quoting, CRLF line ends as RFC 4180 has them. XLSX writes every cell as text
(dialer_attempts excepted), so phone numbers keep their "+" and leading zeros;
control characters XML cannot hold are dropped and cells cut at Excel's
32,767 characters.

No cell may start a spreadsheet formula (OWASP "CSV injection"): a cell that
starts with = + - @ tab or CR (or their full-width forms) gets a leading "'",
unless it is plainly a number or a phone number ("+14155550132",
"-12.5", "+1 (415) 555-0132"): digits, spaces and ( ) . - cannot call a
function or reach another cell, and those must stay readable as they were.
"""

from __future__ import annotations

import contextlib
import csv
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any

from dialer.model import Outcome

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
_PLAIN_NUMBER = re.compile(r"[+-]?[\d\s().-]*\d[\d\s().-]*")
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
    for value in (outcome.error, outcome.updated_at, outcome.call_status, outcome.end_reason):
        row.append(value if not value or value[0] not in start else safe_cell(value))
    row.append(_duration(outcome.duration))
    row.append(outcome.calls)
    row.append(safe_cell(outcome.recording_url))
    # Collected values come from the call (what a person said): never trusted as formulas.
    row.extend(safe_cell(outcome.collected.get(name, "")) for name in collected)
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


def _write_xlsx(
    path: Path,
    headers: Sequence[str],
    rows: Iterable[tuple[Sequence[str], Outcome]],
    collected: Sequence[str] = (),
) -> int:
    # Imported here: only XLSX reports pay for openpyxl's import time.
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet("report")

    def text(value: str) -> WriteOnlyCell | None:
        if not value:
            return None  # a truly empty cell, not an empty string
        cell = WriteOnlyCell(sheet, value=_XML_ILLEGAL.sub("", value)[:_XLSX_MAX_CELL])
        # openpyxl would type "=..." as a formula; a report cell is always text.
        cell.data_type = "s"
        return cell

    def row_of(cells: list[Any]) -> list[Any]:
        # dialer_attempts, dialer_duration and dialer_calls stay numbers; everything else is text.
        return [c if isinstance(c, int | float) else text(c) for c in cells]

    try:
        sheet.append(row_of([safe_cell(h) for h in report_headers(headers, collected)]))
        width = len(headers)
        count = 0
        for values, outcome in rows:
            sheet.append(row_of(_cells(width, values, outcome, collected)))
            count += 1
    except BaseException:
        # Finish openpyxl's row writer and drop its scratch file in the system
        # temp folder, rather than leave both to the garbage collector and atexit.
        with contextlib.suppress(Exception):
            sheet.close()
            sheet._writer.cleanup()
        raise
    workbook.save(path)
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


def write_report(
    path: Path,
    headers: Sequence[str],
    rows: Iterable[tuple[Sequence[str], Outcome]],
    collected: Sequence[str] = (),
) -> int:
    """Write the report to `path` (XLSX when it ends in .xlsx, else CSV); return the row count.

    `collected`: the collected variables' names, a dialer_collected_<name> column each.

    Atomic: written to a temporary file beside `path`, fsynced, then os.replace'd.
    `rows` is consumed once, row by row, so memory does not grow with its length.
    If anything fails, the previous report (if any) is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same folder as the target, so os.replace is a rename within one filesystem.
    handle = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed below, kept on success
        mode="w",
        encoding="utf-8-sig",
        newline="",
        dir=path.parent,
        prefix=f".{path.name}.",
        suffix=".tmp",
        delete=False,
    )
    temp = Path(handle.name)
    try:
        if path.suffix.lower() == ".xlsx":
            handle.close()  # openpyxl writes the file by name
            count = _write_xlsx(temp, headers, rows, collected)
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
            temp.unlink()
        raise
    _fsync_dir(path.parent)
    return count


def _mode_for(path: Path) -> int:
    """Keep the permissions of the report being replaced; 0644 for a new one."""
    try:
        return path.stat().st_mode & 0o777
    except OSError:
        return 0o644
