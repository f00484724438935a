"""Calling hours: is it a polite time to call this lead, and if not, when will it be?"""

from __future__ import annotations

from datetime import datetime

from dialer.config import Hours


class CallingHours:
    """The [hours] window, evaluated in each lead's own time zone(s).

    A lead whose number spans several zones is callable only when the window is
    open in every one of them. All datetimes in and out are timezone-aware.
    """

    def __init__(self, hours: Hours) -> None:
        raise NotImplementedError

    def is_open(self, timezones: tuple[str, ...], now: datetime) -> bool:
        raise NotImplementedError

    def next_open(self, timezones: tuple[str, ...], now: datetime) -> datetime | None:
        """The first moment at or after `now` when the window is open in every zone (UTC), or None if never."""
        raise NotImplementedError
