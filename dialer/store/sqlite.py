"""The journal's store of record: one SQLite file per campaign (WAL, synchronous=FULL).

Every lead is imported once; every state change is committed before the dialer acts
on it (the rule is drawn in `writes.py`). Only `dialer.store` writes SQL.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from dialer.cells import decode_row
from dialer.columns import ColumnMap
from dialer.config import Campaign
from dialer.errors import JournalError
from dialer.model import DIALABLE, JournalRow, Lead, LeadRows, Outcome, Status
from dialer.store import calls, figures
from dialer.store.base import LiveSlots, RateGate
from dialer.store.calls import CallFigures, LiveCall
from dialer.store.db import connect, sql_list, transaction
from dialer.store.importing import ImportSummary, first_import, lead_columns, lead_records, reimport
from dialer.store.meta import MetaReads
from dialer.store.migrations import migrate
from dialer.store.writer import JournalWriter
from dialer.store.writes import utc_now_iso


def _advice(exc: BaseException) -> str:
    """What to do about a journal SQLite cannot read: not a database, or damaged."""
    if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
        return (
            "; nothing sent. Restore it from a backup, or move it away and run with"
            " --new-journal (rows already called may be called again)"
        )
    return ""


# Reads in SQL both stores run (postgres.py uses them too).
LAW_GROUPS_SQL = (
    "SELECT timezones, CASE WHEN phone LIKE '+1%' AND length(phone) = 12"
    " THEN substr(phone, 3, 3) ELSE '' END, state, count(*) FROM leads"
    " WHERE status IN ({marks}) AND position IS NOT NULL GROUP BY 1, 2, 3"
)
DIALABLE_DIALS_SQL = (
    "SELECT l.phone, l.timezones, l.state, d.at FROM dials d {join} leads l"
    f" ON l.phone = d.phone WHERE d.at > ? AND l.status IN ({sql_list(DIALABLE)})"
    " AND l.position IS NOT NULL"
)
DIALS_SQL = "SELECT at FROM dials WHERE phone = ? AND at > ?"
REPORT_SQL = (
    "SELECT l.raw, l.status, l.call_id, l.from_number, l.attempts, l.error, l.updated_at,"
    " c.status, c.end_reason, c.duration, c.recording_url, c.collected,"
    " (SELECT count(*) FROM calls n WHERE n.lead_id = l.id)"
    " FROM leads l LEFT JOIN calls c ON c.call_id = l.call_id AND l.call_id != ''"
    " WHERE l.position IS NOT NULL ORDER BY l.position"
)


def law_groups_from(rows: Iterable[Sequence[Any]]) -> dict[tuple[tuple[str, ...], str, str], int]:
    return {(tuple(str(zones).split()), str(code), str(state)): int(n) for zones, code, state, n in rows}


def dials_from(rows: Iterable[Sequence[Any]]) -> dict[tuple[str, tuple[str, ...], str], list[float]]:
    found: dict[tuple[str, tuple[str, ...], str], list[float]] = {}
    for phone, zones, state, at in rows:
        found.setdefault((str(phone), tuple(str(zones).split()), str(state)), []).append(float(at))
    return found


REDIALS_WAITING_SQL = (
    "SELECT phone, timezones, state, redial_at FROM leads WHERE status = ? AND redial_at > ?"
    " AND position IS NOT NULL ORDER BY redial_at"
)


def redials_from(rows: Iterable[Sequence[Any]]) -> list[tuple[str, tuple[str, ...], str, float]]:
    return [(str(p), tuple(str(z).split()), str(s), float(d)) for p, z, s, d in rows]


def report_row(record: Sequence[Any]) -> tuple[list[str], Outcome]:
    """A row of REPORT_SQL: the row's cells and its outcome with its latest call."""
    raw, status, call_id, from_number, attempts, error, updated_at = record[:7]
    call_status, end_reason, duration, recording_url, collected, placed = record[7:]
    return (
        decode_row(str(raw)),
        Outcome(
            status=str(status),
            id=str(call_id),
            from_number=str(from_number),
            attempts=int(attempts),
            error=str(error),
            updated_at=str(updated_at),
            call_status=call_status or "",
            end_reason=end_reason or "",
            duration=duration,
            calls=int(placed),
            recording_url=recording_url or "",
            collected=json.loads(collected) if collected else {},
        ),
    )


