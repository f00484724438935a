"""The journal: the campaign's store of record, and the only code that writes SQL.

lock.py        CampaignLock: one run per campaign at a time
db.py          connect(), and transaction(): the one BEGIN/COMMIT helper
migrations.py  the schema (leads, number_usage, calls), its version, and the steps from each older version
sqlite.py      Journal: import, reads, whole-table transitions at the start of a run
writes.py      the dispatcher's row transitions as SQL (intent, outcome, restore)
writer.py      JournalWriter: those writes committed in groups, one fsync per group
calls.py       the calls table: a call placed, a call seen by a poll, live calls, figures
base.py        JournalStore, Writer: what the dialer may ask of a journal, whichever store
opening.py     which store a campaign names (a file, or a postgresql:// URL): open, lock, label
pgdb.py        PostgreSQL: the URL (password never shown), connections, schema per campaign
postgres.py    PgJournal, PgJournalWriter: the journal in PostgreSQL, the same rules
pg_importing.py  importing.py's rules in PostgreSQL's SQL
"""

from dialer.store import calls
from dialer.store.base import JournalStore, LiveSlots, RateGate, RateGrant, Writer
from dialer.store.calls import CallFigures, LiveCall
from dialer.store.db import journal_errors
from dialer.store.importing import ImportSummary, file_signature
from dialer.store.lock import CampaignLock
from dialer.store.migrations import SCHEMA_VERSION
from dialer.store.opening import journal_exists, journal_label, journal_lock, journal_url, open_journal
from dialer.store.sqlite import Journal
from dialer.store.writer import JournalWriter
from dialer.store.writes import NumberTaken, Write, intent, outcome, restore

__all__ = [
    "SCHEMA_VERSION",
    "CallFigures",
    "LiveCall",
    "LiveSlots",
    "calls",
    "CampaignLock",
    "ImportSummary",
    "Journal",
    "JournalStore",
    "NumberTaken",
    "JournalWriter",
    "RateGate",
    "RateGrant",
    "Write",
    "Writer",
    "file_signature",
    "intent",
    "journal_exists",
    "journal_label",
    "journal_lock",
    "journal_url",
    "open_journal",
    "journal_errors",
    "outcome",
    "restore",
]
