"""The calls and chats a sandbox has placed, kept in memory for the GET endpoints.

Lists are kept in creation order, so time ranges are found by bisection and the
newest come last. Calls are indexed by recipient phone and by agent, so the
look-up a dialer makes after a lost answer (`lead_phone_number=`) costs the calls
of that one phone, and a poll of an agent's calls in a time window costs the page
it answers, even with a million calls stored.

Calls end by time: each call that will end sits in a heap keyed by its end time,
and `advance(now)` ends every call due by `now` (calling `on_ended` for each, in
end-time order) before any read or placement looks at the store. The store reads
time from its clock only when a method is not given `now`, so tests drive it
with plain numbers and never sleep.
"""

from __future__ import annotations

import heapq
import random
import sys
import uuid
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dialer.sandbox.fate import Fate, chat_seconds, fate
from dialer.sandbox.options import SandboxOptions

RINGING = "ringing"
IN_PROGRESS = "in-progress"
ONGOING = "ongoing"
CHAT_COMPLETED = "completed"


@dataclass(slots=True)
class Call:
    """One placed call: only what is needed to answer the look-ups (slots keep it small)."""

    call_id: str
    model_id: str
    phone_from: str | None
    phone_to: str
    name: str
    created_ms: int
    started: float  # epoch seconds when placed; it ends at started + fate.seconds
    ordinal: int  # calls placed to phone_to so far, this one included
    fate: Fate
    ended: bool = False

    @property
    def ends_at(self) -> float | None:
        """Epoch seconds when it ends, or None for a call that never does."""
        return self.started + self.fate.seconds if self.fate.ends else None

    def status_at(self, now: float) -> str:
        """Its status at `now`: ringing, in-progress, or the final one once ended."""
        if self.ended:
            return self.fate.status
        return RINGING if now < self.started + self.fate.ring_seconds else IN_PROGRESS

    def to_json(self, now: float, status_key: str = "status") -> dict[str, Any]:
        """The call as GET shows it at `now` (the list endpoint names the status `call_status`)."""
        fate = self.fate
        ended = self.ended
        status = self.status_at(now)
        collected: dict[str, Any] | None = None
        if ended and fate.collected is not None:
            collected = dict(fate.collected)
            if fate.nested_collected:
                collected = {self.model_id: collected}
        recorded = ended and fate.answered
        return {
            "call_id": self.call_id,
            "model_id": self.model_id,
            "phone_number_from": self.phone_from,
            "phone_number_to": self.phone_to,
            "name": self.name,
            status_key: status,
            "end_call_reason": fate.end_call_reason if ended else None,
            "duration": fate.seconds if ended else 0,
            "start_time": str(self.created_ms) if fate.string_start_time else self.created_ms,
            "transcript": (
                f"bot: Hello {self.name}, this is the sandbox agent.\nhuman: Hi!"
                if ended and status == "completed"
                else ""
            ),
            "recording_url": f"https://sandbox.invalid/recordings/{self.call_id}.mp3" if recorded else None,
            "collected_variables": collected,
            "error_message": "Call failed" if ended and status == "failed" else None,
        }


@dataclass(slots=True)
class Chat:
    """One outbound chat conversation; `seq` orders chats and serves as the list cursor."""

    seq: int
    chat_id: str
    agent_id: str
    channel: str
    to_number: str
    from_number: str
    created_ms: int
    ends_at: float | None  # epoch seconds when it turns completed; None: ongoing for ever

    def to_json(self, now: float) -> dict[str, Any]:
        """The chat as GET /v2/chat shows it at `now`."""
        done = self.ends_at is not None and now >= self.ends_at
        return {
            "chat_id": self.chat_id,
            "agent_id": self.agent_id,
            "channel": self.channel,
            "to_number": self.to_number,
            "from_number": self.from_number,
            "chat_status": CHAT_COMPLETED if done else ONGOING,
            "start_timestamp": self.created_ms,
        }


def _created(item: Call | Chat) -> int:
    return item.created_ms


def _seq(chat: Chat) -> int:
    return chat.seq


OnEnded = Callable[[Call, float], None]


