"""The journal: one SQLite file per campaign, the store of record.

Every lead is imported once; every state change is committed before the
dialer acts on it. The rule that keeps people from being rung twice:

    intent committed (status `unknown`, attempts + 1)  ->  request sent
    ->  outcome committed (`sent`, `failed`, `pending` for a retry, or still `unknown`)

so after a crash at any moment the journal either shows the row untouched,
or `unknown` with the time the request may have left (`intent_at`), which a
look-up at the API settles. Only this module writes SQL.

Writes from the dispatcher go through `JournalWriter`, which commits them in
groups (one fsync for every write queued while the previous commit ran), so
durability does not cap the dial rate.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dialer.cells import decode_row, encode_row
from dialer.errors import JournalError, LockedError
from dialer.mapping import ColumnMap, Lead
from dialer.report import Outcome

SCHEMA_VERSION = "1"

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
    updated_at  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS number_usage (
    number TEXT NOT NULL, day TEXT NOT NULL, calls INTEGER NOT NULL,
    PRIMARY KEY (number, day)
);
"""

INDEXES = """
CREATE INDEX IF NOT EXISTS leads_status ON leads (status, position);
CREATE INDEX IF NOT EXISTS leads_position ON leads (position);
CREATE INDEX IF NOT EXISTS leads_phone ON leads (phone);
CREATE INDEX IF NOT EXISTS leads_fingerprint ON leads (fingerprint);
"""
INDEX_NAMES = ("leads_status", "leads_position", "leads_phone", "leads_fingerprint")

# A commit slower than this (a slow or network disk) is made in a thread, off the loop.
SLOW_COMMIT = 0.002

# Statuses a run may dial (the others are settled or never dialed).
DIALABLE = ("pending", "deferred")


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class JournalRow:
    """A lead as the dispatcher needs it."""

    id: int
    position: int
    phone: str
    name: str
    email: str
    timezones: tuple[str, ...]
    variables: dict[str, str]
    status: str
    attempts: int
    intent_at: float | None
    from_number: str
    call_id: str
    error: str


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


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    return conn


