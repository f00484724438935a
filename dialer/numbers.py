"""The caller-id pool: which of the campaign's numbers dials this lead, within each number's daily cap."""

from __future__ import annotations

from datetime import datetime

from dialer.config import Numbers


class PoolExhausted(Exception):
    """Every number in the pool has reached its daily cap for today."""


class NumberPool:
    """Chooses a caller id per lead by strategy ("local", "round_robin", "least_used").

    `usage` is what the journal counted: {(number, day): calls}, where day is the
    ISO date of the number's own local day. The pool counts its own choices on top.
    """

    def __init__(self, numbers: Numbers, usage: dict[tuple[str, str], int]) -> None:
        raise NotImplementedError

    def day_of(self, number: str, now: datetime) -> str:
        """The ISO date of `now` in the number's own time zone: the day its cap counts."""
        raise NotImplementedError

    def choose(self, phone: str, timezones: tuple[str, ...], now: datetime) -> str | None:
        """A caller id for the lead at E.164 `phone`; None when the pool is empty. Counts the use.

        Raises PoolExhausted when every number is capped for its current day.
        """
        raise NotImplementedError
