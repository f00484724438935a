"""Importing a leads file into the journal: the first time whole, later matched by content.

Called by `Journal.import_leads` inside its transaction.
"""

from __future__ import annotations

import gc
import hashlib
import itertools
import queue
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from dialer.cells import encode_row
from dialer.model import DIALABLE, NEVER_DIALED, Lead, LeadRows, Status
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


class _Fingerprints:
    """Content hashes of rows; identical rows get #2, #3... so each keeps its own history.

    The hash is blake2b of the cells joined by \\x1f (12 bytes, in hex): an older journal
    is matched by it, so it never changes. The hashes seen so far are kept as two numpy
    arrays, their first 8 bytes as integers (sorted) and their last 4 beside them: 12 MB
    for a million rows, where a dict of their texts took ~120 MB, and looked up as
    integers, several times faster than as 12-byte strings. Only hashes seen more than
    once are counted in a dict.
    """

    def __init__(self) -> None:
        import numpy as np  # here: `status` and `report` open a journal without loading it

        self.np = np
        self.high = np.empty(0, dtype=np.uint64)  # sorted; equal values may repeat (rarely)
        self.low = np.empty(0, dtype=np.uint32)  # the same hash's last 4 bytes
        self.repeats: dict[bytes, int] = {}  # a hash seen more than once -> times seen

    def of(self, rows: Sequence[Sequence[str]]) -> list[str]:
        """The fingerprints of `rows`, in order, each remembered for the rows after."""
        digests = [hashlib.blake2b("\x1f".join(cells).encode(), digest_size=12).digest() for cells in rows]
        if not digests:
            return []
        np = self.np
        both = np.frombuffer(b"".join(digests), dtype=np.dtype(_HALVES))
        high, low = both["high"], both["low"]
        order = np.lexsort((low, high))  # the chunk sorted: lookups in order are cache-friendly
        high, low = high[order], low[order]
        first = np.ones(len(order), dtype=bool)  # the first of equal hashes in the chunk
        first[1:] = (high[1:] != high[:-1]) | (low[1:] != low[:-1])
        known = self._known(high, low)
        new = first & ~known
        at = np.searchsorted(self.high, high[new])
        self.high = np.insert(self.high, at, high[new])
        self.low = np.insert(self.low, at, low[new])
        if first.all() and not known.any():  # every row new: the common case
            return [digest.hex() for digest in digests]
        was_known = np.empty(len(order), dtype=bool)
        was_known[order] = known
        return self._counted(digests, was_known.tolist())

    def _known(self, high: Any, low: Any) -> Any:
        """A mask of the hashes (`high` sorted, `low` beside it) already seen."""
        np = self.np
        start = np.searchsorted(self.high, high, side="left")
        stop = np.searchsorted(self.high, high, side="right")
        single = stop - start == 1
        known = np.zeros(len(high), dtype=bool)
        known[single] = self.low[start[single]] == low[single]
        # Two different hashes whose first 8 bytes are equal (about once in 10**7 files of
        # a million rows): their runs are looked through one by one.
        for i in np.flatnonzero(stop - start > 1).tolist():
            known[i] = bool((self.low[start[i] : stop[i]] == low[i]).any())
        return known

    def _counted(self, digests: list[bytes], known: list[bool]) -> list[str]:
        counts: dict[bytes, int] = {}
        prints: list[str] = []
        for digest, was_known in zip(digests, known, strict=True):
            if digest in counts:
                count = counts[digest] + 1
            else:
                count = self.repeats.get(digest, 1) + 1 if was_known else 1
            counts[digest] = count
            prints.append(digest.hex() if count == 1 else f"{digest.hex()}#{count}")
        self.repeats.update((digest, count) for digest, count in counts.items() if count > 1)
        return prints


# A 12-byte hash as two integers: its first 8 bytes and its last 4 (any byte order will do,
# the same for every hash).
_HALVES = [("high", "<u8"), ("low", "<u4")]


Columns = list[list[Any]]  # a chunk's records column by column: RECORD_COLUMNS but updated_at

