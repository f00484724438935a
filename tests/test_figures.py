"""The campaign page's figures through the store (JournalStore.page_figures), on both stores.

One campaign, written through the journal's own writes as the dispatcher and follow.py
would leave it (calls of several final statuses, redials, a call live, one given up on,
failed and invalid rows with reasons, two caller ids over a daily cap), is read on SQLite
and on PostgreSQL (a real server, tests/pg.py): each store's figures are those the campaign
says, and the two stores' figures are equal, field for field.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from dialer import store as j
from dialer.columns import ColumnMap
from dialer.model import CallOutcome, Lead, Status
from dialer.store import Journal, JournalStore
from dialer.store.figures import OUTCOME_GROUPS_SQL, PageFigures, reason_kind
from tests.stores import Store

COLUMNS = ColumnMap(phone="Phone", name=("Name",), timezone=None, email=None, variables=())
HEADERS = ["Name", "Phone"]
T0 = 1_796_000_400.0 + 40 * 60  # 40 minutes past a UTC hour (see `_in_time`)
HOUR = 3600.0
CAP = 2  # calls a caller id may make a day
A, B = "+14155550100", "+12125550100"

# (name, time zone, file row); leads 1-6 are called, 7 waits, 8-9 fail, 10-12 are invalid.
LEADS = [
    ("Ann", "America/New_York"),
    ("Bea", "Asia/Kolkata"),
    ("Cy", "Europe/London"),
    ("Dee", "America/Los_Angeles"),
    ("Eve", "America/New_York"),
    ("Fay", "America/Chicago"),
    ("Gus", "America/New_York"),
    ("Hal", "Europe/Berlin"),
    ("Ida", "Europe/Berlin"),
]
INVALID = [
    ("Jo", "invalid phone number '555-01': too short"),
    ("Kim", "invalid phone number '555-0199': too short"),
    ("Lou", 'unknown time zone "Mars/Base" (use an IANA name like America/New_York)'),
]
FAILED = {
    "Hal": 'refused by the API: 400 {"detail": "bad number 8"}',
    "Ida": 'refused by the API: 400 {"detail": "bad number 9"}',
}
# A call: (lead, call id, caller id, hours after T0, final status or None while live, given
# up, duration).
Call = tuple[str, str, str, float, str | None, bool, float | None]
# The calls, in the order placed. Durations in halves: sums exact on both engines.
CALLS: list[Call] = [
    ("Ann", "c-ann", A, 0, "completed", False, 60.5),
    ("Bea", "c-bea-1", B, 1, "no-answer", False, 0.0),
    ("Cy", "c-cy-1", A, 2, "busy", False, 0.0),
    ("Bea", "c-bea-2", B, 7, "completed", False, 30.0),
    ("Cy", "c-cy-2", A, 9, "busy", False, 0.0),
    ("Cy", "c-cy-3", A, 30, "no-answer", False, 0.0),
    ("Dee", "c-dee", B, 31, None, False, None),
    ("Eve", "c-eve", A, 50, "in-progress", True, None),
    ("Fay", "c-fay", B, 55, "hangup_on_voicemail", False, 12.5),
]


def _import(journal: JournalStore, people: Sequence[tuple[str, str]] = LEADS) -> dict[str, int]:
    """The leads file; each lead's journal id by name."""
    leads = [
        Lead(
            row=i + 2,
            values=(name, f"+1212555{i:04d}"),
            status=Status.PENDING,
            error="",
            phone=f"+1212555{i:04d}",
            name=name,
            timezones=(zone,),
        )
        for i, (name, zone) in enumerate(people)
    ]
    leads += [
        Lead(
            row=len(leads) + i + 2,
            values=(name, "555"),
            status=Status.INVALID,
            error=error,
            phone="",
            name=name,
            timezones=(),
        )
        for i, (name, error) in enumerate(INVALID)
    ]
    journal.import_leads(HEADERS, COLUMNS, leads, {"size": 1, "mtime_ns": 1, "sha256": "a"})
    rows = journal.rows_with_status(set(Status))
    return {row.name: row.id for row in rows}


