"""`dialer migrate`: a campaign's SQLite journal copied into PostgreSQL, row for row.

Every row keeps its id, status, attempts, intent time, caller id and call id, so a
campaign migrated halfway resumes on PostgreSQL exactly where it stopped: `sent`
rows are never sent again, `unknown` ones are looked up first, as after any crash.
The SQLite journal's lock is held meanwhile (no run may dial it during the copy), and
the copy is one transaction: a failure leaves the database without the campaign.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dialer.errors import JournalError
from dialer.store.lock import CampaignLock
from dialer.store.postgres import PgJournal
from dialer.store.sqlite import Journal

_LEADS = (
    "id, position, fingerprint, raw, phone, name, email, timezones, variables, status, error,"
    " call_id, from_number, attempts, intent_at, updated_at, unanswered, state, redial_at"
)

_CALLS = (
    "call_id, lead_id, ordinal, from_number, placed_at, status, final, timed_out, ended_at,"
    " duration, end_reason, recording_url, collected"
)


_DIALS = "phone, at, lead_id, attempt"


def _copy(target: PgJournal, table: str, columns: str, records: Iterable[Sequence[Any]]) -> None:
    """Every record into `table` of the target, by COPY (inside the caller's transaction)."""
    with target.conn.cursor().copy(f"COPY {table} ({columns}) FROM STDIN".encode()) as copy:
        for record in records:
            copy.write_row(record)


@dataclass(frozen=True)
class Moved:
    rows: int
    counts: dict[str, int]
    target: str  # where to, without the password


def copy_to_postgres(path: Path, campaign_name: str, url: str) -> Moved:
    """Copy the SQLite journal at `path` into the campaign's schema at `url` (which must be empty)."""
    if not path.exists():
        raise JournalError(f"{path}: no journal to migrate yet (the campaign has not run)")
    with CampaignLock(path):
        source = Journal(path, campaign_name)
        target = PgJournal(url, campaign_name)
        try:
            if target.is_imported:
                raise JournalError(
                    f"{target.label}: campaign {campaign_name!r} is already there; nothing copied"
                )
            with target.conn.transaction():
                with target.conn.cursor().copy(f"COPY leads ({_LEADS}) FROM STDIN".encode()) as copy:
                    for record in source.conn.execute(f"SELECT {_LEADS} FROM leads ORDER BY id"):
                        copy.write_row(record)
                target.conn.execute(
                    "SELECT setval(pg_get_serial_sequence('leads', 'id'), coalesce(max(id), 0) + 1, false)"
                    " FROM leads"
                )
                for number, day, calls in source.conn.execute("SELECT number, day, calls FROM number_usage"):
                    target.conn.execute(
                        "INSERT INTO number_usage (number, day, calls) VALUES (%s, %s, %s)",
                        (number, day, calls),
                    )
                for phone, lead_id in source.conn.execute("SELECT phone, lead_id FROM called"):
                    target.conn.execute(
                        "INSERT INTO called (phone, lead_id) VALUES (%s, %s)", (phone, lead_id)
                    )
                _copy(
                    target,
                    "calls",
                    _CALLS,
                    source.conn.execute(f"SELECT {_CALLS} FROM calls ORDER BY lead_id, ordinal"),
                )
                _copy(target, "dials", _DIALS, source.conn.execute(f"SELECT {_DIALS} FROM dials ORDER BY at"))
                for key, value in source.conn.execute("SELECT key, value FROM meta WHERE key != 'schema'"):
                    target.set_meta(str(key), str(value))
            return Moved(rows=sum(target.counts().values()), counts=target.counts(), target=target.label)
        finally:
            source.close()
            target.close()