# The columns of an imported row, in the order of lead_records' tuples.
RECORD_COLUMNS = (
    "position",
    "fingerprint",
    "raw",
    "phone",
    "name",
    "email",
    "timezones",
    "variables",
    "status",
    "error",
    "updated_at",
    "state",
)
_NOW_AT = RECORD_COLUMNS.index("updated_at")


def lead_records(leads: Iterable[Lead | LeadRows], now: str) -> Iterator[tuple[Any, ...]]:
    """Each lead as the columns of an imported row, in the order of RECORD_COLUMNS.

    Leads, or chunks of them column by column (mapping.map_rows), as the import takes them."""
    for columns in lead_columns(leads):
        yield from zip(
            *columns[:_NOW_AT], itertools.repeat(now, len(columns[0])), *columns[_NOW_AT:], strict=True
        )


def lead_columns(leads: Iterable[Lead | LeadRows]) -> Iterator[Columns]:
    """lead_records a chunk at a time, column by column (updated_at left out: one value)."""
    seen = _Fingerprints()
    batch: list[Lead] = []  # Leads are hashed a batch at a time, as chunks are
    for item in leads:
        if isinstance(item, Lead):
            batch.append(item)
            if len(batch) >= _LEAD_BATCH:
                yield _lead_columns(batch, seen)
                batch = []
            continue
        if batch:
            yield _lead_columns(batch, seen)
            batch = []
        if len(item):
            yield _chunk_columns(item, seen)
    if batch:
        yield _lead_columns(batch, seen)


_LEAD_BATCH = 10_000


def _lead_columns(leads: list[Lead], seen: _Fingerprints) -> Columns:
    return [
        [lead.row for lead in leads],
        seen.of([lead.values for lead in leads]),
        [encode_row(lead.values) for lead in leads],  # typed cells: dialer/cells.py
        [lead.phone for lead in leads],
        [lead.name for lead in leads],
        [lead.email for lead in leads],
        [" ".join(lead.timezones) for lead in leads],
        [orjson.dumps(lead.variables).decode() for lead in leads],
        [lead.status for lead in leads],
        [lead.error for lead in leads],
        [lead.state for lead in leads],
    ]


def _chunk_columns(rows: LeadRows, seen: _Fingerprints) -> Columns:
    """_lead_columns of one chunk, column by column: the same values, without a Lead per row."""
    values = list(rows.values())
    fingerprints = seen.of(values)
    # A CSV's cells are all plain text (an XLSX's may be typed, see dialer/cells.py): its
    # rows are JSON arrays as they are, which orjson writes from the tuple directly.
    plain = all(set(map(type, column)) <= {str} for column in rows.cells)
    raws = [orjson.dumps(cells).decode() for cells in values] if plain else list(map(encode_row, values))
    del values
    zones = list(map(" ".join, rows.timezones))
    variables = [orjson.dumps(each).decode() for each in rows.variables()]
    return [
        rows.row,
        fingerprints,
        raws,
        rows.phone,
        rows.name,
        rows.email,
        zones,
        variables,
        rows.status,
        rows.error,
        rows.state,
    ]


# Rows not yet acted on: a re-import gives them the verdict on their new cells.
_NOT_ACTED_ON = sql_list(
    {Status.PENDING, Status.DEFERRED, Status.INVALID, Status.DUPLICATE, Status.SUPPRESSED}
)


