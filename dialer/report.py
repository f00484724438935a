"""Journal -> the report: every input row with its dialer_* columns, CSV or XLSX, written atomically."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

DIALER_COLUMNS = (
    "dialer_status",
    "dialer_id",
    "dialer_from_number",
    "dialer_attempts",
    "dialer_error",
    "dialer_updated_at",
)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one row, as the report shows it."""

    status: str
    id: str = ""
    from_number: str = ""
    attempts: int = 0
    error: str = ""
    updated_at: str = ""   # UTC, ISO 8601


def write_report(
    path: Path, headers: Sequence[str], rows: Iterable[tuple[Sequence[str], Outcome]]
) -> int:
    """Write the report to `path` (XLSX when it ends in .xlsx, else CSV); return the row count.

    Atomic: written to a temporary file beside `path`, fsynced, then os.replace'd.
    """
    raise NotImplementedError
