"""The `--record` file: one JSON object per request, a line each, flushed at once.

A line is written when the sandbox decides the answer (before any latency), so a
reader that sees a POST in the file knows whether it placed a call, even if the
client gave up waiting.
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

    def close(self) -> None:
        """Close the file; later writes raise."""
        self._file.close()


def read_record(path: Path | str) -> list[dict[str, Any]]:
    """Every request recorded in a `--record` file, oldest first.

    Safe while the sandbox is still writing: a last line without its newline is
    still being written and is left out.
    """
    text = Path(path).read_text(encoding="utf-8")
    lines = text.split("\n")
    return [json.loads(line) for line in lines[:-1] if line]