def first_import(conn: sqlite3.Connection, chunks: Iterable[Columns], now: str) -> ImportSummary:
    """Every row new: inserted by a thread of its own while the next chunks are mapped,
    then the indexes built once."""
    # Building the indexes once after a million inserts is several times faster
    # than keeping them up to date row by row (phones and hashes come in any order).
    for index in INDEX_NAMES:
        conn.execute(f"DROP INDEX IF EXISTS {index}")
    with _collector_paused():
        _insert_overlapped(conn, chunks, now)
    for statement in INDEXES.strip().splitlines():
        conn.execute(statement)
    added = conn.execute("SELECT count(*) FROM leads").fetchone()[0]
    return ImportSummary(added=added, matched=0, removed=0, first_import=True)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic garbage collector's automatic passes off while the rows are made.

    Each chunk holds ~200,000 tracked objects (a tuple per row and per phone result) for
    as long as it is in flight, and the collector's passes walked all of them again and
    again (~2 s of CPU a million rows). The young generations are still collected once a
    chunk (`_Insert.put`), so garbage in cycles never outlives its chunk by much.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _insert_overlapped(conn: sqlite3.Connection, chunks: Iterable[Columns], now: str) -> None:
    """Each chunk inserted by a writer thread while this one maps the next (at most
    _QUEUED chunks wait between them: memory stays flat).

    One connection and one transaction, used by one thread at a time: this thread hands
    the connection over until the writer has finished (or failed), then takes it back.
    The writer is started after the first chunk is mapped, once the phone workers are
    forked (phones._can_fork: a fork beside a running thread is not safe)."""
    writer: _Insert | None = None
    try:
        for columns in chunks:
            if writer is None:
                writer = _Insert(conn, now)
            writer.put(columns)
            del columns  # the writer's now: not kept here while the next chunk is mapped
    except BaseException:
        if writer is not None:
            writer.stop()
        raise
    if writer is not None:
        writer.finish()


# Chunks mapped but not yet written: the writer's queue (each ~10 MB of records a 50,000 rows).
_QUEUED = 1


class _Insert:
    """The writer thread of _insert_overlapped."""

    def __init__(self, conn: sqlite3.Connection, now: str) -> None:
        self.conn = conn
        self.now = now
        self.queue: queue.Queue[Columns | None] = queue.Queue(maxsize=_QUEUED)
        self.failed: BaseException | None = None
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name="journal-import", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (columns := self.queue.get()) is not None:
            if self.failed is None and not self.stopping:
                try:
                    _insert(self.conn, columns, self.now)
                except BaseException as exc:  # taken back to the importing thread, raised there
                    self.failed = exc
            del columns  # a chunk written is not kept while the next is awaited

    def put(self, columns: Columns) -> None:
        """A chunk to write; raises at once what made the writer fail."""
        self._raise()
        gc.collect(1)  # see _collector_paused
        self.queue.put(columns)

    def finish(self) -> None:
        """Wait until every chunk is written; raise what made the writer fail."""
        self.queue.put(None)
        self.thread.join()
        self._raise()

    def stop(self) -> None:
        """The import failed here: the writer skips what is queued; wait until it has let
        go of the connection (the transaction is then rolled back)."""
        self.stopping = True
        self.queue.put(None)
        self.thread.join()

    def _raise(self) -> None:
        if self.failed is not None:
            raise self.failed


# Rows a statement inserts: SQLite takes at most 32,766 parameters in one (11 a row here,
# and updated_at once). One statement per block, not one per row: the GIL is released
# around each sqlite3_step, and a writer thread taking it back after every row (as
# executemany does) waited for it most of the time while the mapping ran.
_BLOCK_ROWS = 2_000


def _insert_sql(rows: int) -> str:
    """INSERT of `rows` rows whose parameters come column by column (?1 is updated_at)."""
    width = len(RECORD_COLUMNS) - 1
    values = []
    for row in range(rows):
        marks = [f"?{2 + column * rows + row}" for column in range(width)]
        marks.insert(_NOW_AT, "?1")
        values.append(f"({','.join(marks)})")
    return f"INSERT INTO leads ({', '.join(RECORD_COLUMNS)}) VALUES {','.join(values)}"


_INSERT_BLOCK = _insert_sql(_BLOCK_ROWS)


def _insert(conn: sqlite3.Connection, columns: Columns, now: str) -> None:
    """One chunk's rows into `leads`, a block of rows a statement."""
    count = len(columns[0])
    for start in range(0, count, _BLOCK_ROWS):
        stop = min(start + _BLOCK_ROWS, count)
        parameters = [now]
        for column in columns:
            parameters += column[start:stop]
        sql = _INSERT_BLOCK if stop - start == _BLOCK_ROWS else _insert_sql(stop - start)
        conn.execute(sql, parameters)


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
