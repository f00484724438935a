"""Opt-out lists: a person who said "do not call me again" on a call, written down for good.

`[outcomes] opt_out_variable` names a collected variable; a call that ends with it set to
yes / true / 1 appends `phone,campaign,call_id,at` to `opt_out_list`. The list is only ever
appended to, one `os.write` of the whole line on an O_APPEND descriptor: the kernel puts
each such write at the end of the file whole, so two campaigns (two processes) writing at
once lose no line and mix none. The line is written before the journal commits the call's
end: a crash in between writes it again on the next poll (a line twice, never none).
Any campaign reads the list through `suppress` (dialer/suppress.py, header and all).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

HEADER = ("phone", "campaign", "call_id", "at")
YES = frozenset({"yes", "true", "1"})


def opted_out(collected: Mapping[str, str], variable: str) -> bool:
    """The call's collected `variable` says yes / true / 1 (any case, spaces around)."""
    return collected.get(variable, "").strip().lower() in YES


def _line(fields: tuple[str, ...]) -> bytes:
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerow(fields)
    return text.getvalue().encode("utf-8")


def ensure_list(path: Path) -> None:
    """Create the list with its header line if it does not exist yet. Made aside and linked
    into place (link fails if the name exists): no writer can ever append before the header."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    aside = path.with_name(f".{path.name}.{os.getpid()}.new")
    aside.write_bytes(_line(HEADER))
    try:
        os.link(aside, path)
    except FileExistsError:
        pass  # another campaign made it first: its header is the one
    finally:
        aside.unlink(missing_ok=True)


def append(path: Path, phone: str, campaign: str, call_id: str, at: float) -> None:
    """One line on the list, in one write at its end."""
    ensure_list(path)
    moment = datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    line = _line((phone, campaign, call_id, moment))
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, line)
        if written != len(line):  # a full disk: say so rather than leave half a line unsaid
            raise OSError(f"{path}: only {written} of {len(line)} bytes of an opt-out written")
        os.fsync(fd)
    finally:
        os.close(fd)
