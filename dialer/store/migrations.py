"""The journal's schema, its version, and the steps that bring an older journal up to date.

`meta.schema` records the version a journal was written in. Opening a journal runs
every step from that version up to `SCHEMA_VERSION` in one transaction (a crash
mid-way leaves it as it was), and refuses a journal written by a newer dialer,
whose columns this one would not know how to keep.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from dialer.errors import JournalError
from dialer.store.db import transaction

SCHEMA_VERSION = 4

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS leads (
    id          INTEGER PRIMARY KEY,   -- stable for the life of the journal
    position    INTEGER,               -- spreadsheet row in the current leads file; NULL once gone
    fingerprint TEXT NOT NULL,         -- the row's content, to match it when the file changes
    raw         TEXT NOT NULL,         -- JSON list of the original cells, in header order
    phone       TEXT NOT NULL,
    name        TEXT NOT NULL,
    email       TEXT NOT NULL,
    timezones   TEXT NOT NULL,         -- IANA names joined by spaces
    variables   TEXT NOT NULL,         -- JSON object
    status      TEXT NOT NULL,
    error       TEXT NOT NULL DEFAULT '',
    call_id     TEXT NOT NULL DEFAULT '',
    from_number TEXT NOT NULL DEFAULT '',
    attempts    INTEGER NOT NULL DEFAULT 0,
    intent_at   REAL,                  -- epoch seconds the last request was committed to be sent
    updated_at  TEXT NOT NULL,
    unanswered  INTEGER NOT NULL DEFAULT 0, -- requests that got no answer (v2): caps the re-dials
    state       TEXT NOT NULL DEFAULT ''    -- the state column's text (v3), for the law
);
CREATE TABLE IF NOT EXISTS number_usage (
    number TEXT NOT NULL, day TEXT NOT NULL, calls INTEGER NOT NULL,
    PRIMARY KEY (number, day)
);
-- Every committed intent (v4): the per-24-hour cap per number counts them, across
-- re-sends, re-imports and runs. A restored intent (never sent) is deleted.
CREATE TABLE IF NOT EXISTS dials (
    phone TEXT NOT NULL, at REAL NOT NULL, lead_id INTEGER NOT NULL, attempt INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS dials_phone ON dials (phone, at);
"""

INDEXES = """
CREATE INDEX IF NOT EXISTS leads_status ON leads (status, position);
CREATE INDEX IF NOT EXISTS leads_position ON leads (position);
CREATE INDEX IF NOT EXISTS leads_phone ON leads (phone);
CREATE INDEX IF NOT EXISTS leads_fingerprint ON leads (fingerprint);
"""
INDEX_NAMES = ("leads_status", "leads_position", "leads_phone", "leads_fingerprint")

# STEPS[n]: the statements that take a journal from version n to n + 1.
STEPS: dict[int, tuple[str, ...]] = {
    # The cap on re-dials after a look-up found no call was counted in memory, from zero
    # at every run; counted here it holds across crashes and cron runs.
    1: ("ALTER TABLE leads ADD COLUMN unanswered INTEGER NOT NULL DEFAULT 0",),
    # The lead's state column, which with its area code decides the law (issue 13).
    2: ("ALTER TABLE leads ADD COLUMN state TEXT NOT NULL DEFAULT ''",),
    # Every intent, for the per-24-hour cap; an older journal knew each lead's last one.
    3: (
        "CREATE TABLE dials (phone TEXT NOT NULL, at REAL NOT NULL, lead_id INTEGER NOT NULL,"
        " attempt INTEGER NOT NULL)",
        "CREATE INDEX dials_phone ON dials (phone, at)",
        "INSERT INTO dials (phone, at, lead_id, attempt) SELECT phone, intent_at, id, attempts FROM leads"
        " WHERE intent_at IS NOT NULL AND phone != ''",
    ),
}


def _statements(script: str) -> list[str]:
    """A script as statements, for `execute` (`executescript` would COMMIT the transaction)."""
    statements, buffer = [], ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer)
            buffer = ""
    return statements


def _version(conn: sqlite3.Connection) -> int | None:
    """The version recorded in meta; None for a new file (no leads table yet)."""
    tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "leads" not in tables:
        return None
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() if "meta" in tables else None
    # Version 1 wrote its number at the first open; a journal without it is a version 1 one.
    return 1 if row is None else int(row[0])


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Create a new journal at `SCHEMA_VERSION`, or bring an older one up to it in place."""
    if _version(conn) == SCHEMA_VERSION:
        return  # the common case: no write lock taken (`dialer status` beside a running run)
    with transaction(conn):
        # Read inside the transaction: two processes opening one old journal migrate it once.
        found = _version(conn)
        if found is not None and found > SCHEMA_VERSION:
            raise JournalError(
                f"{path}: written by a newer dialer (journal schema {found}; this one knows up to"
                f" {SCHEMA_VERSION}); upgrade dialer to continue this campaign"
            )
        if found is None:
            for statement in _statements(SCHEMA + INDEXES):
                conn.execute(statement)
        else:
            for version in range(found, SCHEMA_VERSION):
                for statement in STEPS[version]:
                    conn.execute(statement)
        if found != SCHEMA_VERSION:
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),)
            )
