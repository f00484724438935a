"""Spreadsheets -> rows of text: CSV/TSV/TXT (sniffed delimiter and encoding) and XLSX/XLSM.

Every cell comes out as the text a person would read in it: "" for an empty
cell, 1500 not "1500.0", dates as ISO 8601. Large files are streamed in
chunks so memory does not grow with the number of rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd


@dataclass(frozen=True)
class LeadsFile:
    """An opened leads file: its headers (trimmed, in file order) and a way to stream its rows."""

    path: Path
    headers: list[str]
    encoding: str | None   # the encoding used for text files, None for XLSX
    delimiter: str | None  # the sniffed delimiter for text files, None for XLSX
    sheet: str | None      # the sheet read, for XLSX

    def chunks(self, rows: int = 50_000) -> Iterator[pd.DataFrame]:
        """Yield DataFrames of at most `rows` rows, columns = headers, every value a str."""
        raise NotImplementedError


def open_leads(path: Path, *, encoding: str | None = None, sheet: str | None = None) -> LeadsFile:
    """Open a leads file; raise LeadsFileError (one line, naming the file) if it cannot be read."""
    raise NotImplementedError