class CampaignLock:
    """An exclusive flock on a file beside the journal, so two runs never dial the same campaign.

    The kernel drops a flock when its holder dies, so a lock left by a killed
    process never blocks the next run.
    """

    def __init__(self, journal_path: Path) -> None:
        self.path = journal_path.with_name(journal_path.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockedError(
                f"{self.path}: another run of this campaign is in progress; nothing sent"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
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


class Journal:
    """The campaign's SQLite journal (WAL, synchronous=FULL)."""

    def __init__(self, path: Path, campaign_name: str) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = _connect(path)
            self.conn.executescript(SCHEMA + INDEXES)
        except (sqlite3.Error, OSError) as exc:
            raise JournalError(f"{path}: cannot open the journal: {exc}") from None
        name = self.get_meta("campaign")
        if name is None:
            self.set_meta("campaign", campaign_name)
            self.set_meta("schema", SCHEMA_VERSION)
        elif name != campaign_name:
            raise JournalError(f"{path}: this journal belongs to campaign {name!r}, not {campaign_name!r}")

    def close(self) -> None:
        self.conn.close()

    # -- meta -----------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    @property
    def headers(self) -> list[str]:
        raw = self.get_meta("headers")
        return [] if raw is None else list(json.loads(raw))

    @property
    def is_imported(self) -> bool:
        return self.get_meta("signature") is not None

    def signature(self) -> dict[str, Any] | None:
        raw = self.get_meta("signature")
        return None if raw is None else dict(json.loads(raw))

    # -- import ---------------------------------------------------------------

    def import_leads(
        self,
        headers: Sequence[str],
        columns: ColumnMap,
        leads: Iterable[Lead],
        signature: dict[str, Any],
    ) -> ImportSummary:
        """Import the leads file: all of it the first time, else match rows to the journal by content.

        A row whose cells are unchanged keeps its history; a row whose number
        matches a row no longer in the file takes over that row's history; the
        rest are new. A new row whose number an earlier row already holds is a
        `duplicate`. One transaction: a crash mid-import leaves the journal as it was.
        """
        first = not self.is_imported
        now = utc_now_iso()
        conn = self.conn
        seen: dict[str, int] = {}

        def records() -> Iterator[tuple[Any, ...]]:
            for lead in leads:
                yield (
                    lead.row,
                    _fingerprint(lead.values, seen),
                    encode_row(lead.values),  # typed cells: dialer/cells.py
                    lead.phone,
                    lead.name,
                    lead.email,
                    " ".join(lead.timezones),
                    json.dumps(lead.variables, ensure_ascii=False),
                    lead.status,
                    lead.error,
                    now,
                )

        conn.execute("BEGIN IMMEDIATE")
        try:
            if first:
                # Building the indexes once after a million inserts is several times faster
                # than keeping them up to date row by row (phones and hashes come in any order).
                for index in INDEX_NAMES:
                    conn.execute(f"DROP INDEX IF EXISTS {index}")
                conn.executemany(
                    "INSERT INTO leads (position, fingerprint, raw, phone, name, email, timezones,"
                    " variables, status, error, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    records(),
                )
                for statement in INDEXES.strip().splitlines():
                    conn.execute(statement)
                added = conn.execute("SELECT count(*) FROM leads").fetchone()[0]
                summary = ImportSummary(added=added, matched=0, removed=0, first_import=True)
            else:
                summary = self._reimport(records())
            self.set_meta("headers", json.dumps(list(headers), ensure_ascii=False))
            self.set_meta("columns", json.dumps(columns.describe(), ensure_ascii=False))
            self.set_meta("signature", json.dumps(signature))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return summary

    def _reimport(self, records: Iterator[tuple[Any, ...]]) -> ImportSummary:
        conn = self.conn
        conn.execute(
            "CREATE TEMP TABLE incoming (position INTEGER, fingerprint TEXT, raw TEXT, phone TEXT,"
            " name TEXT, email TEXT, timezones TEXT, variables TEXT, status TEXT, error TEXT,"
            " updated_at TEXT, lead_id INTEGER)"
        )
        try:
            conn.executemany("INSERT INTO incoming VALUES (?,?,?,?,?,?,?,?,?,?,?,NULL)", records)
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
                " name = i.name, email = i.email, timezones = i.timezones, variables = i.variables"
                " FROM incoming i WHERE i.lead_id = leads.id"
            )
            # A row not yet acted on takes the verdict on its new cells (a time zone fixed, a
            # number now on a do-not-call list); sent, failed and unknown rows keep theirs.
            conn.execute(
                "UPDATE leads SET status = i.status, error = i.error, updated_at = i.updated_at"
                " FROM incoming i WHERE i.lead_id = leads.id AND leads.status IN"
                " ('pending', 'deferred', 'invalid', 'duplicate', 'suppressed')"
                " AND (leads.status != i.status OR leads.error != i.error)"
                " AND NOT (leads.status = 'deferred' AND i.status = 'pending')"
            )
            before = conn.execute("SELECT coalesce(max(id), 0) FROM leads").fetchone()[0]
            conn.execute(
                "INSERT INTO leads (position, fingerprint, raw, phone, name, email, timezones,"
                " variables, status, error, updated_at) SELECT position, fingerprint, raw, phone,"
                " name, email, timezones, variables, status, error, updated_at FROM incoming"
                " WHERE lead_id IS NULL ORDER BY position"
            )
            added = conn.execute("SELECT count(*) FROM leads WHERE id > ?", (before,)).fetchone()[0]
            # A new row whose number an older row holds must never ring that person again.
            conn.execute(
                "UPDATE leads SET status = 'duplicate', error = 'same number as row ' ||"
                " coalesce((SELECT o.position FROM leads o WHERE o.phone = leads.phone AND o.id <= ?"
                " AND o.position IS NOT NULL ORDER BY o.id LIMIT 1), 'of an earlier version of the"
                " file') WHERE id > ? AND status = 'pending' AND EXISTS (SELECT 1 FROM leads o"
                " WHERE o.phone = leads.phone AND o.id <= ? AND o.status NOT IN"
                " ('invalid', 'duplicate', 'suppressed'))",
                (before, before, before),
            )
            removed = conn.execute("SELECT count(*) FROM leads WHERE position IS NULL").fetchone()[0]
        finally:
            conn.execute("DROP TABLE temp.incoming")
        return ImportSummary(added=added, matched=matched, removed=removed, first_import=False)

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
        " intent_at, from_number, call_id, error FROM leads"
    )

    @staticmethod
    def _row(record: Sequence[Any]) -> JournalRow:
        return JournalRow(
            id=record[0],
            position=record[1],
            phone=record[2],
            name=record[3],
            email=record[4],
            timezones=tuple(record[5].split()),
            variables=json.loads(record[6]),
            status=record[7],
            attempts=record[8],
            intent_at=record[9],
            from_number=record[10],
            call_id=record[11],
            error=record[12],
        )

    def rows_with_status(self, statuses: Sequence[str], batch: int = 2000) -> Iterator[JournalRow]:
        """Rows in any of `statuses`, in file order, read in batches (keyset on position)."""
        marks = ",".join("?" * len(statuses))
        last = -1
        while True:
            records = self.conn.execute(
                f"{self._ROW_SQL} WHERE status IN ({marks}) AND position > ? ORDER BY position LIMIT ?",
                (*statuses, last, batch),
            ).fetchall()
            if not records:
                return
            for record in records:
                yield self._row(record)
            last = records[-1][1]

    def row(self, row_id: int) -> JournalRow:
        record = self.conn.execute(f"{self._ROW_SQL} WHERE id = ?", (row_id,)).fetchone()
        return self._row(record)

    def zone_sets(self, statuses: Sequence[str]) -> dict[tuple[str, ...], int]:
        """Distinct time-zone sets among rows in `statuses`, with their counts."""
        marks = ",".join("?" * len(statuses))
        rows = self.conn.execute(
            f"SELECT timezones, count(*) FROM leads WHERE status IN ({marks})"
            " AND position IS NOT NULL GROUP BY timezones",
            tuple(statuses),
        )
        return {tuple(str(zones).split()): int(n) for zones, n in rows}

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
            if status != "unknown":
                stamp = datetime.fromisoformat(updated_at.replace("Z", "+00:00")).timestamp()
                at = min(wall, stamp + 1.0)
            times.append(mono - (wall - at))
        return times

    def number_usage(self) -> dict[tuple[str, str], int]:
        rows = self.conn.execute("SELECT number, day, calls FROM number_usage")
        return {(str(number), str(day)): int(calls) for number, day, calls in rows}

    def report_rows(self) -> Iterator[tuple[list[str], Outcome]]:
        """Every row of the current leads file, in file order, with its outcome."""
        cursor = self.conn.execute(
            "SELECT raw, status, call_id, from_number, attempts, error, updated_at FROM leads"
            " WHERE position IS NOT NULL ORDER BY position"
        )
        for raw, status, call_id, from_number, attempts, error, updated_at in cursor:
            yield (
                decode_row(raw),
                Outcome(
                    status=status,
                    id=call_id,
                    from_number=from_number,
                    attempts=attempts,
                    error=error,
                    updated_at=updated_at,
                ),
            )

    # -- whole-table transitions at the start of a run ------------------------

    def defer_dialable(self, reason: str) -> int:
        """Mark every row still waiting to be dialed `deferred`, saying why."""
        with self.conn:
            cursor = self.conn.execute(
                "UPDATE leads SET status = 'deferred', error = ?, updated_at = ?"
                " WHERE status IN ('pending', 'deferred') AND position IS NOT NULL",
                (reason, utc_now_iso()),
            )
        return cursor.rowcount

    def suppress(self, sources: dict[str, str]) -> int:
        """Rows still to be dialed whose number is now on a do-not-call list: `suppressed`."""
        if not sources:
            return 0
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("CREATE TEMP TABLE dnc (phone TEXT PRIMARY KEY, source TEXT)")
            conn.executemany("INSERT INTO dnc VALUES (?, ?)", sources.items())
            cursor = conn.execute(
                "UPDATE leads SET status = 'suppressed', error = 'on the do-not-call list '"
                " || dnc.source, updated_at = ? FROM temp.dnc WHERE dnc.phone = leads.phone"
                " AND leads.status IN ('pending', 'deferred', 'failed')",
                (utc_now_iso(),),
            )
            conn.execute("DROP TABLE temp.dnc")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return cursor.rowcount

    def requeue(self, from_status: str, note: str = "") -> int:
        """Put every `from_status` row back to `pending` (for --retry-failed, --retry-unknown)."""
        with self.conn:
            cursor = self.conn.execute(
                "UPDATE leads SET status = 'pending', error = ?, updated_at = ?"
                " WHERE status = ? AND position IS NOT NULL",
                (note, utc_now_iso(), from_status),
            )
        return cursor.rowcount