class Journal(MetaReads):
    """The campaign's SQLite journal (WAL, synchronous=FULL)."""

    def __init__(self, path: Path, campaign_name: str) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = connect(path)
        except (sqlite3.Error, OSError) as exc:
            raise JournalError(f"{path}: cannot open the journal: {exc}{_advice(exc)}") from None
        try:
            migrate(self.conn, path)
        except sqlite3.Error as exc:
            self.conn.close()
            raise JournalError(f"{path}: cannot open the journal: {exc}{_advice(exc)}") from None
        except BaseException:
            self.conn.close()
            raise
        name = self.get_meta("campaign")
        if name is None:
            self.set_meta("campaign", campaign_name)
        elif name != campaign_name:
            raise JournalError(f"{path}: this journal belongs to campaign {name!r}, not {campaign_name!r}")

    @property
    def label(self) -> str:
        return str(self.path)

    def close(self) -> None:
        self.conn.close()

    def writer(self) -> JournalWriter:
        return JournalWriter(self.path)

    def claims(self, lease_seconds: float) -> None:
        return None  # the flock keeps every other run out: no claims needed

    def rows_by_id(self, ids: Sequence[int]) -> list[JournalRow]:
        return [self.row(i) for i in ids]

    def rate_gate(self, campaign: Campaign) -> RateGate | None:
        if campaign.account is None:
            return None
        from dialer.store.filerate import FileRate

        return FileRate.for_account(campaign)

    def live_slots(self, campaign: Campaign) -> LiveSlots | None:
        """[account] max_live_calls, shared through the account's file (one run per SQLite
        campaign: its own [limits] max_live_calls stays the run's)."""
        from dialer.store.filelive import file_live_slots

        return file_live_slots(campaign, self.path)

    # -- meta -----------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # -- import ---------------------------------------------------------------

    def import_leads(
        self,
        headers: Sequence[str],
        columns: ColumnMap,
        leads: Iterable[Lead | LeadRows],
        signature: dict[str, Any],
    ) -> ImportSummary:
        """Import the leads file: all of it the first time, else match rows to the journal by content.

        A row whose cells are unchanged keeps its history; a row whose number
        matches a row no longer in the file takes over that row's history; the
        rest are new. A new row whose number an earlier row already holds is a
        `duplicate`. One transaction: a crash mid-import leaves the journal as it was.
        """
        now = utc_now_iso()
        with transaction(self.conn) as conn:
            if self.is_imported:
                summary = reimport(conn, lead_records(leads, now), now)
            else:
                summary = first_import(conn, lead_columns(leads), now)
            self.set_meta("headers", json.dumps(list(headers), ensure_ascii=False))
            self.set_meta("columns", json.dumps(columns.describe(), ensure_ascii=False))
            self.set_meta("signature", json.dumps(signature))
        return summary

    # -- reading --------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Rows per status, for the rows of the current leads file."""
        rows = self.conn.execute(
            "SELECT status, count(*) FROM leads WHERE position IS NOT NULL GROUP BY status"
        )
        return {str(status): int(n) for status, n in rows}

    def count_removed(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM leads WHERE position IS NULL").fetchone()[0])

    _ROW_SQL = (
        "SELECT id, position, phone, name, email, timezones, variables, status, attempts,"
        " intent_at, from_number, call_id, error, unanswered, raw, state, redial_at FROM leads"
    )

    @staticmethod
    def _row(record: Sequence[Any], headers: Sequence[str]) -> JournalRow:
        return JournalRow(
            id=record[0],
            position=record[1],
            phone=record[2],
            name=record[3],
            email=record[4],
            timezones=tuple(record[5].split()),
            variables=json.loads(record[6]),
            status=Status(record[7]),
            attempts=record[8],
            intent_at=record[9],
            from_number=record[10],
            call_id=record[11],
            error=record[12],
            unanswered=record[13],
            cells=dict(zip(headers, decode_row(record[14]), strict=False)),
            state=record[15],
            redial_at=record[16],
        )

    def rows_with_status(self, statuses: Collection[Status], batch: int = 2000) -> Iterator[JournalRow]:
        """Rows in any of `statuses`, in file order, read in batches (keyset on position)."""
        statuses = sorted(statuses)
        marks = ",".join("?" * len(statuses))
        last = -1
        while True:
            records = self.conn.execute(
                f"{self._ROW_SQL} WHERE status IN ({marks}) AND position > ? ORDER BY position LIMIT ?",
                (*statuses, last, batch),
            ).fetchall()
            if not records:
                return
            headers = self.headers
            for record in records:
                yield self._row(record, headers)
            last = records[-1][1]

    def row(self, row_id: int) -> JournalRow:
        record = self.conn.execute(f"{self._ROW_SQL} WHERE id = ?", (row_id,)).fetchone()
        return self._row(record, self.headers)

    def zone_sets(self, statuses: Collection[Status]) -> dict[tuple[str, ...], int]:
        """Distinct time-zone sets among rows in `statuses`, with their counts."""
        statuses = sorted(statuses)
        marks = ",".join("?" * len(statuses))
        rows = self.conn.execute(
            f"SELECT timezones, count(*) FROM leads WHERE status IN ({marks})"
            " AND position IS NOT NULL GROUP BY timezones",
            tuple(statuses),
        )
        return {tuple(str(zones).split()): int(n) for zones, n in rows}

    def law_groups(self, statuses: Collection[Status]) -> dict[tuple[tuple[str, ...], str, str], int]:
        """Rows in `statuses` grouped by what decides their hours: (time zones, US area code
        or '', state column), with their counts."""
        statuses = sorted(statuses)
        marks = ",".join("?" * len(statuses))
        return law_groups_from(self.conn.execute(LAW_GROUPS_SQL.format(marks=marks), tuple(statuses)))

    def dialable_dials_since(self, since: float) -> dict[tuple[str, tuple[str, ...], str], list[float]]:
        """(phone, time zones, state column) of each dialable row dialed after `since`, with
        those intents: the rows a per-24-hour cap may hold back (few, however large the file)."""
        # The last day's dials first (CROSS JOIN keeps that order in SQLite), each then
        # looked up among the leads: a million pending rows cost nothing here.
        return dials_from(self.conn.execute(DIALABLE_DIALS_SQL.format(join="CROSS JOIN"), (since,)))

    def redials_waiting(self, now: float) -> list[tuple[str, tuple[str, ...], str, float]]:
        """[redial]: rows whose next call is due after epoch `now`, as (phone, time zones,
        state, due), soonest first."""
        return redials_from(self.conn.execute(REDIALS_WAITING_SQL, (Status.DEFERRED, now)))

    def dials_since(self, phone: str, since: float) -> list[float]:
        """Epoch seconds of every committed intent to `phone` after `since`, by any row."""
        rows = self.conn.execute(DIALS_SQL, (phone, since))
        return [float(at) for (at,) in rows]

    def live_calls(self) -> list[LiveCall]:
        """Every row's latest call still live, oldest first (what follow.py polls)."""
        return calls.live_calls(self.conn)

    def call_figures(self, now: float | None = None) -> CallFigures:
        return calls.call_figures(self.conn, now)

    def placed_count(self, lead_id: int) -> int:
        return calls.placed_count(self.conn, lead_id)

    def earlier_call_ids(self, lead_id: int) -> set[str]:
        return calls.earlier_call_ids(self.conn, lead_id)

    def recent_by_caller(self, since: float) -> dict[str, list[tuple[str, float | None]]]:
        return calls.recent_by_caller(self.conn, since)

    def collected_names(self) -> list[str]:
        """Every collected variable any call returned, sorted: a report column each."""
        return calls.collected_names(self.conn)

    def recent_sends(self, seconds: float = 5.0) -> list[float]:
        """Monotonic times at which an earlier run may have sent its last requests.

        A row still `unknown` may have left right up to now; one with an outcome left
        before its update (kept to the second, so a second later at the latest).
        """
        wall, mono = time.time(), time.monotonic()
        rows = self.conn.execute(
            "SELECT status, updated_at FROM leads WHERE intent_at > ?", (wall - seconds,)
        )
        times = []
        for status, updated_at in rows:
            at = wall
            if status != Status.UNKNOWN:
                stamp = datetime.fromisoformat(updated_at.replace("Z", "+00:00")).timestamp()
                at = min(wall, stamp + 1.0)
            times.append(mono - (wall - at))
        return times

    def number_usage(self) -> dict[tuple[str, str], int]:
        rows = self.conn.execute("SELECT number, day, calls FROM number_usage")
        return {(str(number), str(day)): int(calls) for number, day, calls in rows}

    def page_figures(self, daily_cap: int | None) -> figures.PageFigures:
        # A deferred BEGIN: a read snapshot (WAL), no write lock, so a run goes on meanwhile.
        self.conn.execute("BEGIN")
        try:
            reader = figures.Reader(self.conn.execute, figures.SQLITE_BUCKET)
            return figures.read_page(reader, self.counts(), daily_cap, self.path.name)
        finally:
            self.conn.execute("COMMIT")

    def report_rows(self) -> Iterator[tuple[list[str], Outcome]]:
        """Every row of the current leads file, in file order, with its outcome and latest call."""
        for record in self.conn.execute(REPORT_SQL):
            yield report_row(record)

    # -- whole-table transitions at the start of a run ------------------------

    def defer_dialable(self, reason: str) -> int:
        """Mark every row still waiting to be dialed `deferred`, saying why."""
        with transaction(self.conn) as conn:
            cursor = conn.execute(
                "UPDATE leads SET status = ?, error = ?, updated_at = ?"
                f" WHERE status IN ({sql_list(DIALABLE)}) AND position IS NOT NULL",
                (Status.DEFERRED, reason, utc_now_iso()),
            )
        return cursor.rowcount

    def suppress(self, sources: dict[str, str]) -> int:
        """Rows still to be dialed whose number is now on a do-not-call list: `suppressed`."""
        if not sources:
            return 0
        with transaction(self.conn) as conn:
            conn.execute("CREATE TEMP TABLE dnc (phone TEXT PRIMARY KEY, source TEXT)")
            conn.executemany("INSERT INTO dnc VALUES (?, ?)", sources.items())
            cursor = conn.execute(
                "UPDATE leads SET status = ?, error = 'on the do-not-call list '"
                " || dnc.source, updated_at = ? FROM temp.dnc WHERE dnc.phone = leads.phone"
                f" AND leads.status IN ({sql_list(DIALABLE | {Status.FAILED})})",
                (Status.SUPPRESSED, utc_now_iso()),
            )
            conn.execute("DROP TABLE temp.dnc")
        return cursor.rowcount

    def requeue(self, from_status: Status, note: str = "") -> int:
        """Put every `from_status` row back to `pending` (for --retry-failed, --retry-unknown)."""
        with transaction(self.conn) as conn:
            cursor = conn.execute(
                "UPDATE leads SET status = ?, error = ?, updated_at = ?"
                " WHERE status = ? AND position IS NOT NULL",
                (Status.PENDING, note, utc_now_iso(), from_status),
            )
        return cursor.rowcount
