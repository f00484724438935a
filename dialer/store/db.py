"""Opening the journal's SQLite file, and the one transaction helper every write goes through."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from dialer.errors import JournalError
from dialer.model import Status


def connect(path: Path) -> sqlite3.Connection:
    """Autocommit mode (transactions are ours to open), WAL, and an fsync per commit."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any exception (a cancel or Ctrl-C included).

    IMMEDIATE takes the write lock at the start, so a transaction never fails half-way
    for want of it.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        # SQLite rolls back on its own after some errors (a full disk): a second ROLLBACK
        # would raise and hide the first error.
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def sql_list(statuses: Iterable[Status]) -> str:
    """Statuses as an SQL list, sorted so a statement's text never changes between runs."""
    return ", ".join(f"'{status}'" for status in sorted(statuses))


def journal_write_error(path: Path, exc: sqlite3.Error) -> JournalError:
    """A commit that failed for the disk's sake: one line naming the journal and what to do."""
    text = str(exc)
    if "full" in text:
        cause = "the disk is full"
    elif "readonly" in text or "read-only" in text:
        cause = "the journal is read-only"
    else:
        cause = f"the disk failed ({text})"
    return JournalError(
        f"{path}: cannot write the journal: {cause}; the dialer stopped. What was saved stays:"
        " free space (or fix the disk), then run again; rows whose request may have left are"
        " `unknown` and the next run looks them up before dialing anyone again"
    )


@contextmanager
def journal_errors(path: Path) -> Iterator[None]:
    """SQLite's errors as the one line a user reads: a disk that failed, a damaged file."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        raise journal_write_error(path, exc) from None
    except sqlite3.DatabaseError as exc:
        raise JournalError(
            f"{path}: the journal is damaged ({exc}); nothing more was sent. Restore it from a"
            " backup, or move it away and run with --new-journal (rows called may be called again)"
        ) from None
