"""Rows -> leads: column mapping, E.164 phones, time zones, custom variables, duplicates, DNC."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from dialer.config import Campaign
from dialer.load import LeadsFile

MappedStatus = Literal["pending", "invalid", "duplicate", "suppressed"]


@dataclass(frozen=True)
class ColumnMap:
    """Which header of the leads file feeds which field. Names are headers as in the file."""

    phone: str
    name: tuple[str, ...]          # one column, or ("First Name", "Last Name") joined by a space
    timezone: str | None
    email: str | None
    variables: tuple[str, ...]     # custom variables, in file order

    def describe(self) -> list[tuple[str, str]]:
        """(field, column(s)) pairs for `validate` to print."""
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Lead:
    """One data row of the leads file, mapped. `row` is the spreadsheet row number: the header is row 1, so the first data row is 2 (what Excel shows; used in every message)."""

    row: int
    values: tuple[str, ...]        # the original cells, in header order, as read
    status: MappedStatus
    error: str = ""                # why, for invalid / duplicate / suppressed
    phone: str = ""                # E.164, "" when it could not be read
    name: str = ""
    email: str = ""
    timezones: tuple[str, ...] = ()  # IANA names: the column's value, or inferred from the number
    variables: dict[str, str] = field(default_factory=dict)


def resolve_columns(campaign: Campaign, headers: list[str]) -> ColumnMap:
    """Map headers to fields from [columns] or by common names; LeadsFileError names a missing column."""
    raise NotImplementedError


def load_suppression(campaign: Campaign) -> frozenset[str]:
    """Every number (as E.164) on the campaign's do-not-call lists."""
    raise NotImplementedError


def map_leads(campaign: Campaign, leads: LeadsFile, columns: ColumnMap) -> Iterator[Lead]:
    """Every row of the file as a Lead, in file order, with duplicates and DNC applied."""
    raise NotImplementedError