# -- the dispatcher's writes, committed in groups ------------------------------


@dataclass(frozen=True, slots=True)
class Write:
    sql: str
    params: tuple[Any, ...]


def intent(row_id: int, from_number: str, usage_day: str | None, at: float | None = None) -> list[Write]:
    """The row is about to be sent (at epoch `at`): `unknown` until an answer says otherwise."""
    now = time.time() if at is None else at
    writes = [
        Write(
            "UPDATE leads SET status = 'unknown', attempts = attempts + 1, intent_at = ?,"
            " from_number = ?, error = '', updated_at = ? WHERE id = ?",
            (now, from_number, utc_now_iso(), row_id),
        )
    ]
    if from_number and usage_day:
        writes.append(
            Write(
                "INSERT INTO number_usage (number, day, calls) VALUES (?, ?, 1)"
                " ON CONFLICT (number, day) DO UPDATE SET calls = calls + 1",
                (from_number, usage_day),
            )
        )
    return writes


def outcome(row_id: int, status: str, *, call_id: str = "", error: str = "") -> list[Write]:
    """The answer (or the lack of one) for the row's last request."""
    return [
        Write(
            "UPDATE leads SET status = ?, call_id = CASE WHEN ? != '' THEN ? ELSE call_id END,"
            " error = ?, updated_at = ? WHERE id = ?",
            (status, call_id, call_id, error, utc_now_iso(), row_id),
        )
    ]