def build(
    journal: JournalStore,
    people: Sequence[tuple[str, str]] = LEADS,
    calls: Sequence[Call] = CALLS,
) -> None:
    """The campaign, through the writes the dispatcher and follow.py commit."""
    ids = _import(journal, people)
    batches: list[list[j.Write]] = []
    for name, error in FAILED.items():
        if name not in ids:
            continue
        batches += [
            j.intent(ids[name], A, "2026-11-30", at=T0 - HOUR),
            j.outcome(ids[name], Status.FAILED, error=error),
        ]
    for name, call_id, caller, hours, status, given_up, duration in calls:
        at = T0 + hours * HOUR
        day = datetime.fromtimestamp(at, UTC).date().isoformat()
        batches += [
            j.intent(ids[name], caller, day, at=at),
            j.outcome(ids[name], Status.SENT, call_id=call_id) + j.calls.placed(ids[name], at),
        ]
        if status is None:
            batches.append(j.calls.seen(CallOutcome(call_id, "ringing"), final=False))
        else:
            ended = CallOutcome(call_id, status, duration)
            batches.append(j.calls.seen(ended, final=True, timed_out=given_up, at=at + 60))

    async def go() -> None:
        writer = journal.writer()
        for writes in batches:
            await writer.commit(writes)
        await writer.close()

    asyncio.run(go())


def test_the_figures_are_those_of_the_campaign(store: Store) -> None:
    journal = store.open()
    build(journal)
    figures = journal.page_figures(CAP)
    assert figures.counts == {"sent": 6, "pending": 1, "failed": 2, "invalid": 3}
    assert figures.counts == journal.counts()
    calls = figures.calls
    assert calls is not None

    ended = [c for c in CALLS if c[4] is not None and not c[5]]
    assert calls.figures == journal.call_figures(T0)  # what `dialer status` prints
    assert dict(calls.figures.by_status) == Counter(c[4] for c in ended)
    assert (calls.figures.live, calls.figures.timed_out) == (1, 1)
    assert calls.figures.by_attempt == {1: (1, 4), 2: (1, 2), 3: (0, 1)}
    assert calls.totals.calls == len(CALLS)
    assert calls.totals.leads_called == 6
    assert calls.totals.leads_reached == 2  # Ann, and Bea at her second call
    assert calls.totals.talk_seconds == 60.5 + 30.0 + 12.5
    assert {c.number: c.rates.calls for c in calls.callers} == Counter(c[2] for c in CALLS)
    assert [c.number for c in calls.callers] == [A, B]  # most calls first
    # Days a caller id made CAP requests or more (the failed rows' count too: they were sent).
    per_day = Counter((A, "2026-11-30") for _ in FAILED)
    per_day.update((c[2], datetime.fromtimestamp(T0 + c[3] * HOUR, UTC).date().isoformat()) for c in CALLS)
    rested = Counter(number for (number, _), n in per_day.items() if n >= CAP)
    assert {c.number: c.rested_days for c in calls.callers} == {A: rested[A], B: rested[B]}
    assert rested[A] and rested[B]
    assert {k: r.calls for k, r in calls.by_ordinal.items()} == {1: 6, 2: 2, 3: 1}
    assert calls.per_lead == {1: 4, 2: 1, 3: 1}

    # The lead's local hour and weekday, from its zone (whole buckets of an hour here).
    zones = dict(LEADS)
    local = [datetime.fromtimestamp(T0 + c[3] * HOUR, ZoneInfo(zones[c[0]])) for c in CALLS]
    assert {h: r.calls for h, r in calls.by_hour.items() if r.calls} == Counter(t.hour for t in local)
    assert {d: r.calls for d, r in calls.by_weekday.items() if r.calls} == Counter(t.weekday() for t in local)
    assert sum(r.calls for _, r in calls.over_time) == len(CALLS)
    assert calls.step == 3600.0 and calls.over_time[0][0] == datetime.fromtimestamp(T0 - 40 * 60, UTC)

    problems = {(p.status, p.reason): (p.rows, p.examples) for p in figures.problems}
    assert problems == {
        ("invalid", reason_kind(INVALID[0][1])): (2, [11, 12]),
        ("invalid", "unknown time zone … (use an IANA name like America/New_York)"): (1, [13]),
        ("failed", reason_kind(FAILED["Hal"])): (2, [9, 10]),
    }
    assert [p.rows for p in figures.problems] == [2, 2, 1]  # most rows first
    assert figures.first_request == datetime.fromtimestamp(T0 - HOUR, UTC)
    assert figures.last_request == datetime.fromtimestamp(T0 + 55 * HOUR, UTC)