class Store:
    """Placed calls and chats, with the indexes the GET endpoints need.

    `live_calls` counts calls placed and not ended (a `stuck` one for ever).
    `touched` counts the calls the list look-ups have examined, for tests that
    check a look-up costs its page, not the store's size.
    """

    def __init__(
        self,
        options: SandboxOptions | None = None,
        *,
        clock: Callable[[], float] | None = None,
        on_ended: OnEnded | None = None,
    ) -> None:
        self._options = options if options is not None else SandboxOptions()
        self._clock = clock if clock is not None else self._options.clock
        self._on_ended = on_ended
        self.calls: dict[str, Call] = {}
        self.chats: dict[str, Chat] = {}
        self._calls_by_phone: dict[str, list[Call]] = {}
        self._calls_by_model: dict[str, list[Call]] = {}
        self._chats_by_agent: dict[str, list[Chat]] = {}
        self._chats_to: dict[str, int] = {}
        self._all_chats: list[Chat] = []
        # (end time, placement count, call): the count breaks ties, so calls are never compared.
        self._ending: list[tuple[float, int, Call]] = []
        self._fates: dict[tuple[Any, ...], Fate] = {}
        self.live_calls = 0
        self.touched = 0
        self._last_ms = 0
        # Ids look like Synthflow's ("<ms>x<17 digits>"); the random part keeps two
        # sandboxes (say, before and after a restart) from handing out the same id.
        self._id_prefix = f"{random.SystemRandom().randrange(10**8):08d}"
        self._id_count = 0

    def _time(self, now: float | None) -> float:
        return self._clock() if now is None else now

    def _now_ms(self, now: float) -> int:
        # Never backwards, even if the wall clock steps back: bisection needs sorted lists.
        self._last_ms = max(self._last_ms, int(now * 1000))
        return self._last_ms

    # -- time ---------------------------------------------------------------------------

    def advance(self, now: float | None = None) -> int:
        """End every call due by `now`, oldest end first; returns how many ended."""
        now = self._time(now)
        ending = self._ending
        count = 0
        while ending and ending[0][0] <= now:
            end, _, call = heapq.heappop(ending)
            call.ended = True
            self.live_calls -= 1
            count += 1
            if self._on_ended is not None:
                self._on_ended(call, end)
        return count

    def next_end(self) -> float | None:
        """When the next call ends (epoch seconds), or None if no live call will."""
        return self._ending[0][0] if self._ending else None

    # -- placing ------------------------------------------------------------------------

    def add_call(self, body: dict[str, Any], now: float | None = None) -> Call:
        """Store a call from a validated POST /v2/calls body; it lives from `now`."""
        now = self._time(now)
        self.advance(now)
        created_ms = self._now_ms(now)
        self._id_count += 1
        phone = body["phone"]
        same_phone = self._calls_by_phone.setdefault(phone, [])
        ordinal = len(same_phone) + 1
        call = Call(
            call_id=f"{created_ms}x{self._id_prefix}{self._id_count:09d}",
            # Interned: a campaign repeats the same agent and caller ids a million times.
            model_id=sys.intern(body["model_id"]),
            phone_from=_intern_or_none(body.get("from_phone_number")),
            phone_to=phone,
            name=body["name"],
            created_ms=created_ms,
            started=now,
            ordinal=ordinal,
            fate=self._shared(fate(self._options.seed, phone, ordinal, self._options)),
        )
        self.calls[call.call_id] = call
        same_phone.append(call)
        self._calls_by_model.setdefault(call.model_id, []).append(call)
        self.live_calls += 1
        ends_at = call.ends_at
        if ends_at is not None:
            heapq.heappush(self._ending, (ends_at, self._id_count, call))
        return call

    def _shared(self, drawn: Fate) -> Fate:
        # Calls with equal fates share one object: with fixed settings (the default ends
        # every call at once, completed) a million calls hold one Fate, not a million.
        collected = None if drawn.collected is None else tuple(drawn.collected.items())
        key = (drawn.status, drawn.seconds, drawn.end_call_reason, collected, drawn.nested_collected)
        return self._fates.setdefault((*key, drawn.string_start_time), drawn)

    def add_chat(self, body: dict[str, Any], now: float | None = None) -> Chat:
        """Store a chat from a validated POST /v2/chat/outbound body."""
        now = self._time(now)
        to_number = body["to_number"]
        ordinal = self._chats_to.get(to_number, 0) + 1
        self._chats_to[to_number] = ordinal
        lasts = chat_seconds(self._options.seed, to_number, ordinal, self._options)
        chat = Chat(
            seq=len(self._all_chats),
            chat_id=str(uuid.uuid4()),
            agent_id=sys.intern(body["agent_id"]),
            channel=body["channel"],
            to_number=to_number,
            from_number=sys.intern(body["from_number"]),
            created_ms=self._now_ms(now),
            ends_at=None if lasts is None else now + lasts,
        )
        self.chats[chat.chat_id] = chat
        self._all_chats.append(chat)
        self._chats_by_agent.setdefault(chat.agent_id, []).append(chat)
        return chat

    # -- reading ------------------------------------------------------------------------

    def get_call(self, call_id: str, now: float | None = None) -> Call | None:
        """One call by id, with every call due by `now` ended first."""
        self.advance(now)
        return self.calls.get(call_id)

    def list_calls(
        self,
        model_id: str,
        phone: str | None = None,
        from_ms: int | None = None,
        to_ms: int | None = None,
        call_status: str | None = None,
        limit: int = 20,
        offset: int = 0,
        now: float | None = None,
    ) -> tuple[int, list[Call]]:
        """(total matching, one page newest first) of an agent's calls at `now`, dates inclusive.

        Costs the page (or, with `phone`, that phone's calls in the window); a
        `call_status` filter costs the calls in the window, whose statuses change
        with time and are not indexed.
        """
        now = self._time(now)
        self.advance(now)
        pool = self._calls_by_model if phone is None else self._calls_by_phone
        calls = pool.get(model_id if phone is None else phone, [])
        lo = 0 if from_ms is None else bisect_left(calls, from_ms, key=_created)
        hi = len(calls) if to_ms is None else bisect_right(calls, to_ms, key=_created)
        if phone is not None or call_status is not None:
            # A phone's calls are few: filter them one by one (a status filter must too).
            self.touched += hi - lo
            matches = [
                call
                for call in reversed(calls[lo:hi])
                if call.model_id == model_id and (call_status is None or call.status_at(now) == call_status)
            ]
            return len(matches), matches[offset : offset + limit]
        # An agent's calls may be millions: slice the page out without copying the rest.
        end = max(hi - offset, lo)
        page = calls[max(end - limit, lo) : end][::-1]
        self.touched += len(page)
        return hi - lo, page

    def list_chats(
        self,
        agent_id: str | None,
        limit: int,
        before_seq: int | None,
    ) -> tuple[list[Chat], bool]:
        """(one page newest first, whether older chats remain), older than `before_seq`."""
        chats = self._all_chats if agent_id is None else self._chats_by_agent.get(agent_id, [])
        end = len(chats) if before_seq is None else bisect_left(chats, before_seq, key=_seq)
        start = max(end - limit, 0)
        return chats[start:end][::-1], start > 0


def _intern_or_none(value: str | None) -> str | None:
    return None if value is None else sys.intern(value)