def restore(row: JournalRow, number: str, usage_day: str | None) -> list[Write]:
    """Undo an intent whose request was never sent (the key was refused, the run stopped)."""
    writes = [
        Write(
            "UPDATE leads SET status = ?, attempts = ?, intent_at = ?, from_number = ?, error = ?,"
            " updated_at = ? WHERE id = ?",
            (
                row.status,
                row.attempts,
                row.intent_at,
                row.from_number,
                row.error,
                utc_now_iso(),
                row.id,
            ),
        )
    ]
    if number and usage_day:
        writes.append(
            Write(
                "UPDATE number_usage SET calls = max(calls - 1, 0) WHERE number = ? AND day = ?",
                (number, usage_day),
            )
        )
    return writes


class JournalWriter:
    """Commits the dispatcher's writes in groups, off the event loop.

    `commit(writes)` returns once the writes are durable. The writes queued in
    one turn of the event loop go into one transaction: one fsync per group, not
    per row. On a fast disk the commit runs right in the loop (a fraction of a
    millisecond); on a slow one it moves to a thread so the loop keeps sending,
    and new writes queue up for the next group meanwhile.
    """

    def __init__(self, path: Path) -> None:
        self._conn = _connect(path)
        self._queue: list[tuple[list[Write], asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._commit_seconds = 0.0  # moving average: a slow disk's commits go to a thread
        self.commits = 0

    async def commit(self, writes: list[Write]) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((writes, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        # Each caller has its own future: cancelling the wait leaves the writes queued,
        # and they are committed all the same.
        await future

    def submit(self, writes: list[Write]) -> None:
        """Queue writes without waiting (for use while being cancelled); close() commits them."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((writes, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        while self._queue:
            # Let the writes of this loop turn gather: one fsync for all of them.
            await asyncio.sleep(0)
            batch, self._queue = self._queue, []
            writes = [w for writes, _ in batch for w in writes]
            try:
                started = time.perf_counter()
                if self._commit_seconds > SLOW_COMMIT:
                    await asyncio.to_thread(self._write, writes)
                else:
                    # A fast disk commits in a fraction of a millisecond: cheaper here than a
                    # hand-off to a thread, which costs both threads the GIL on every statement.
                    self._write(writes)
                took = time.perf_counter() - started
                self._commit_seconds = 0.8 * self._commit_seconds + 0.2 * took
            except BaseException as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                raise
            for _, future in batch:
                if not future.done():
                    future.set_result(None)

    def _write(self, writes: list[Write]) -> None:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for write in writes:
                conn.execute(write.sql, write.params)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self.commits += 1

    async def close(self) -> None:
        """Commit everything still queued, then close."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)
        if self._queue:
            self._flusher = asyncio.create_task(self._flush())
            await self._flusher
        self._conn.close()
