"""One run per campaign at a time: an exclusive flock on the journal file itself."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from dialer.errors import JournalError, LockedError


class CampaignLock:
    """An exclusive flock on the journal file, so two runs never dial the same campaign.

    The lock is the file's (its inode's), not its name's: a journal reached through a
    symlink, `./out/../out/x.sqlite` or a hard link is one lock, whichever campaign file
    names it. The kernel drops a flock when its holder dies, so a lock left by a killed
    process never blocks the next run. A flock and SQLite's own (POSIX) locks on the
    file are independent on Linux; but closing any descriptor of a file drops the POSIX
    locks the process holds on it, so `release` comes after the journal is closed.
    """

    def __init__(self, journal_path: Path) -> None:
        self.path = journal_path
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Created empty when new: SQLite takes an empty file for a new database.
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise JournalError(f"{self.path}: cannot open the journal: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockedError(
                f"{self.path}: another run of this campaign is in progress; nothing sent"
            ) from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> CampaignLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