def test_sqlite_and_postgresql_give_the_same_figures_for_the_same_campaign(
    tmp_path: Path, pg_url: str
) -> None:
    from dialer.store.postgres import PgJournal

    figures: list[PageFigures] = []
    for journal in (Journal(tmp_path / "c.sqlite", "same"), PgJournal(pg_url, "same")):
        try:
            build(journal)
            figures.append(journal.page_figures(CAP))
        finally:
            journal.close()
    on_sqlite, on_postgresql = figures
    assert (on_sqlite.source, on_postgresql.source) != ("", "")
    assert "dialer_test" not in on_postgresql.source and "127.0.0.1" not in on_postgresql.source
    on_postgresql.source = on_sqlite.source
    assert on_postgresql == on_sqlite
    assert on_sqlite.calls is not None and on_postgresql.calls is not None
    # Ties in the order `status` prints them (most calls first, then by name), on both.
    assert list(on_postgresql.calls.figures.by_status.most_common()) == list(
        on_sqlite.calls.figures.by_status.most_common()
    )


def test_the_local_hour_is_right_in_zones_half_and_a_quarter_of_an_hour_off(store: Store) -> None:
    """Kolkata is UTC+5:30, Kathmandu +5:45: of two calls 10 and 40 minutes past a UTC hour,
    each is in a local hour of its own. Calls over three days: buckets of an hour would put
    both in one; they are a quarter of an hour at most."""
    people = [("Ann", "Asia/Kolkata"), ("Bob", "Asia/Kathmandu"), ("Cy", "America/New_York")]
    calls: list[Call] = [
        (name, f"c-{name}-{day}-{minute}", A, 24 * day + (minute - 40) / 60, "completed", False, 1.0)
        for name, _ in people
        for day in (0, 3)
        for minute in (10, 20, 40, 50)  # after the UTC hour T0 is 40 minutes past
    ]
    journal = store.open()
    build(journal, people, calls)
    figures = journal.page_figures(None).calls
    assert figures is not None and figures.step > 3600  # bars of more than an hour
    zones = dict(people)
    local = [datetime.fromtimestamp(T0 + c[3] * HOUR, ZoneInfo(zones[c[0]])) for c in calls]
    assert {h: r.calls for h, r in figures.by_hour.items() if r.calls} == Counter(t.hour for t in local)


def test_a_journal_with_no_calls_has_no_call_figures(store: Store) -> None:
    journal = store.open()
    _import(journal)
    figures = journal.page_figures(None)
    assert (figures.calls, figures.first_request, figures.counts["pending"]) == (None, None, 9)


def test_sqlite_groups_the_calls_without_sorting_them(tmp_path: Path) -> None:
    """The calls_outcome index (schema 8): the page's per-caller, per-attempt groups are read
    in its order; without it SQLite sorts every call (about a second for 1.8M)."""
    Journal(tmp_path / "c.sqlite", "c").close()
    conn = sqlite3.connect(tmp_path / "c.sqlite")
    plan = " | ".join(row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {OUTCOME_GROUPS_SQL}"))
    conn.close()
    assert plan == "SCAN calls USING COVERING INDEX calls_outcome", plan


def test_a_schema_7_journal_gains_the_index_on_either_store(store: Store) -> None:
    store.open().close()
    store.execute("DROP INDEX calls_outcome")
    store.execute("UPDATE meta SET value = '7' WHERE key = 'schema'")
    journal = store.open()
    assert journal.get_meta("schema") == str(j.SCHEMA_VERSION) == "8"
    if store.kind == "sqlite":
        found = "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'calls_outcome'"
    else:
        found = (
            "SELECT count(*) FROM pg_indexes"
            " WHERE schemaname = current_schema() AND indexname = 'calls_outcome'"
        )
    assert store.scalar(found) == 1
