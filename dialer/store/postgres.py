"""The journal in PostgreSQL: one schema per campaign, the same rows and rules as the SQLite file.

`PgJournal` answers what `sqlite.Journal` answers (base.JournalStore); the shared
suite in tests/test_journal.py runs over both. The dispatcher's writes go through
`PgJournalWriter`, on an asyncio connection: one transaction per group, as on
SQLite, sent in one round trip (pipeline mode).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Collection, Iterable, Iterator, Sequence
from datetime import datetime
from enum import Enum
from typing import Any

import psycopg
import structlog

from dialer.columns import ColumnMap
from dialer.config import Campaign
from dialer.errors import JournalError
from dialer.model import DIALABLE, JournalRow, Lead, LeadRows, Outcome, Status
from dialer.store import calls, figures
from dialer.store.batching import GroupCommits
from dialer.store.calls import CallFigures, LiveCall
from dialer.store.claims import NOW, ClaimLost, Claims
from dialer.store.db import sql_list
from dialer.store.importing import ImportSummary, lead_records
from dialer.store.liveslots import SharedLiveSlots
from dialer.store.meta import MetaReads
from dialer.store.pg_importing import first_import, reimport
from dialer.store.pgdb import connect, connect_async, lost_as_journal_error, migrate, pg_sql
from dialer.store.pglive import pg_live_slots
from dialer.store.pgrate import Bucket, SharedRate
from dialer.store.pgurl import redact, schema_name, scrub
from dialer.store.sqlite import (
    DIALABLE_DIALS_SQL,
    DIALS_SQL,
    LAW_GROUPS_SQL,
    REDIALS_WAITING_SQL,
    REPORT_SQL,
    Journal,
    dials_from,
    law_groups_from,
    redials_from,
    report_row,
)
from dialer.store.writes import NumberTaken, Write, utc_now_iso

log = structlog.get_logger("dialer")

# Commits of one group a deadlock with another run's may abort, before the run stops on it.
DEADLOCK_TRIES = 5

LOST_WRITE = "another run took the row over (this run's lease ran out): its state is that run's"


def _params(params: Iterable[Any]) -> tuple[Any, ...]:
    """Enum members (statuses) as their text."""
    return tuple(p.value if isinstance(p, Enum) else p for p in params)


class PgJournal(MetaReads):
    """A campaign's journal in a PostgreSQL database (its own schema there)."""

    def __init__(self, url: str, campaign_name: str) -> None:
        self.url = url
        self.schema = schema_name(campaign_name)
        self._claims: Claims | None = None
        self.conn = connect(url, self.schema)
        try:
            migrate(self.conn, self.schema, self.label)
        except psycopg.Error as exc:
            self.conn.close()
            raise JournalError(f"{self.label}: cannot open the journal: {scrub(str(exc), url)}") from None
        except BaseException:
            self.conn.close()
            raise
        with self.conn.transaction():
            self.conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.schema,))
            name = self.get_meta("campaign")
            if name is None:
                self.set_meta("campaign", campaign_name)
        if name is not None and name != campaign_name:
            raise JournalError(
                f"{self.label}: this journal belongs to campaign {name!r}, not {campaign_name!r}"
            )

    @property
    def label(self) -> str:
        return f"{redact(self.url)} (schema {self.schema})"

    def close(self) -> None:
        self.conn.close()

    def writer(self) -> PgJournalWriter:
        """Intents guarded by this run's claims, once it has taken claims (`claims()` first)."""
        return PgJournalWriter(self.url, self.schema, self._claims)

    def claims(self, lease_seconds: float) -> Claims:
        if self._claims is None:
            self._claims = Claims(self.conn, lease_seconds, url=self.url)
        return self._claims

    def rows_by_id(self, ids: Sequence[int]) -> list[JournalRow]:
        """The rows, in file order."""
        headers = self.headers
        records = self._all(f"{self._ROW_SQL} WHERE id = ANY(%s) ORDER BY position", (list(ids),))
        return [Journal._row(record, headers) for record in records]

    def rate_gate(self, campaign: Campaign) -> SharedRate:
        """The campaign's rate for all its runs, and its account's for all the account's campaigns."""
        limits = campaign.limits
        buckets = [Bucket(f"campaign:{self.schema}", limits.rate_per_second, limits.min_rate_per_second)]
        account = campaign.account
        if account is not None and account.rate_per_second is not None:
            buckets.append(
                Bucket(
                    f"account:{account.name}",
                    account.rate_per_second,
                    min(limits.min_rate_per_second, account.rate_per_second),
                )
            )
        return SharedRate(self.url, self.schema, buckets)

    def live_slots(self, campaign: Campaign) -> SharedLiveSlots | None:
        """[limits] max_live_calls over all the campaign's runs, [account] over its campaigns."""
        return pg_live_slots(self.url, self.schema, campaign)

    def _all(self, statement: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        with lost_as_journal_error(self.url):
            return self.conn.execute(statement.encode(), _params(params)).fetchall()

    def _one(self, statement: str, params: Iterable[Any] = ()) -> tuple[Any, ...] | None:
        with lost_as_journal_error(self.url):
            return self.conn.execute(statement.encode(), _params(params)).fetchone()

    def _update(self, statement: str, params: Iterable[Any] = ()) -> int:
        with lost_as_journal_error(self.url), self.conn.transaction():
            cursor = self.conn.execute(statement.encode(), _params(params))
        return cursor.rowcount

    # -- meta -----------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self._one("SELECT value FROM meta WHERE key = %s", (key,))
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute(
            "INSERT INTO meta (key, value) VALUES (%s, %s)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    # -- import ---------------------------------------------------------------

    def import_leads(
        self,
        headers: Sequence[str],
        columns: ColumnMap,
        leads: Iterable[Lead | LeadRows],
        signature: dict[str, Any],
    ) -> ImportSummary:
        """As `sqlite.Journal.import_leads`: one transaction, matched by content on a re-import."""
        now = utc_now_iso()
        records = lead_records(leads, now)
        with self.conn.transaction():
            # One import at a time per campaign, whichever process or host started it.
            self.conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (self.schema,))
            summary = (
                reimport(self.conn, records, now) if self.is_imported else first_import(self.conn, records)
            )
            self.set_meta("headers", json.dumps(list(headers), ensure_ascii=False))
            self.set_meta("columns", json.dumps(columns.describe(), ensure_ascii=False))
            self.set_meta("signature", json.dumps(signature))
        return summary

    # -- reading --------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        rows = self._all("SELECT status, count(*) FROM leads WHERE position IS NOT NULL GROUP BY status")
        return {str(status): int(n) for status, n in rows}

    def count_removed(self) -> int:
        row = self._one("SELECT count(*) FROM leads WHERE position IS NULL")
        return 0 if row is None else int(row[0])

    _ROW_SQL = Journal._ROW_SQL

    def rows_with_status(self, statuses: Collection[Status], batch: int = 2000) -> Iterator[JournalRow]:
        """Rows in any of `statuses`, in file order, read in batches (keyset on position)."""
        wanted = [str(s) for s in sorted(statuses)]
        last = -1
        while True:
            records = self._all(
                f"{self._ROW_SQL} WHERE status = ANY(%s) AND position > %s ORDER BY position LIMIT %s",
                (wanted, last, batch),
            )
            if not records:
                return
            headers = self.headers
            for record in records:
                yield Journal._row(record, headers)
            last = records[-1][1]

    def row(self, row_id: int) -> JournalRow:
        record = self._one(f"{self._ROW_SQL} WHERE id = %s", (row_id,))
        if record is None:
            raise JournalError(f"{self.label}: no row {row_id}")
        return Journal._row(record, self.headers)

    def zone_sets(self, statuses: Collection[Status]) -> dict[tuple[str, ...], int]:
        rows = self._all(
            "SELECT timezones, count(*) FROM leads WHERE status = ANY(%s)"
            " AND position IS NOT NULL GROUP BY timezones",
            ([str(s) for s in statuses],),
        )
        return {tuple(str(zones).split()): int(n) for zones, n in rows}

    def recent_sends(self, seconds: float = 5.0) -> list[float]:
        """As `sqlite.Journal.recent_sends`: when earlier requests may have left, on this clock."""
        wall, mono = time.time(), time.monotonic()
        times = []
        for status, updated_at in self._all(
            "SELECT status, updated_at FROM leads WHERE intent_at > %s", (wall - seconds,)
        ):
            at = wall
            if status != Status.UNKNOWN:
                stamp = datetime.fromisoformat(str(updated_at).replace("Z", "+00:00")).timestamp()
                at = min(wall, stamp + 1.0)
            times.append(mono - (wall - at))
        return times

    def number_usage(self) -> dict[tuple[str, str], int]:
        rows = self._all("SELECT number, day, calls FROM number_usage")
        return {(str(number), str(day)): int(calls) for number, day, calls in rows}

    def law_groups(self, statuses: Collection[Status]) -> dict[tuple[tuple[str, ...], str, str], int]:
        """As `sqlite.Journal.law_groups`: rows by (time zones, US area code or '', state column)."""
        marks = ",".join("?" * len(statuses))
        statement = pg_sql(LAW_GROUPS_SQL.format(marks=marks))
        return law_groups_from(self._all(statement, sorted(statuses)))

    def dialable_dials_since(self, since: float) -> dict[tuple[str, tuple[str, ...], str], list[float]]:
        """As `sqlite.Journal.dialable_dials_since` (PostgreSQL plans the join itself)."""
        return dials_from(self._all(pg_sql(DIALABLE_DIALS_SQL.format(join="JOIN")), (since,)))

    def dials_since(self, phone: str, since: float) -> list[float]:
        """Every committed intent to `phone` after `since`, by any row of any run."""
        return [float(at) for (at,) in self._all(pg_sql(DIALS_SQL), (phone, since))]

    def live_calls(self) -> list[LiveCall]:
        """Every row's latest call still live, oldest first (those of every run of the campaign)."""
        return calls.live_from(self._all(calls.LIVE_SQL))

    def call_figures(self, now: float | None = None) -> CallFigures:
        return calls.figures_from(
            self._all(calls.FIGURES_SQL),
            self._all(calls.BY_ATTEMPT_SQL),
            self._one(pg_sql(calls.WAITING_SQL), (time.time() if now is None else now,)),
        )

    def placed_count(self, lead_id: int) -> int:
        found = self._one(pg_sql(calls.PLACED_COUNT_SQL), (lead_id,))
        return int(found[0]) if found else 0

    def earlier_call_ids(self, lead_id: int) -> set[str]:
        return {str(call_id) for (call_id,) in self._all(pg_sql(calls.EARLIER_CALLS_SQL), (lead_id,))}

    def recent_by_caller(self, since: float) -> dict[str, list[tuple[str, float | None]]]:
        return calls.recent_from(self._all(pg_sql(calls.RECENT_BY_CALLER_SQL), (since,)))

    def redials_waiting(self, now: float) -> list[tuple[str, tuple[str, ...], str, float]]:
        return redials_from(self._all(pg_sql(REDIALS_WAITING_SQL), (Status.DEFERRED, now)))

    def collected_names(self) -> list[str]:
        return [str(name) for (name,) in self._all(calls.PG_COLLECTED_SQL)]

    def page_figures(self, daily_cap: int | None) -> figures.PageFigures:
        """As `sqlite.Journal.page_figures`: one snapshot (REPEATABLE READ), every result read
        through a server-side cursor, so the few rows of each failed reason never pile up here."""
        with self.conn.transaction():
            self.conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            reader = figures.Reader(self._stream, figures.PG_BUCKET)
            database = self.conn.info.dbname  # the footer's: no host, user or password
            return figures.read_page(reader, self.counts(), daily_cap, f"{database}, schema {self.schema}")

    def _stream(self, statement: str, params: Sequence[Any]) -> Iterator[tuple[Any, ...]]:
        with self.conn.cursor(name="page_figures") as cursor:
            cursor.itersize = 5000
            cursor.execute(pg_sql(statement).encode(), _params(params))
            yield from cursor

    def report_rows(self) -> Iterator[tuple[list[str], Outcome]]:
        """Every row of the current leads file, in file order, with its outcome and latest call
        (a server-side cursor: any size)."""
        with self.conn.transaction(), self.conn.cursor(name="report_rows") as cursor:
            cursor.itersize = 5000
            cursor.execute(pg_sql(REPORT_SQL).encode())
            for record in cursor:
                yield report_row(record)

    # -- whole-table transitions at the start of a run ------------------------

    def defer_dialable(self, reason: str) -> int:
        return self._update(
            "UPDATE leads SET status = %s, error = %s, updated_at = %s"
            f" WHERE status IN ({sql_list(DIALABLE)}) AND position IS NOT NULL",
            (Status.DEFERRED, reason, utc_now_iso()),
        )

    def suppress(self, sources: dict[str, str]) -> int:
        if not sources:
            return 0
        with self.conn.transaction():
            self.conn.execute("CREATE TEMP TABLE dnc (phone TEXT PRIMARY KEY, source TEXT) ON COMMIT DROP")
            with self.conn.cursor().copy("COPY dnc (phone, source) FROM STDIN") as copy:
                for item in sources.items():
                    copy.write_row(item)
            cursor = self.conn.execute(
                (
                    "UPDATE leads SET status = %s, error = 'on the do-not-call list '"
                    " || dnc.source, updated_at = %s FROM dnc WHERE dnc.phone = leads.phone"
                    f" AND leads.status IN ({sql_list(DIALABLE | {Status.FAILED})})"
                ).encode(),
                (str(Status.SUPPRESSED), utc_now_iso()),
            )
        return cursor.rowcount

    def requeue(self, from_status: Status, note: str = "") -> int:
        """As on SQLite, but not the rows another live run holds (`--retry-unknown` beside a run
        whose request is in flight: that row is its to settle, not a new run's to dial)."""
        return self._update(
            "UPDATE leads SET status = %s, error = %s, updated_at = %s"
            " WHERE status = %s AND position IS NOT NULL"
            f" AND (claimed_by IS NULL OR claim_until < {NOW})",
            (Status.PENDING, note, utc_now_iso(), from_status),
        )


def _first_line(exc: BaseException) -> str:
    """The server's message without its DETAIL, HINT and CONTEXT lines: one line."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _fail_all(batch: list[tuple[list[Write], asyncio.Future[None]]], failure: BaseException) -> None:
    """Each caller of the batch gets `failure` (retrieved: a caller gone meanwhile must not warn)."""
    for _, future in batch:
        if not future.done():
            future.set_exception(failure)
            future.exception()


class PgJournalWriter(GroupCommits):
    """`JournalWriter` for PostgreSQL: the writes of one loop turn in one transaction.

    Async (psycopg's AsyncConnection), so the loop keeps sending while the server
    commits; the connection is opened at the first commit, inside the running loop.
    """

    def __init__(self, url: str, schema: str, claims: Claims | None = None) -> None:
        """`claims`: the run's, when it claims rows; its intents and outcomes apply only to
        rows it holds, and it is told of each intent committed (`Claims.intended`)."""
        self._url = url
        self._schema = schema
        self._claims = claims
        self._owner = None if claims is None else claims.owner
        self._lease = 0.0 if claims is None else claims.lease
        # The transaction under way: when it started, and the rows whose intents (outcomes)
        # it applied, for the claims once it is committed.
        self._started = 0.0
        self._intended: list[int] = []
        self._settled: list[int] = []
        super().__init__()
        self._conn: psycopg.AsyncConnection[tuple[Any, ...]] | None = None
        self.commits = 0

    async def _flush(self) -> None:
        while self._queue:
            await asyncio.sleep(0)  # the writes of this loop turn gather: one commit for all
            batch, self._queue = self._queue, []
            try:
                refused = await self._write(batch)
            except (psycopg.Error, JournalError) as exc:
                # The database went away (a restart, a lost network): each waiting caller gets
                # the one line, and the run stops on it. Whether this commit landed is not
                # known: an intent in it was not sent, and a row it left `unknown` is looked
                # up by the next run. A later commit (a restore while stopping) connects anew.
                failure = exc if isinstance(exc, JournalError) else self._lost(exc)
                await self._drop_connection()
                _fail_all(batch, failure)
                continue
            except BaseException as exc:
                _fail_all(batch, exc)
                raise
            for index, (_, future) in enumerate(batch):
                if future.done():
                    continue
                if index in refused:
                    future.set_exception(refused[index])
                    future.exception()  # retrieved: a caller gone meanwhile must not warn of it
                else:
                    future.set_result(None)

    def _lost(self, exc: psycopg.Error) -> JournalError:
        return JournalError(
            f"{redact(self._url)}: cannot write: {scrub(_first_line(exc), self._url)}; the dialer stopped"
            " (rows it had in flight are looked up by the next run)"
        )

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                await conn.close()

    async def _write(self, batch: list[tuple[list[Write], asyncio.Future[None]]]) -> dict[int, Exception]:
        """One transaction for the batch; per caller refused, the exception its commit raises."""
        if self._conn is None:
            self._conn = await connect_async(self._url, self._schema)
        for tries in range(1, DEADLOCK_TRIES + 1):
            refused: dict[int, Exception] = {}
            self._started = time.monotonic()
            self._intended, self._settled = [], []
            try:
                async with self._conn.transaction():
                    for index, (writes, _) in enumerate(batch):
                        failure = await self._apply(self._conn, writes)
                        if failure is not None:
                            refused[index] = failure
                break
            except psycopg.errors.DeadlockDetected:
                # Another run's group updates the same rows (a caller id's day count, a
                # number two rows share) in the other order: the server aborted this one
                # whole, so it is committed again, as it was, once the other went through.
                if tries == DEADLOCK_TRIES:
                    raise
        self.commits += 1
        if self._claims is not None:
            for row_id in self._settled:
                self._claims.settled(row_id)
            for row_id in self._intended:
                self._claims.intended(row_id, self._started)
        return refused

    async def _apply(
        self, conn: psycopg.AsyncConnection[tuple[Any, ...]], writes: list[Write]
    ) -> Exception | None:
        """One caller's writes, as writer._apply, but several runs may write the campaign.

        When the run claims rows, an intent (the guard) applies only to a row this run
        still holds and that is still due (another run's start may have suppressed it), and
        renews the row's lease: the request leaves with a whole lease ahead. If it does not
        apply, ClaimLost; NumberTaken if the number is another row's (its `refused` writes
        run then). A `held` write (an outcome, a restore) applies only while this run holds
        the row: else it and its row's writes after it are skipped, and logged.
        """
        skipping = False
        for write in writes:
            if write.held:
                skipping = False
            elif skipping:
                continue
            shared = (write.guard or write.held) and self._owner is not None
            cursor = await conn.execute(*self._statement(write, shared))
            row_id = int(write.params[-1]) if write.guard or write.held else 0
            if cursor.rowcount != 0:
                if write.guard and shared:
                    await conn.execute(
                        f"UPDATE leads SET claim_until = {NOW} + %s WHERE id = %s", (self._lease, row_id)
                    )
                    self._intended.append(row_id)
                elif write.held and shared:
                    self._settled.append(row_id)
            elif write.held and shared:
                skipping = True
                log.warning("lead.claim_lost", row_id=row_id, reason=LOST_WRITE)
            elif write.guard:
                return await self._refused(conn, write, row_id, shared)
        return None

    def _statement(self, write: Write, shared: bool) -> tuple[bytes, tuple[Any, ...]]:
        """The write in psycopg's style; `shared`: only on a row this run holds (an intent:
        and still due)."""
        statement, params = pg_sql(write.sql), _params(write.params)
        if shared:
            statement, params = statement + " AND claimed_by = %s", (*params, self._owner)
            if write.guard:
                statement += f" AND status IN ({sql_list(DIALABLE)})"
        return statement.encode(), params

    async def _refused(
        self, conn: psycopg.AsyncConnection[tuple[Any, ...]], write: Write, row_id: int, shared: bool
    ) -> Exception:
        """An intent that did not apply: ClaimLost when the row is not this run's (or no longer
        due), else NumberTaken, its `refused` writes run."""
        if shared:
            found = await (
                await conn.execute("SELECT claimed_by, status FROM leads WHERE id = %s", (row_id,))
            ).fetchone()
            if found is None or found[0] != self._owner or found[1] not in DIALABLE:
                return ClaimLost()
        for fallback in write.refused:
            await conn.execute(pg_sql(fallback.sql).encode(), _params(fallback.params))
        return NumberTaken(row_id)

    async def close(self) -> None:
        """Commit everything still queued, then close."""
        await self._drain()
        if self._conn is not None:
            await self._conn.close()
