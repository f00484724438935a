"""Pure: the per-24-hour cap on calls to one number. No I/O; the caller reads the journal.

The cap is the lower of the campaign's `[limits] calls_per_24h` and the law's for the
lead's state (dialer/data/calling_law.toml: Florida, Oklahoma, Maryland). Every
committed intent to the number counts (the journal's `dials`), whichever row, import or
run made it: a row left `unknown` may have rung. A number at its cap is `deferred` until
its oldest counted call is 24 hours old.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

from dialer.law import LawRules
from dialer.model import Status
from dialer.transitions import Next, iso

WINDOW = timedelta(hours=24)


def cap_for(campaign_cap: int | None, law: LawRules) -> tuple[int, str] | None:
    """(the cap, where it comes from) for a lead, or None when neither the campaign nor the law caps it."""
    if law.cap_per_24h is not None and (campaign_cap is None or law.cap_per_24h <= campaign_cap):
        return law.cap_per_24h, f"the law for {'+'.join(law.states)}"
    if campaign_cap is not None:
        return campaign_cap, "[limits] calls_per_24h"
    return None


def due_after_cap(dialed: Sequence[float], cap: int, now: datetime) -> datetime | None:
    """When the number may be called again, or None if it may be now.

    `dialed`: epoch seconds of the number's calls (at least those of the last 24 hours).
    With n >= cap calls in the window, one more is allowed once n - cap + 1 of them
    have left it: when the (n - cap + 1)-th oldest turns 24 hours old.
    """
    since = (now - WINDOW).timestamp()
    recent = sorted(at for at in dialed if at > since)
    if len(recent) < cap:
        return None
    return datetime.fromtimestamp(recent[len(recent) - cap], UTC) + WINDOW


def at_cap(cap: int, source: str, due: datetime) -> Next:
    """The number has had `cap` calls in the last 24 hours: `deferred` until `due`."""
    return Next(
        Status.DEFERRED, f"{cap} calls to this number in 24 hours, the cap of {source}; due {iso(due)}"
    )


# Caller-id health: carriers that flag a number as spam make its calls fail, or end them
# within seconds (`user-canceled`, `spam`). A number is rested (not used) while, among its
# last LOOKED_AT calls that ended in the last 24 hours, REST_AFTER or more went that way and
# they are at least REST_SHARE of them: a day without calls, not a few failures of a
# network blip (five, not one, and half, not a tenth).
LOOKED_AT = 20
REST_AFTER = 5
REST_SHARE = 0.5
SHORT_CANCEL_SECONDS = 10.0


def is_bad_call(status: str, duration: float | None) -> bool:
    """A call that says the carrier may be blocking its caller id."""
    if status in ("failed", "spam"):
        return True
    return status == "user-canceled" and (duration or 0.0) < SHORT_CANCEL_SECONDS


def rested_callers(recent: Mapping[str, Sequence[tuple[str, float | None]]]) -> dict[str, str]:
    """Caller ids to rest, each with why; `recent`: per number, its calls of the last 24
    hours that ended, newest first, as (final status, duration)."""
    rested: dict[str, str] = {}
    for number, ended in recent.items():
        looked = ended[:LOOKED_AT]
        bad = [status for status, duration in looked if is_bad_call(status, duration)]
        if len(bad) >= REST_AFTER and len(bad) >= REST_SHARE * len(looked):
            kinds = ", ".join(f"{status} {n}" for status, n in sorted(Counter(bad).items()))
            rested[number] = (
                f"{len(bad)} of its last {len(looked)} calls failed or were cut short ({kinds});"
                " rested until they are 24 hours old"
            )
    return rested
