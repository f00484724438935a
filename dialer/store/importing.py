"""Importing a leads file into the journal: the first time whole, later matched by content.

Called by `Journal.import_leads` inside its transaction.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from dialer.cells import encode_row
from dialer.model import DIALABLE, NEVER_DIALED, Lead, Status
from dialer.store.db import sql_list
from dialer.store.migrations import INDEX_NAMES, INDEXES
from dialer.store.writes import HOLDER


@dataclass(frozen=True)
class ImportSummary:
    """What an import did: rows new to the journal, rows matched to earlier ones, rows gone."""

    added: int
    matched: int
    removed: int
    first_import: bool


def file_signature(path: Path) -> dict[str, Any]:
    """Size, mtime and content hash of the leads file: tells whether it changed since the import."""
    stat = path.stat()
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest.hexdigest()}


def _fingerprint(values: Sequence[str], seen: dict[str, int]) -> str:
    """Content hash of a row; identical rows get #2, #3... so each keeps its own history."""
    base = hashlib.blake2b("\x1f".join(values).encode(), digest_size=12).hexdigest()
    count = seen.get(base, 0) + 1
    seen[base] = count
    return base if count == 1 else f"{base}#{count}"


def lead_records(leads: Iterable[Lead], now: str) -> Iterator[tuple[Any, ...]]:
    """Each lead as the columns of an imported row, in the order the INSERTs name them."""
    seen: dict[str, int] = {}
    for lead in leads:
        yield (
            lead.row,
            _fingerprint(lead.values, seen),
            encode_row(lead.values),  # typed cells: dialer/cells.py
            lead.phone,
            lead.name,
            lead.email,
            " ".join(lead.timezones),
            orjson.dumps(lead.variables).decode(),
            lead.status,
            lead.error,
            now,
            lead.state,
        )


# Rows not yet acted on: a re-import gives them the verdict on their new cells.
_NOT_ACTED_ON = sql_list(
    {Status.PENDING, Status.DEFERRED, Status.INVALID, Status.DUPLICATE, Status.SUPPRESSED}
)


def first_import(conn: sqlite3.Connection, records: Iterator[tuple[Any, ...]]) -> ImportSummary:
    """Every row new: inserted, then the indexes built once."""
    # Building the indexes once after a million inserts is several times faster
    # than keeping them up to date row by row (phones and hashes come in any order).
    for index in INDEX_NAMES:
        conn.execute(f"DROP INDEX IF EXISTS {index}")
    conn.executemany(
        "INSERT INTO leads (position, fingerprint, raw, phone, name, email, timezones,"
        " variables, status, error, updated_at, state) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        records,
    )
    for statement in INDEXES.strip().splitlines():
        conn.execute(statement)
    added = conn.execute("SELECT count(*) FROM leads").fetchone()[0]
    return ImportSummary(added=added, matched=0, removed=0, first_import=True)


