"""The sandbox's settings: one frozen dataclass, checked when it is built.

The telephony settings take the flags' text forms too (`call_seconds="30:300"`,
`outcomes="completed=0.6,busy=0.4"`, `collected=["interest=yes|no"]`), or their
parsed forms (`(30.0, 300.0)`, `{"completed": 0.6, "busy": 0.4}`,
`{"interest": ["yes", "no"]}`); either way they are stored parsed, as tuples.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The outcome that never ends: the call stays `in-progress` for as long as the sandbox runs.
STUCK = "stuck"
# What GET shows while a call is live; not allowed as final statuses (use `stuck`).
LIVE_STATUSES = ("ringing", "in-progress")
COLLECTED_SHAPES = ("flat", "nested", "mixed")
START_TIME_SHAPES = ("ms", "string", "mixed")

_STATUS_NAME = re.compile(r"[a-z][a-z0-9_-]*")
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

Seconds = tuple[float, float]
Outcomes = tuple[tuple[str, float], ...]
Collected = tuple[tuple[str, tuple[str, ...]], ...]


def parse_seconds(value: str | float | Iterable[float]) -> Seconds:
    """`MIN[:MAX]` (text, one number, or a pair) as (min, max) seconds; ValueError if bad."""
    if isinstance(value, str):
        parts = value.split(":")
        if len(parts) > 2:
            raise ValueError(f"expected MIN or MIN:MAX seconds, got {value!r}")
        try:
            numbers = [float(part) for part in parts]
        except ValueError:
            raise ValueError(f"expected MIN or MIN:MAX seconds, got {value!r}") from None
    elif isinstance(value, int | float):
        numbers = [float(value)]
    else:
        numbers = [float(number) for number in value]
    low, high = (numbers[0], numbers[-1]) if numbers else (math.nan, math.nan)
    if len(numbers) not in (1, 2) or not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"expected MIN or MIN:MAX seconds, got {value!r}")
    if low < 0 or high < low:
        raise ValueError(f"need 0 <= MIN <= MAX, got {low:g}:{high:g}")
    return (low, high)


def parse_outcomes(value: str | Mapping[str, float] | Iterable[tuple[str, float]]) -> Outcomes:
    """`STATUS=SHARE,...` as ((status, share), ...), shares adding up to 1; ValueError if bad."""
    if isinstance(value, str):
        pairs = [_outcome_pair(item.strip()) for item in value.split(",")]
    else:
        pairs = list(value.items() if isinstance(value, Mapping) else value)
    seen: set[str] = set()
    for status, share in pairs:
        if _STATUS_NAME.fullmatch(status) is None:
            raise ValueError(f"{status!r} is not a status name (lower case, digits, - and _)")
        if status in LIVE_STATUSES:
            raise ValueError(
                f"{status!r} is what a live call shows; use {STUCK!r} for a call that never ends"
            )
        if status in seen:
            raise ValueError(f"{status!r} is given twice")
        seen.add(status)
        if not 0 <= share <= 1:
            raise ValueError(f"the share of {status!r} must be between 0 and 1, got {share:g}")
    total = sum(share for _, share in pairs)
    if not pairs or abs(total - 1) > 1e-3:  # slack for shares such as thirds
        raise ValueError(f"the shares must add up to 1, they add up to {total:g}")
    return tuple((status, float(share)) for status, share in pairs)


def _outcome_pair(item: str) -> tuple[str, float]:
    status, equals, share = item.partition("=")
    try:
        number = float(share) if equals else math.nan
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise ValueError(f"expected STATUS=SHARE, got {item!r}")
    return status.strip(), number


def parse_collected(
    value: str | Iterable[str | tuple[str, Iterable[str]]] | Mapping[str, Iterable[str]],
) -> Collected:
    """`NAME=V1|V2|...` items (or a map of lists) as ((name, values), ...); ValueError if bad."""
    if isinstance(value, str):
        value = [value]
    if isinstance(value, Mapping):
        items = [(name, tuple(values)) for name, values in value.items()]
    else:
        items = []
        for item in value:
            if not isinstance(item, str):  # already parsed: (name, values)
                name, values = item
                items.append((name, tuple(values)))
                continue
            name, equals, listed = item.partition("=")
            if not equals:
                raise ValueError(f"expected NAME=V1|V2|..., got {item!r}")
            items.append((name.strip(), tuple(listed.split("|"))))
    seen: set[str] = set()
    for name, values in items:
        if _VARIABLE_NAME.fullmatch(name) is None:
            raise ValueError(f"{name!r} is not a variable name (letters, digits and _)")
        if name in seen:
            raise ValueError(f"{name!r} is given twice")
        seen.add(name)
        if not values or any(not v for v in values):
            raise ValueError(f"{name!r}: every value must be non-empty, got {'|'.join(values)!r}")
    return tuple(items)


@dataclass(frozen=True)
class SandboxOptions:
    """How a sandbox listens, which faults it injects, and how its calls go.

    `rate_limit` N: more than N accepted POSTs in any 1-second window answer 429
    (with `Retry-After: retry_after` when that is set). `fail_rate`: the share of
    POSTs answering 503 before doing anything. `drop_rate`: the share of POSTs that
    place the call, then close the connection without an answer. `latency_ms`
    delays every answer. `seed` makes the fail/drop choices and every call's fate
    repeatable (no seed: fail/drop vary from run to run, fates use seed 0).

    Telephony (see `fate.py`): `call_seconds` (min, max) a call stays live;
    `outcomes` the final statuses and their shares (`stuck`: never ends);
    `max_live_calls` N: a POST while N calls are live answers 429 and places
    nothing; `collected` the variables a completed call collects, with their
    possible values; `collected_shape` flat / nested (keyed by the agent's id) /
    mixed; `start_time_shape` ms (a number) / string (digits) / mixed;
    `chat_seconds` (min, max) a chat stays `ongoing` before it is `completed`
    (None: ongoing for ever). `clock` gives the time (epoch seconds): tests pass
    a fake one so calls end without sleeping.

    `accept_body` / `lookup_body`: odd answers, for testing a client that must not
    trust them. An accepted POST still places its call, then answers 200 with
    `accept_body` as written; GET /v2/calls (the list) answers 200 with `lookup_body`.
    """

    host: str = "127.0.0.1"
    port: int = 0
    api_key: str | None = None
    record: Path | None = None
    rate_limit: int | None = None
    retry_after: float | None = None
    fail_rate: float = 0.0
    drop_rate: float = 0.0
    latency_ms: float = 0.0
    seed: int | None = None
    call_seconds: Seconds = (0.0, 0.0)
    outcomes: Outcomes = (("completed", 1.0),)
    max_live_calls: int | None = None
    collected: Collected = ()
    collected_shape: str = "flat"
    start_time_shape: str = "ms"
    chat_seconds: Seconds | None = None
    clock: Callable[[], float] = field(default=time.time, compare=False, repr=False)
    accept_body: str | None = None
    lookup_body: str | None = None

    def __post_init__(self) -> None:
        # Fail here, not on the first request, so a bad setting never half-starts a server.
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if self.rate_limit is not None and self.rate_limit < 1:
            raise ValueError(f"rate_limit must be at least 1, got {self.rate_limit}")
        if self.retry_after is not None and self.retry_after < 0:
            raise ValueError(f"retry_after must not be negative, got {self.retry_after}")
        for name in ("fail_rate", "drop_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        if self.latency_ms < 0:
            raise ValueError(f"latency_ms must not be negative, got {self.latency_ms}")
        self._parse_telephony()

    def _parse_telephony(self) -> None:
        parsers: dict[str, Callable[[Any], Any]] = {
            "call_seconds": parse_seconds,
            "outcomes": parse_outcomes,
            "collected": parse_collected,
        }
        if self.chat_seconds is not None:
            parsers["chat_seconds"] = parse_seconds
        for name, parse in parsers.items():
            try:
                parsed = parse(getattr(self, name))
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
            object.__setattr__(self, name, parsed)  # frozen: set once, here
        if self.max_live_calls is not None and self.max_live_calls < 1:
            raise ValueError(f"max_live_calls must be at least 1, got {self.max_live_calls}")
        if self.collected_shape not in COLLECTED_SHAPES:
            raise ValueError(
                f"collected_shape must be one of {COLLECTED_SHAPES}, got {self.collected_shape!r}"
            )
        if self.start_time_shape not in START_TIME_SHAPES:
            raise ValueError(
                f"start_time_shape must be one of {START_TIME_SHAPES}, got {self.start_time_shape!r}"
            )
