"""The `--record` file: one JSON object per request, a line each, flushed at once.

A line is written when the sandbox decides the answer (before any latency), so a
reader that sees a POST in the file knows whether it placed a call, even if the
client gave up waiting.

Events are lines of their own with an `event` key and no `method`: `call.ended`
(`time` = when the call ended, `call_id`, `phone`, `status`, `duration`). Every
call due to end is ended before a request is handled, so the file is in time
order: counting accepted call POSTs up and `call.ended` lines down gives the
live calls at every moment.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, TextIO


class Recorder:
    """Appends request records to one file, each written and flushed in one go."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: TextIO = path.open("a", encoding="utf-8")

    def write(
        self,
        *,
        time: float,
        method: str,
        path: str,
        query: dict[str, str],
        body: Any,
        status: int,
        response: bytes,
        dropped: bool,
    ) -> None:
        """Record one request; `response` is the JSON body as sent (or as it would have been)."""
        head = json.dumps(
            {
                "time": time,
                "method": method,
                "path": path,
                "query": query,
                "body": body,
                "status": status,
            },
            separators=(",", ":"),
        )
        # The answer is already encoded JSON without newlines (the sandbox makes it):
        # splice it in rather than parse it back just to encode it again.
        tail = ',"dropped":true}\n' if dropped else ',"dropped":false}\n'
        self._file.write(f'{head[:-1]},"response":{response.decode()}{tail}')
        self._file.flush()

    def write_event(self, *, time: float, event: str, **fields: Any) -> None:
        """Record something that happened without a request, e.g. a call that ended."""
        line = json.dumps({"time": time, "event": event, **fields}, separators=(",", ":"))
        self._file.write(f"{line}\n")
        self._file.flush()

    def close(self) -> None:
        """Close the file; later writes raise."""
        self._file.close()


def read_record(path: Path | str, *, events: bool = False) -> list[dict[str, Any]]:
    """Every request recorded in a `--record` file, oldest first; with `events`, the events too.

    Safe while the sandbox is still writing: a last line without its newline is
    still being written and is left out.
    """
    text = Path(path).read_text(encoding="utf-8")
    lines = [json.loads(line) for line in text.split("\n")[:-1] if line]
    return lines if events else [line for line in lines if "event" not in line]


def read_events(path: Path | str, event: str = "call.ended") -> list[dict[str, Any]]:
    """The `event` lines of a `--record` file (default `call.ended`), oldest first."""
    return [line for line in read_record(path, events=True) if line.get("event") == event]