def reimport(conn: sqlite3.Connection, records: Iterator[tuple[Any, ...]], now: str) -> ImportSummary:
    """Rows matched to the journal by content, then by number; the rest new or duplicates."""
    conn.execute(
        "CREATE TEMP TABLE incoming (position INTEGER, fingerprint TEXT, raw TEXT, phone TEXT,"
        " name TEXT, email TEXT, timezones TEXT, variables TEXT, status TEXT, error TEXT,"
        " updated_at TEXT, state TEXT, lead_id INTEGER)"
    )
    try:
        conn.executemany("INSERT INTO incoming VALUES (?,?,?,?,?,?,?,?,?,?,?,?,NULL)", records)
        conn.execute("CREATE INDEX temp.incoming_fp ON incoming (fingerprint)")
        conn.execute("CREATE INDEX temp.incoming_phone ON incoming (phone)")
        # 1. Same content: the row keeps its id and history.
        conn.execute(
            "UPDATE incoming SET lead_id = (SELECT id FROM leads"
            " WHERE leads.fingerprint = incoming.fingerprint)"
        )
        # 2. Changed cells, same number as a lead no longer matched: take over its history.
        # Paired one to one (the k-th such row of a number with the k-th such lead), so
        # two new rows with one old number never both claim the same lead.
        conn.execute(
            "CREATE TEMP TABLE pairs AS SELECT r.row_key, f.id FROM"
            " (SELECT rowid AS row_key, phone, row_number() OVER"
            "   (PARTITION BY phone ORDER BY position) AS k"
            "   FROM incoming WHERE lead_id IS NULL AND phone != '') r"
            " JOIN (SELECT id, phone, row_number() OVER (PARTITION BY phone ORDER BY id) AS k"
            "   FROM leads WHERE phone != '' AND id NOT IN"
            "   (SELECT lead_id FROM incoming WHERE lead_id IS NOT NULL)) f"
            " ON f.phone = r.phone AND f.k = r.k"
        )
        conn.execute(
            "UPDATE incoming SET lead_id = (SELECT id FROM temp.pairs"
            " WHERE pairs.row_key = incoming.rowid) WHERE rowid IN"
            " (SELECT row_key FROM temp.pairs)"
        )
        conn.execute("DROP TABLE temp.pairs")
        matched = conn.execute("SELECT count(*) FROM incoming WHERE lead_id IS NOT NULL").fetchone()[0]
        conn.execute("UPDATE leads SET position = NULL")
        conn.execute(
            "UPDATE leads SET position = i.position, raw = i.raw, fingerprint = i.fingerprint,"
            " name = i.name, email = i.email, timezones = i.timezones, variables = i.variables,"
            " state = i.state"
            " FROM incoming i WHERE i.lead_id = leads.id"
        )
        # A row not yet acted on takes the verdict on its new cells (a time zone fixed, a
        # number now on a do-not-call list), and its number as now read (the same cells
        # read with another `default_region`); sent, failed and unknown rows keep theirs.
        conn.execute(
            "UPDATE leads SET status = i.status, error = i.error, phone = i.phone,"
            " updated_at = i.updated_at FROM incoming i WHERE i.lead_id = leads.id"
            f" AND leads.status IN ({_NOT_ACTED_ON})"
            " AND (leads.status != i.status OR leads.error != i.error OR leads.phone != i.phone)"
            " AND NOT (leads.status = ? AND i.status = ?)",
            (Status.DEFERRED, Status.PENDING),
        )
        before = conn.execute("SELECT coalesce(max(id), 0) FROM leads").fetchone()[0]
        conn.execute(
            "INSERT INTO leads (position, fingerprint, raw, phone, name, email, timezones,"
            " variables, status, error, updated_at, state) SELECT position, fingerprint, raw,"
            " phone, name, email, timezones, variables, status, error, updated_at, state FROM incoming"
            " WHERE lead_id IS NULL ORDER BY position"
        )
        added = conn.execute("SELECT count(*) FROM leads WHERE id > ?", (before,)).fetchone()[0]
        # A new row whose number an older row holds must never ring that person again.
        conn.execute(
            "UPDATE leads SET status = ?, error = 'same number as row ' ||"
            " coalesce((SELECT o.position FROM leads o WHERE o.phone = leads.phone AND o.id <= ?"
            " AND o.position IS NOT NULL ORDER BY o.id LIMIT 1), 'of an earlier version of the"
            " file') WHERE id > ? AND status = ? AND EXISTS (SELECT 1 FROM leads o"
            " WHERE o.phone = leads.phone AND o.id <= ? AND o.status NOT IN"
            f" ({sql_list(NEVER_DIALED)}))",
            (Status.DUPLICATE, before, before, Status.PENDING, before),
        )
        # Whatever the file now says, a number another row called (or may have) is that
        # row's: a row still to be dialed with it is a duplicate naming the caller, so the
        # verdicts agree with what the intent would refuse (writes.intent).
        conn.execute(
            f"UPDATE leads SET status = ?, error = {HOLDER}, updated_at = ?"
            f" WHERE status IN ({sql_list(DIALABLE)}) AND position IS NOT NULL AND EXISTS"
            " (SELECT 1 FROM called c WHERE c.phone = leads.phone AND c.lead_id != leads.id)",
            (Status.DUPLICATE, now),
        )
        removed = conn.execute("SELECT count(*) FROM leads WHERE position IS NULL").fetchone()[0]
    finally:
        conn.execute("DROP TABLE temp.incoming")
    return ImportSummary(added=added, matched=matched, removed=removed, first_import=False)
