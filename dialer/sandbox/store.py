"""The calls and chats a sandbox has placed, kept in memory for the GET endpoints.

Lists are kept in creation order, so time ranges are found by bisection and the
newest come last. Calls are indexed by recipient phone and by agent, so the
look-up a dialer makes after a lost answer (`lead_phone_number=`) costs the calls
of that one phone, even with a million calls stored.
"""

from __future__ import annotations

import random
import sys
import uuid
import zlib
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from typing import Any

# Every sandbox call reports this status: the sandbox has no telephony to progress it.
CALL_STATUS = "completed"
CHAT_STATUS = "ongoing"


@dataclass(slots=True)
class Call:
    """One placed call: only what is needed to answer the look-ups (slots keep it small)."""

    call_id: str
    model_id: str
    phone_from: str | None
    phone_to: str
    name: str
    created_ms: int

    def to_json(self) -> dict[str, Any]:
        """The call as GET /v2/calls shows it, with plausible made-up outcome fields."""
        duration = 30 + zlib.crc32(self.call_id.encode()) % 150  # stable per call
        return {
            "call_id": self.call_id,
            "model_id": self.model_id,
            "phone_number_from": self.phone_from,
            "phone_number_to": self.phone_to,
            "name": self.name,
            "status": CALL_STATUS,
            "end_call_reason": "human_goodbye",
            "duration": duration,
            "start_time": self.created_ms,
            "transcript": f"bot: Hello {self.name}, this is the sandbox agent.\nhuman: Hi!",
            "recording_url": f"https://sandbox.invalid/recordings/{self.call_id}.mp3",
            "collected_variables": {},
            "error_message": None,
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

    def to_json(self) -> dict[str, Any]:
        """The chat as GET /v2/chat shows it."""
        return {
            "chat_id": self.chat_id,
            "agent_id": self.agent_id,
            "channel": self.channel,
            "to_number": self.to_number,
            "from_number": self.from_number,
            "chat_status": CHAT_STATUS,
            "start_timestamp": self.created_ms,
        }


def _created(item: Call | Chat) -> int:
    return item.created_ms


def _seq(chat: Chat) -> int:
    return chat.seq


class Store:
    """Placed calls and chats, with the indexes the GET endpoints need."""

    def __init__(self) -> None:
        self.calls: dict[str, Call] = {}
        self.chats: dict[str, Chat] = {}
        self._calls_by_phone: dict[str, list[Call]] = {}
        self._calls_by_model: dict[str, list[Call]] = {}
        self._chats_by_agent: dict[str, list[Chat]] = {}
        self._all_chats: list[Chat] = []
        self._last_ms = 0
        # Ids look like Synthflow's ("<ms>x<17 digits>"); the random part keeps two
        # sandboxes (say, before and after a restart) from handing out the same id.
        self._id_prefix = f"{random.SystemRandom().randrange(10**8):08d}"
        self._id_count = 0

    def _now_ms(self, now: float) -> int:
        # Never backwards, even if the wall clock steps back: bisection needs sorted lists.
        self._last_ms = max(self._last_ms, int(now * 1000))
        return self._last_ms

    def add_call(self, body: dict[str, Any], now: float) -> Call:
        """Store a call from a validated POST /v2/calls body."""
        created_ms = self._now_ms(now)
        self._id_count += 1
        call = Call(
            call_id=f"{created_ms}x{self._id_prefix}{self._id_count:09d}",
            # Interned: a campaign repeats the same agent and caller ids a million times.
            model_id=sys.intern(body["model_id"]),
            phone_from=_intern_or_none(body.get("from_phone_number")),
            phone_to=body["phone"],
            name=body["name"],
            created_ms=created_ms,
        )
        self.calls[call.call_id] = call
        self._calls_by_phone.setdefault(call.phone_to, []).append(call)
        self._calls_by_model.setdefault(call.model_id, []).append(call)
        return call

    def add_chat(self, body: dict[str, Any], now: float) -> Chat:
        """Store a chat from a validated POST /v2/chat/outbound body."""
        chat = Chat(
            seq=len(self._all_chats),
            chat_id=str(uuid.uuid4()),
            agent_id=sys.intern(body["agent_id"]),
            channel=body["channel"],
            to_number=body["to_number"],
            from_number=sys.intern(body["from_number"]),
            created_ms=self._now_ms(now),
        )
        self.chats[chat.chat_id] = chat
        self._all_chats.append(chat)
        self._chats_by_agent.setdefault(chat.agent_id, []).append(chat)
        return chat

    def list_calls(
        self,
        model_id: str,
        phone: str | None = None,
        from_ms: int | None = None,
        to_ms: int | None = None,
        call_status: str | None = None,
        limit: int = 20,
        offset: int = 0,
    ) -> tuple[int, list[Call]]:
        """(total matching, one page newest first) of an agent's calls, dates inclusive."""
        if call_status is not None and call_status != CALL_STATUS:
            return 0, []
        pool = self._calls_by_model if phone is None else self._calls_by_phone
        calls = pool.get(model_id if phone is None else phone, [])
        lo = 0 if from_ms is None else bisect_left(calls, from_ms, key=_created)
        hi = len(calls) if to_ms is None else bisect_right(calls, to_ms, key=_created)
        if phone is not None:
            # A phone's calls are few: filter them by agent one by one.
            matches = [call for call in reversed(calls[lo:hi]) if call.model_id == model_id]
            return len(matches), matches[offset : offset + limit]
        # An agent's calls may be millions: slice the page out without copying the rest.
        end = max(hi - offset, lo)
        return hi - lo, calls[max(end - limit, lo) : end][::-1]

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
