"""Importing a leads file into a PostgreSQL journal: importing.py's rules, in PostgreSQL's SQL.

The same steps as importing.py (read that one first: it says why each is there);
rows arrive by COPY, and temporary tables are dropped at COMMIT.
"""

from __future__ import annotations

from collections.abc import Iterator
from enum import Enum
from typing import Any

import psycopg

from dialer.model import DIALABLE, NEVER_DIALED, Status
from dialer.store.db import sql_list
from dialer.store.importing import _NOT_ACTED_ON, ImportSummary
from dialer.store.writes import HOLDER

Conn = psycopg.Connection[tuple[Any, ...]]

_COLUMNS = (
    "position, fingerprint, raw, phone, name, email, timezones, variables, status, error, updated_at, state"
)


def _copy(conn: Conn, table: str, records: Iterator[tuple[Any, ...]]) -> None:
    with conn.cursor().copy(f"COPY {table} ({_COLUMNS}) FROM STDIN") as copy:
        for record in records:
            # Enum members (a lead's status) as their text, whatever psycopg's enum rules.
            copy.write_row([v.value if isinstance(v, Enum) else v for v in record])


def _one(conn: Conn, statement: str, params: tuple[Any, ...] = ()) -> int:
    row = conn.execute(statement.encode(), params).fetchone()
    assert row is not None
    return int(row[0])


def first_import(conn: Conn, records: Iterator[tuple[Any, ...]]) -> ImportSummary:
    _copy(conn, "leads", records)
    # Fresh statistics: without them the planner takes a million-row table for an empty
    # one, and every claim scans it whole instead of walking the status index.
    conn.execute("ANALYZE leads")
    added = _one(conn, "SELECT count(*) FROM leads")
    return ImportSummary(added=added, matched=0, removed=0, first_import=True)


def reimport(conn: Conn, records: Iterator[tuple[Any, ...]], now: str) -> ImportSummary:
    conn.execute(
        "CREATE TEMP TABLE incoming (row_key BIGSERIAL, position INTEGER, fingerprint TEXT, raw TEXT,"
        " phone TEXT, name TEXT, email TEXT, timezones TEXT, variables TEXT, status TEXT, error TEXT,"
        " updated_at TEXT, state TEXT, lead_id BIGINT) ON COMMIT DROP"
    )
    _copy(conn, "incoming", records)
    conn.execute("CREATE INDEX ON incoming (fingerprint)")
    conn.execute("CREATE INDEX ON incoming (phone)")
    conn.execute("ANALYZE incoming")
    # 1. Same content: the row keeps its id and history.
    conn.execute(
        "UPDATE incoming SET lead_id = (SELECT id FROM leads"
        " WHERE leads.fingerprint = incoming.fingerprint LIMIT 1)"
    )
    # 2. Changed cells, same number as a lead no longer matched: paired one to one.
    conn.execute(
        "CREATE TEMP TABLE pairs ON COMMIT DROP AS SELECT r.row_key, f.id FROM"
        " (SELECT row_key, phone, row_number() OVER (PARTITION BY phone ORDER BY position) AS k"
        "   FROM incoming WHERE lead_id IS NULL AND phone != '') r"
        " JOIN (SELECT id, phone, row_number() OVER (PARTITION BY phone ORDER BY id) AS k"
        "   FROM leads WHERE phone != '' AND id NOT IN"
        "   (SELECT lead_id FROM incoming WHERE lead_id IS NOT NULL)) f"
        " ON f.phone = r.phone AND f.k = r.k"
    )
    conn.execute("UPDATE incoming SET lead_id = p.id FROM pairs p WHERE p.row_key = incoming.row_key")
    matched = _one(conn, "SELECT count(*) FROM incoming WHERE lead_id IS NOT NULL")
    conn.execute("UPDATE leads SET position = NULL")
    conn.execute(
        "UPDATE leads SET position = i.position, raw = i.raw, fingerprint = i.fingerprint,"
        " name = i.name, email = i.email, timezones = i.timezones, variables = i.variables,"
        " state = i.state FROM incoming i WHERE i.lead_id = leads.id"
    )
    conn.execute(
        (
            "UPDATE leads SET status = i.status, error = i.error, phone = i.phone,"
            " updated_at = i.updated_at FROM incoming i WHERE i.lead_id = leads.id"
            f" AND leads.status IN ({_NOT_ACTED_ON})"
            " AND (leads.status != i.status OR leads.error != i.error OR leads.phone != i.phone)"
            " AND NOT (leads.status = %s AND i.status = %s)"
        ).encode(),
        (str(Status.DEFERRED), str(Status.PENDING)),
    )
    before = _one(conn, "SELECT coalesce(max(id), 0) FROM leads")
    conn.execute(
        f"INSERT INTO leads ({_COLUMNS}) SELECT {_COLUMNS} FROM incoming"
        " WHERE lead_id IS NULL ORDER BY position"
    )
    added = _one(conn, "SELECT count(*) FROM leads WHERE id > %s", (before,))
    conn.execute(
        (
            "UPDATE leads SET status = %s, error = 'same number as row ' ||"
            " coalesce((SELECT o.position::text FROM leads o WHERE o.phone = leads.phone"
            " AND o.id <= %s AND o.position IS NOT NULL ORDER BY o.id LIMIT 1),"
            " 'of an earlier version of the file') WHERE id > %s AND status = %s AND EXISTS"
            " (SELECT 1 FROM leads o WHERE o.phone = leads.phone AND o.id <= %s AND o.status NOT IN"
            f" ({sql_list(NEVER_DIALED)}))"
        ).encode(),
        (str(Status.DUPLICATE), before, before, str(Status.PENDING), before),
    )
    # A number another row called (or may have) is that row's: a row still to dial with it
    # is a duplicate naming the caller, as the intent would refuse it.
    conn.execute(
        (
            f"UPDATE leads SET status = %s, error = {HOLDER}, updated_at = %s"
            f" WHERE status IN ({sql_list(DIALABLE)}) AND position IS NOT NULL AND EXISTS"
            " (SELECT 1 FROM called c WHERE c.phone = leads.phone AND c.lead_id != leads.id)"
        ).encode(),
        (str(Status.DUPLICATE), now),
    )
    removed = _one(conn, "SELECT count(*) FROM leads WHERE position IS NULL")
    return ImportSummary(added=added, matched=matched, removed=removed, first_import=False)
