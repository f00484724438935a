"""What each call will do, decided when it is placed and predictable by tests.

A call's fate depends only on (seed, phone, ordinal), the ordinal counting the
calls placed to that phone (1 for the first), so it does not depend on the order
calls to different phones arrive in, nor on how many are in flight. A test (or
a benchmark) calls `fate()` with the same options to know in advance how every
call will end, and compares with the record's `call.ended` lines.

The life of a call of `seconds` live time, placed at T:

    answered outcomes (completed, voicemails, any status not listed below):
        ringing      from T for a quarter of its time
        in-progress  until T + seconds
        final        from T + seconds: status, duration = seconds, end reason,
                     recording_url; collected variables when completed
    unanswered outcomes (no-answer, busy, failed, canceled, user-canceled, spam):
        ringing      from T until T + seconds, then final (duration = seconds,
                     no recording, no collected variables)
    stuck: ringing for a quarter of its drawn time, then in-progress for ever

`duration` is always the time the call was live (ringing included), to the
millisecond: the same number on GET and in the record's `call.ended` line.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass

from dialer.sandbox.options import STUCK, SandboxOptions

UNANSWERED = frozenset({"no-answer", "busy", "failed", "canceled", "user-canceled", "spam"})
# The part of an answered call's life spent ringing before it shows `in-progress`.
RING_SHARE = 0.25

# A plausible end_call_reason per final status (values seen on the real API's GET).
END_REASONS: Mapping[str, tuple[str, ...]] = {
    "completed": ("human_ended_call", "agent_ended_call"),
    "no-answer": ("timeout",),
    "busy": ("user_canceled",),
    "user-canceled": ("user_canceled",),
    "canceled": ("user_canceled",),
    "failed": ("error",),
    "spam": ("error",),
    "hangup_on_voicemail": ("voicemail",),
    "left_voicemail": ("voicemail_message_left",),
}
# Any other status (one the dialer may not know) ends with this reason.
OTHER_END_REASON = "custom_end_call"


@dataclass(frozen=True, slots=True)
class Fate:
    """How one call goes. `status` is its final status, or `stuck` (it never ends)."""

    status: str
    seconds: float  # live time, whole milliseconds
    end_call_reason: str | None
    collected: Mapping[str, str] | None  # completed calls only; None otherwise
    nested_collected: bool  # collected_variables keyed by the agent's id
    string_start_time: bool  # start_time given as a string of digits

    @property
    def ends(self) -> bool:
        """Whether the call ever ends (a `stuck` one does not)."""
        return self.status != STUCK

    @property
    def answered(self) -> bool:
        """Whether someone (or a voicemail) picked up: it shows in-progress and has a recording."""
        return self.status not in UNANSWERED

    @property
    def ring_seconds(self) -> float:
        """How long it shows `ringing` before `in-progress` (all its life when unanswered)."""
        return self.seconds * RING_SHARE if self.answered else self.seconds


def fate(seed: int | None, phone: str, ordinal: int, options: SandboxOptions) -> Fate:
    """The fate of the `ordinal`-th call (1 for the first) placed to `phone`.

    Uses only the telephony settings of `options` (and `seed`, normally
    `options.seed`; None counts as 0), so the same call always goes the same way.
    """
    # A string seed is hashed with SHA-512: stable across processes and Python runs.
    rng = random.Random(f"{seed or 0}:{phone}:{ordinal}")
    status = _pick_status(rng.random(), options.outcomes)
    low, high = options.call_seconds
    seconds = rng.randint(round(low * 1000), round(high * 1000)) / 1000
    collected: dict[str, str] | None = None
    if status == "completed":
        collected = {name: rng.choice(values) for name, values in options.collected}
    reasons = END_REASONS.get(status, (OTHER_END_REASON,))
    reason = None if status == STUCK else rng.choice(reasons)
    return Fate(
        status=status,
        seconds=seconds,
        end_call_reason=reason,
        collected=collected,
        nested_collected=_shape(rng, options.collected_shape, "nested"),
        string_start_time=_shape(rng, options.start_time_shape, "string"),
    )


def chat_seconds(seed: int | None, to_number: str, ordinal: int, options: SandboxOptions) -> float | None:
    """How long the `ordinal`-th chat to `to_number` stays `ongoing` (None: for ever)."""
    if options.chat_seconds is None:
        return None
    rng = random.Random(f"{seed or 0}:chat:{to_number}:{ordinal}")
    low, high = options.chat_seconds
    return rng.randint(round(low * 1000), round(high * 1000)) / 1000


def _pick_status(draw: float, outcomes: tuple[tuple[str, float], ...]) -> str:
    # Shares are cumulated in the order given; the last takes any rounding remainder.
    total = 0.0
    for status, share in outcomes:
        total += share
        if draw < total:
            return status
    return outcomes[-1][0]


def _shape(rng: random.Random, setting: str, odd: str) -> bool:
    # Always draw, so changing one shape setting never shifts the other draws.
    coin = rng.random() < 0.5  # half the calls, when mixed
    return setting == odd or (setting == "mixed" and coin)
