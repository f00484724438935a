"""Typed spreadsheet cells: text the mapping can read, a type the report can write back.

The loader hands every cell on as a `str` (the text a person reads in it), so
the mapping, the journal's fingerprints and every message work on text alone.
A cell of an XLSX input that held a number, a date, a time, a duration or a
boolean is a `str` subclass below, whose class says the type and whose text
gives the value back exactly (`float(repr(x)) == x`, ISO 8601 for dates). A
formula with no saved value (files written by scripts have no cached values)
is a `Formula`: its text is the formula, `=A2*2`.

The journal keeps each row's cells as JSON (`encode_row` / `decode_row`): plain
text stays a JSON string, a typed cell becomes `{"t": kind, "v": text}`, so a
journal written before typed cells existed (all strings) reads the same.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from typing import Any

import orjson


class Number(str):
    """A numeric cell; the text is the shortest that gives the float back ("1500", "12.5")."""

    __slots__ = ()

    def value(self) -> float:
        return float(self)


class Date(str):
    """A date cell, "2024-05-01"."""

    __slots__ = ()

    def value(self) -> date:
        return date.fromisoformat(self)


class DateTime(str):
    """A date and time cell, "2024-05-01T10:30:00" (no time zone: Excel has none)."""

    __slots__ = ()

    def value(self) -> datetime:
        return datetime.fromisoformat(self)


class Time(str):
    """A time-of-day cell, "09:15:00"."""

    __slots__ = ()

    def value(self) -> time:
        return time.fromisoformat(self)


class Duration(str):
    """A duration cell ([h]:mm:ss), "26:00:00"; hours may pass 24."""

    __slots__ = ()

    def value(self) -> timedelta:
        sign = -1 if self.startswith("-") else 1
        hours, minutes, seconds = (int(part) for part in self.lstrip("-").split(":"))
        return sign * timedelta(hours=hours, minutes=minutes, seconds=seconds)


class Boolean(str):
    """A TRUE/FALSE cell."""

    __slots__ = ()

    def value(self) -> bool:
        return self == "TRUE"


class Formula(str):
    """A formula cell with no saved value: the text is the formula, as Excel shows it."""

    __slots__ = ()


_KINDS: dict[str, type[str]] = {
    "n": Number,
    "d": Date,
    "dt": DateTime,
    "t": Time,
    "td": Duration,
    "b": Boolean,
    "f": Formula,
}
_KIND_OF = {cls: kind for kind, cls in _KINDS.items()}


def typed(value: Any) -> str:
    """The cell of a value an XLSX reader gives (None, str, bool, int, float, date...)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return Boolean("TRUE" if value else "FALSE")
    if isinstance(value, int | float):
        return _number(value)
    return _moment(value)


def _number(value: int | float) -> str:
    if isinstance(value, int):
        return Number(value)
    # Up to 2**53 every integer is exact, so 4155550141.0 is the integer 4155550141.
    if value.is_integer() and abs(value) < 2**53:
        return Number(int(value))
    return Number(repr(value))


def _moment(value: Any) -> str:
    """Dates, times and durations; anything else as str() shows it."""
    if isinstance(value, datetime):
        if value.time() == time(0):
            return Date(value.date().isoformat())
        return DateTime(value.replace(tzinfo=None).isoformat())
    if isinstance(value, date):
        return Date(value.isoformat())
    if isinstance(value, time):
        return Time(value.isoformat())
    if isinstance(value, timedelta):
        seconds = int(value.total_seconds())
        sign = "-" if seconds < 0 else ""
        hours, rest = divmod(abs(seconds), 3600)
        return Duration(f"{sign}{hours}:{rest // 60:02d}:{rest % 60:02d}")
    return str(value)


def encode_row(cells: Sequence[str]) -> str:
    """One row's cells as the journal's JSON `raw` column (orjson: ~10x json.dumps on a row)."""
    kinds = _KIND_OF
    return orjson.dumps(
        [
            cell if type(cell) is str or type(cell) not in kinds else {"t": kinds[type(cell)], "v": str(cell)}
            for cell in cells
        ]
    ).decode()


def decode_row(raw: str | list[Any]) -> list[str]:
    """The cells `encode_row` wrote (or a JSON list of plain strings, as older journals hold)."""
    items = json.loads(raw) if isinstance(raw, str) else raw
    return [
        item if isinstance(item, str) else _KINDS.get(item.get("t"), str)(item.get("v", "")) for item in items
    ]
