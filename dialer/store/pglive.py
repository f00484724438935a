"""Live-call slots in the PostgreSQL database: liveslots.py's rules, on the database's clock.

The tables are in the `dialer_shared` schema beside the send window's (pgrate.py),
created here on first use: `live_limits`, one row per limit, locked FOR UPDATE by every
take (the account's one serialisation point, as its bucket row is for the rate), and
`live_slots`. A slot names its campaign's schema: the journal that decides a dead run's
slot is read in the same transaction (`<schema>.leads`, `<schema>.calls`). One connection
of its own per run.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from dialer.config import Campaign
from dialer.store.liveslots import LeadState, LiveLimit, SharedLiveSlots
from dialer.store.pgdb import pg_sql

if TYPE_CHECKING:
    import psycopg  # psycopg loads libpq: only PostgreSQL campaigns pay for it

NOW = "extract(epoch from clock_timestamp())::float8"

TABLES = """
CREATE TABLE IF NOT EXISTS dialer_shared.live_limits (
    key      TEXT PRIMARY KEY,           -- 'campaign:<schema>' or 'account:<name>'
    max_live INTEGER NOT NULL,           -- as configured
    ceiling  INTEGER NOT NULL,           -- now (lowered by a concurrency 429)
    probe_at DOUBLE PRECISION            -- when it next rises by one (NULL: not lowered)
);
CREATE TABLE IF NOT EXISTS dialer_shared.live_slots (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    campaign_key TEXT NOT NULL,          -- 'campaign:<schema>'
    account_key  TEXT,                   -- 'account:<name>', or NULL
    journal      TEXT NOT NULL,          -- the campaign's schema
    lead_id      BIGINT NOT NULL,
    call_id      TEXT,                   -- once the POST was accepted
    holder       TEXT NOT NULL,          -- the run
    taken_at     DOUBLE PRECISION NOT NULL,
    lease_until  DOUBLE PRECISION NOT NULL, -- the database's clock
    give_up_at   DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS live_slots_campaign ON dialer_shared.live_slots (campaign_key);
CREATE INDEX IF NOT EXISTS live_slots_account ON dialer_shared.live_slots (account_key);
CREATE INDEX IF NOT EXISTS live_slots_lead ON dialer_shared.live_slots (journal, lead_id);
CREATE INDEX IF NOT EXISTS live_slots_call ON dialer_shared.live_slots (call_id)
"""


class PgBackend:
    prefix = "dialer_shared."
    for_update = " FOR UPDATE"
    least = "least"

    def __init__(self, url: str, schema: str) -> None:
        self._url = url
        self._schema = schema
        self._conn: psycopg.AsyncConnection[tuple[Any, ...]] | None = None
        self._lock = asyncio.Lock()  # one transaction at a time on the connection

    async def _connection(self) -> psycopg.AsyncConnection[tuple[Any, ...]]:
        if self._conn is None:
            from dialer.store.pgdb import connect_async

            self._conn = conn = await connect_async(self._url, self._schema)
            async with conn.transaction():
                # Two runs starting at once: the second finds the tables made (pgdb.migrate's lock).
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext('dialer:migrate'))")
                await conn.execute("CREATE SCHEMA IF NOT EXISTS dialer_shared")
                for statement in TABLES.split(";"):
                    await conn.execute(statement.encode())
        return self._conn

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        async with self._lock:
            conn = await self._connection()
            async with conn.transaction():
                yield

    async def now(self) -> float:
        rows = await self.rows(f"SELECT {NOW}")
        return float(rows[0][0])

    async def rows(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        assert self._conn is not None, "inside transaction()"
        cursor = await self._conn.execute(pg_sql(statement).encode(), tuple(params))
        return await cursor.fetchall() if cursor.description else []

    async def journal_states(
        self, journal: str, leads: list[int], calls: list[str]
    ) -> tuple[dict[int, LeadState], dict[str, int]]:
        from psycopg import sql

        assert self._conn is not None, "inside transaction()"
        exists = await self.rows("SELECT to_regclass(quote_ident(?) || '.calls')", (journal,))
        if exists[0][0] is None:
            return {}, {}  # the campaign's schema is gone: nothing of it can be live
        schema = sql.Identifier(journal)
        cursor = await self._conn.execute(
            sql.SQL(
                "SELECT l.id, l.status, l.call_id, c.final FROM {}.leads l"
                " LEFT JOIN {}.calls c ON c.call_id = l.call_id WHERE l.id = ANY(%s)"
            ).format(schema, schema),
            (leads,),
        )
        states = {int(r[0]): LeadState(str(r[1]), str(r[2]), r[3]) for r in await cursor.fetchall()}
        cursor = await self._conn.execute(
            sql.SQL("SELECT call_id, final FROM {}.calls WHERE call_id = ANY(%s)").format(schema), (calls,)
        )
        return states, {str(r[0]): int(r[1]) for r in await cursor.fetchall()}

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()


def pg_live_slots(url: str, schema: str, campaign: Campaign) -> SharedLiveSlots | None:
    """The campaign's shared live-call slots: [limits] over its runs, [account] over its
    campaigns (None: neither limit is set)."""
    limits = []
    if campaign.limits.max_live_calls is not None:
        limits.append(LiveLimit(f"campaign:{schema}", campaign.limits.max_live_calls))
    account = campaign.account
    account_key = None
    if account is not None and account.max_live_calls is not None:
        account_key = f"account:{account.name}"
        limits.append(LiveLimit(account_key, account.max_live_calls))
    if not limits:
        return None
    return SharedLiveSlots(
        PgBackend(url, schema),
        limits=limits,
        journal=schema,
        account_key=account_key,
        campaign_key=f"campaign:{schema}",
        lease=campaign.limits.claim_lease_seconds,
        give_up_after=campaign.outcomes.give_up_after,
    )
