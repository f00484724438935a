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

SCHEMA_VERSION = 8

# The campaign page's groups per caller id, attempt and status (store/figures.py), v8: SQLite
# groups by sorting (1.8M calls: about a second); read in this covering index's order, no sort.
OUTCOME_INDEX = (
    "CREATE INDEX IF NOT EXISTS calls_outcome"
    " ON calls (from_number, ordinal, status, final, timed_out, duration)"
)

# One row per call (or chat) the API accepted, or a look-up found (v4). `leads.call_id` stays
# the id of the row's latest call; a row is live while that call has final = 0. Its indexes
# live here, not in INDEXES: an import drops and rebuilds those of `leads` only.
CALLS = f"""
CREATE TABLE IF NOT EXISTS calls (
    call_id       TEXT PRIMARY KEY,
    lead_id       INTEGER NOT NULL REFERENCES leads(id),
    ordinal       INTEGER NOT NULL,           -- 1 = the lead's first call, 2 = first redial ...
    from_number   TEXT NOT NULL DEFAULT '',
    placed_at     REAL NOT NULL,              -- epoch seconds the API accepted it
    status        TEXT NOT NULL DEFAULT '',   -- last status the API gave ('' before any poll)
    final         INTEGER NOT NULL DEFAULT 0, -- 1 once a final status was seen (or it timed out)
    timed_out     INTEGER NOT NULL DEFAULT 0, -- 1: no final status within the time-out
    ended_at      REAL,                       -- epoch seconds the final status was seen
    duration      REAL,                       -- seconds, as the API gave it
    end_reason    TEXT NOT NULL DEFAULT '',
    recording_url TEXT NOT NULL DEFAULT '',
    collected     TEXT NOT NULL DEFAULT '{{}}'  -- JSON object of collected variables (flattened)
);
CREATE INDEX IF NOT EXISTS calls_lead ON calls (lead_id, ordinal);
CREATE INDEX IF NOT EXISTS calls_live ON calls (final, placed_at);
{OUTCOME_INDEX};
"""

SCHEMA = (
    """
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
    state       TEXT NOT NULL DEFAULT '',   -- the state column's text (v5), for the law
    redial_at   REAL                   -- epoch seconds the lead's next call is due ([redial], v7)
);
-- Every number a request was ever committed for, and the one lead allowed to call it: an
-- intent for any other lead of the campaign is refused (writes.intent). A property of the
-- data: in PostgreSQL the same rule is the primary key on (campaign, phone).
CREATE TABLE IF NOT EXISTS called (
    phone   TEXT PRIMARY KEY,
    lead_id INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS number_usage (
    number TEXT NOT NULL, day TEXT NOT NULL, calls INTEGER NOT NULL,
    PRIMARY KEY (number, day)
);
-- Every committed intent (v6): the per-24-hour cap per number counts them, across
-- re-sends, re-imports and runs. A restored intent (never sent) is deleted.
CREATE TABLE IF NOT EXISTS dials (
    phone TEXT NOT NULL, at REAL NOT NULL, lead_id INTEGER NOT NULL, attempt INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS dials_phone ON dials (phone, at);
CREATE INDEX IF NOT EXISTS dials_at ON dials (at);
"""
    + CALLS
)


INDEXES = """
CREATE INDEX IF NOT EXISTS leads_status ON leads (status, position);
CREATE INDEX IF NOT EXISTS leads_position ON leads (position);
CREATE INDEX IF NOT EXISTS leads_phone ON leads (phone);
CREATE INDEX IF NOT EXISTS leads_fingerprint ON leads (fingerprint);
"""
INDEX_NAMES = ("leads_status", "leads_position", "leads_phone", "leads_fingerprint")


def _statements(script: str) -> list[str]:
    """A script as statements, for `execute` (`executescript` would COMMIT the transaction)."""
    statements, buffer = [], ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer)
            buffer = ""
    return statements


# STEPS[n]: the statements that take a journal from version n to n + 1.
STEPS: dict[int, tuple[str, ...]] = {
    # The cap on re-dials after a look-up found no call was counted in memory, from zero
    # at every run; counted here it holds across crashes and cron runs.
    1: ("ALTER TABLE leads ADD COLUMN unanswered INTEGER NOT NULL DEFAULT 0",),
    # A number called (or maybe called) by one row could be dialed by another after a
    # re-import; the `called` table makes it the first caller's for good. Filled from every
    # row whose intent was ever committed (attempts > 0), the earliest row first.
    2: (
        "CREATE TABLE IF NOT EXISTS called (phone TEXT PRIMARY KEY, lead_id INTEGER NOT NULL) WITHOUT ROWID",
        "INSERT OR IGNORE INTO called (phone, lead_id) SELECT phone, id FROM leads"
        " WHERE phone != '' AND (attempts > 0 OR status IN ('sent', 'unknown')) ORDER BY id",
    ),
    # Calls are followed to their end (issue 12). A call placed by a dialer of schema 3 or
    # older was never followed: it becomes the row's first call, given up with no status seen
    # and no end time (timed_out = 1 keeps it out of the pick-up rate; ended_at NULL says the
    # time-out was not this dialer's), so it counts in `dialer_calls` and is never polled or
    # waited for.
    3: (
        *_statements(CALLS),
        "INSERT OR IGNORE INTO calls (call_id, lead_id, ordinal, from_number, placed_at, final,"
        " timed_out) SELECT call_id, id, 1, from_number, COALESCE(intent_at, 0), 1, 1 FROM leads"
        " WHERE call_id != ''",
    ),
    # The lead's state column, which with its area code decides the law (issue 13).
    4: ("ALTER TABLE leads ADD COLUMN state TEXT NOT NULL DEFAULT ''",),
    # Every intent, for the per-24-hour cap; an older journal knew each lead's last one.
    5: (
        "CREATE TABLE dials (phone TEXT NOT NULL, at REAL NOT NULL, lead_id INTEGER NOT NULL,"
        " attempt INTEGER NOT NULL)",
        "CREATE INDEX dials_phone ON dials (phone, at)",
        "CREATE INDEX dials_at ON dials (at)",
        "INSERT INTO dials (phone, at, lead_id, attempt) SELECT phone, intent_at, id, attempts FROM leads"
        " WHERE intent_at IS NOT NULL AND phone != ''",
    ),
    # [redial] (issue 13): when a lead's next call is due, decided once with its call's end.
    6: ("ALTER TABLE leads ADD COLUMN redial_at REAL",),
    # The campaign page's figures (OUTCOME_INDEX).
    7: (OUTCOME_INDEX,),
}


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
