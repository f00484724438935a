"""Opening the journal's SQLite file, and the one transaction helper every write goes through."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

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
