"""Which store a campaign's journal lives in: a SQLite file (the default) or a PostgreSQL URL."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

from dialer.config import Campaign
from dialer.store.base import JournalStore
from dialer.store.lock import CampaignLock
from dialer.store.pgurl import redact


def journal_url(campaign: Campaign) -> str | None:
    """The PostgreSQL URL of the campaign's journal, or None for a SQLite file."""
    return campaign.journal if isinstance(campaign.journal, str) else None


def journal_label(campaign: Campaign) -> str:
    """Where the journal is, for messages: its path, or its URL without the password."""
    url = journal_url(campaign)
    return str(campaign.journal_path) if url is None else redact(url)


def open_journal(campaign: Campaign) -> JournalStore:
    url = journal_url(campaign)
    if url is None:
        from dialer.store.sqlite import Journal

        return Journal(campaign.journal_path, campaign.name)
    # Imported here: psycopg loads libpq, which a SQLite campaign never needs.
    from dialer.store.postgres import PgJournal

    return PgJournal(url, campaign.name)


def journal_exists(campaign: Campaign) -> bool:
    """Whether the campaign has a journal yet (read-only commands say 'not started' otherwise)."""
    url = journal_url(campaign)
    if url is None:
        return campaign.journal_path.exists()
    from dialer.store.pgdb import connect
    from dialer.store.pgurl import schema_name

    conn = connect(url, schema_name(campaign.name))
    try:
        found = conn.execute(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = %s AND table_name = 'leads'",
            (schema_name(campaign.name),),
        ).fetchone()
    finally:
        conn.close()
    return found is not None


def journal_lock(campaign: Campaign) -> AbstractContextManager[object]:
    """One run at a time for a SQLite journal; none for PostgreSQL, whose runs share the rows by claims."""
    if journal_url(campaign) is None:
        return CampaignLock(campaign.journal_path)
    return nullcontext()
