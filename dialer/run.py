"""A campaign from end to end, as a library: `run_campaign`, `validate_campaign`,
`campaign_status`, `report_campaign`.

The CLI is a thin shell over these (and over `Progress` and `iso`, offered here so it
needs no other stage); tests call them directly. `validate_campaign` has a room of its
own, dialer/validate.py, and is offered here too.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import signal
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from dialer.bookkeeping import Clock, Progress, RunStats, utc_now
from dialer.caps import WINDOW, cap_for, due_after_cap, rested_callers
from dialer.config import Campaign
from dialer.errors import DialerError, LockedError, SetupError
from dialer.hours import CallingHours
from dialer.law import LawRules, rules_for, rules_for_area_code
from dialer.model import DIALABLE, REMAINING, Status
from dialer.store import (
    CallFigures,
    CampaignLock,
    ImportSummary,
    JournalStore,
    file_signature,
    journal_errors,
    journal_exists,
    journal_label,
    journal_lock,
    journal_url,
    open_journal,
)
from dialer.store.pgurl import URL_SCHEMES, redact
from dialer.store.pgurl import redact as redact_url
from dialer.transitions import iso
from dialer.validate import Validation, validate_campaign, with_leads

# The stages that pull in pandas, numpy, phonenumbers, httpx or xlsxwriter are imported
# where a function needs them: `status` and `report` need none of them (issue 10: a
# `status` that took 3-4 s to start).
if TYPE_CHECKING:
    import httpx

    from dialer.dispatch import Dispatcher
    from dialer.store.moving import Moved

__all__ = [
    "CallFigures",
    "CampaignStatus",
    "Collect",
    "Progress",
    "RunOptions",
    "RunResult",
    "Validation",
    "campaign_status",
    "iso",
    "journal_label",
    "migrate_campaign",
    "redact_url",
    "report_campaign",
    "run_campaign",
    "validate_campaign",
]

log = structlog.get_logger("dialer")


@dataclass
class RunOptions:
    api_key: str
    base_url: str | None = None
    leads: Path | None = None
    report: Path | None = None
    limit: int | None = None
    retry_failed: bool = False
    retry_unknown: bool = False
    clock: Clock = utc_now
    progress: Progress = field(default_factory=Progress)
    transport: httpx.AsyncBaseTransport | None = None
    # SIGINT/SIGTERM stop the run gracefully (the CLI turns this on; tests may too).
    handle_signals: bool = False
    # --no-wait: leave live calls to a later run, `status` or `report` (the run exits 75).
    no_wait: bool = False
    # Start a new journal even though the report shows calls placed (--new-journal).
    new_journal: bool = False


@dataclass
class RunResult:
    stats: RunStats
    counts: dict[str, int]
    imported: ImportSummary | None
    report: Path
    next_due: datetime | None
    calls: CallFigures | None = None  # call mode: the campaign's calls, live ones included

    @property
    def exit_code(self) -> int:
        if self.stats.stopped_by == "SIGINT":
            return 130
        if self.stats.stopped_by == "SIGTERM":
            return 143
        live = self.calls.live if self.calls is not None else 0
        return 75 if live or any(self.counts.get(s, 0) for s in REMAINING) else 0


# The campaign settings that decide a row's verdict at import (its number read, its zones,
# its column mapping, its do-not-call lists, the hours that can never open for it): when
# one changes, rows not yet dialed are judged again, as when the file changes.
def verdict_settings(campaign: Campaign) -> str:
    """A digest of the settings that decide verdicts, do-not-call lists' content included."""
    settings = {
        "default_region": campaign.default_region,
        "encoding": campaign.encoding,
        "sheet": campaign.sheet,
        "columns": campaign.columns.model_dump(),
        "hours": campaign.hours.model_dump(),
        "suppress": [
            [str(path), file_signature(path)["sha256"] if path.is_file() else None]
            for path in campaign.suppress
        ],
    }
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def import_signature(campaign: Campaign, path: Path) -> dict[str, Any]:
    """What the journal's rows were judged from: the file's content hash and the settings.

    Decided by content, never by size and mtime alone: `cp -p`, `rsync -t` or `tar x`
    keep both while the rows change. Hashing costs about a second per 100 MB (README).
    """
    return file_signature(path) | {"settings": verdict_settings(campaign)}


def import_if_needed(campaign: Campaign, journal: JournalStore, path: Path) -> ImportSummary | None:
    """Import the leads file the first time, and again (matching by content) when its
    content or a setting that decided verdicts changed."""
    from dialer.columns import resolve_columns
    from dialer.load import open_leads
    from dialer.mapping import map_rows

    previous = journal.signature()
    if previous is not None and not path.exists():
        return None  # the journal alone is enough to continue, even if the file is gone
    if not path.is_file():
        open_leads(path, encoding=campaign.encoding, sheet=campaign.sheet)  # its one line (a FIFO...)
    signature = import_signature(campaign, path)
    if previous is not None and all(previous.get(key) == signature[key] for key in ("sha256", "settings")):
        return None
    leads = open_leads(path, encoding=campaign.encoding, sheet=campaign.sheet)
    columns = resolve_columns(campaign, leads.headers)
    # The journal keeps the headers as written: the report gives them back so.
    summary = journal.import_leads(
        leads.written_headers or leads.headers, columns, map_rows(campaign, leads, columns), signature
    )
    if summary.first_import:
        log.info("leads.imported", file=str(path), rows=summary.added)
    else:
        log.info(
            "leads.changed",
            file=str(path),
            added=summary.added,
            matched=summary.matched,
            no_longer_in_file=summary.removed,
            settings_changed=previous is not None and previous.get("settings") != signature["settings"],
        )
    return summary


def calls_in_report(path: Path) -> int:
    """Rows of an existing report that show a call placed (or maybe placed): `sent` or
    `unknown`, or a dialer_id. -1: there is a report, but it cannot be read."""
    from dialer.load import open_leads

    if not path.is_file():
        return 0
    try:
        report = open_leads(path)
        if "dialer_status" not in report.headers:
            return 0
        found = 0
        for frame in report.chunks():
            # Cells as text whatever their type (an XLSX report's cells may be typed).
            placed = frame["dialer_status"].map(lambda v: str(v).strip() in ("sent", "unknown"))
            if "dialer_id" in frame.columns:
                placed |= frame["dialer_id"].map(lambda v: str(v).strip() != "")
            found += int(placed.sum())
        return found
    except DialerError:
        return -1


def refuse_a_new_journal_after_calls(campaign: Campaign, report: Path) -> None:
    """A new journal for a campaign whose report shows calls would dial everyone again:
    the journal was deleted, emptied, or lost its -wal after a crash. Refused (exit 2)."""
    placed = calls_in_report(report)
    if placed == 0:
        return
    seen = "cannot be read to tell" if placed < 0 else f"shows {placed} rows called"
    raise SetupError(
        f"{journal_label(campaign)}: the journal is new (deleted, emptied, or its -wal lost),"
        f" but the report {report} {seen}: a new journal would call them again; nothing"
        " sent. Restore the journal, or run with --new-journal to start afresh anyway"
    )


def _law_groups(journal: JournalStore) -> dict[tuple[tuple[str, ...], LawRules], int]:
    """Dialable rows by (time zones, law): a few hundred groups, however many rows."""
    groups: Counter[tuple[tuple[str, ...], LawRules]] = Counter()
    for (zones, area_code, state), n in journal.law_groups(DIALABLE).items():
        if zones:
            groups[zones, rules_for_area_code(area_code, state)] += n
    return groups


@dataclass
class _Due:
    """What is due now and when the rest is: by the hours (the campaign's and the law's) and
    by the per-24-hour cap of each number."""

    now: int
    next: datetime | None


def _due(journal: JournalStore, campaign: Campaign, now: datetime) -> _Due:
    hours = CallingHours(campaign.hours)
    due_now = 0
    moments: list[datetime | None] = []
    for (zones, law), n in _law_groups(journal).items():
        if hours.is_open(zones, now, law):
            due_now += n
        else:
            moments.append(hours.next_open(zones, now, law))
    # Rows whose number is at its cap wait for it, inside their hours.
    for (phone, zones, state), dialed in journal.dialable_dials_since((now - WINDOW).timestamp()).items():
        law = rules_for(phone, state)
        cap = cap_for(campaign.limits.calls_per_24h, law)
        until = due_after_cap(dialed, cap[0], now) if cap and zones else None
        if until is not None:
            due_now -= hours.is_open(zones, now, law)
            moments.append(hours.next_open(zones, until, law))
    # Rows waiting for a redial ([redial]): due at their time, inside their hours.
    redials = journal.redials_waiting(now.timestamp())
    for phone, zones, state, redial_at in redials:
        at = datetime.fromtimestamp(redial_at, UTC)
        if not zones:
            moments.append(at)
            continue
        law = rules_for(phone, state)
        due_now -= hours.is_open(zones, now, law)
        moments.append(hours.next_open(zones, at, law))
    found = [m for m in moments if m is not None]
    return _Due(now=max(due_now, 0), next=min(found) if found else None)


def next_due(journal: JournalStore, campaign: Campaign, now: datetime) -> datetime | None:
    """When the first row waiting for its calling hours (its campaign's and its law's) or for
    its number's per-24-hour cap becomes due."""
    return _due(journal, campaign, now).next


def write_campaign_report(journal: JournalStore, path: Path) -> int:
    from dialer.report import write_report

    names = journal.collected_names()
    return write_report(path, journal.headers, journal.report_rows(), names)


def migrate_campaign(campaign: Campaign, url: str) -> Moved:
    """Copy the campaign's SQLite journal into PostgreSQL at `url` (`dialer migrate`)."""
    # Imported here: psycopg (libpq) is for PostgreSQL campaigns only.
    from dialer.store.moving import copy_to_postgres

    if journal_url(campaign) is not None:
        raise SetupError(f"{campaign.path}: journal is already a PostgreSQL URL; nothing to migrate")
    if not url.startswith(URL_SCHEMES):
        raise SetupError(f"--to: {redact(url)!r} is not a postgresql:// URL")
    return copy_to_postgres(campaign.journal_path, campaign.name, url)


@dataclass
class Collect:
    """How `status` and `report` may ask the API about calls that ended since (no POST ever)."""

    api_key: str | None
    base_url: str | None = None
    transport: httpx.AsyncBaseTransport | None = None


def collect_outcomes(campaign: Campaign, journal: JournalStore, how: Collect | None) -> str | None:
    """One batched poll of the journal's live calls (or chats); a line saying why not, if not.

    Skipped while a run holds the campaign's lock: that run is following them already.
    """
    if how is None or not journal.live_calls():
        return None
    if not how.api_key:
        return "live calls not polled: no API key (their outcomes come with the next run)"
    # A SQLite run holds the campaign's lock and follows its calls itself. PostgreSQL has no
    # such lock (its runs share the rows): a call's final status written twice is the same row.
    lock = CampaignLock(campaign.journal_path) if journal_url(campaign) is None else None
    try:
        if lock is not None:
            lock.acquire()
    except LockedError:
        return None  # a run is going: it follows them
    try:
        from dialer import client as api
        from dialer.follow import collect

        client = api.SynthflowClient(
            how.base_url or campaign.api.base_url,
            how.api_key,
            timeout=campaign.api.timeout_seconds,
            transport=how.transport,
        )

        async def poll() -> int:
            try:
                return await collect(campaign, journal, client)
            finally:
                await client.aclose()

        try:
            asyncio.run(poll())
        except api.LookupError_ as exc:
            return f"live calls not polled: {exc}"
        return None
    finally:
        if lock is not None:
            lock.release()


def report_campaign(campaign: Campaign, target: Path, collect: Collect | None = None) -> int:
    """Write the per-row report again from the journal (or, for a .html name, the campaign
    page), after collecting the outcomes of calls that ended since (given a key); the
    number of rows written."""
    if not journal_exists(campaign):
        raise SetupError(f"{journal_label(campaign)}: no journal yet; run the campaign first")
    journal = open_journal(campaign)
    try:
        if not journal.is_imported:
            raise SetupError(f"{journal_label(campaign)}: no leads imported yet; run the campaign first")
        note = collect_outcomes(campaign, journal, collect)
        if note:
            log.warning("calls.not_polled", reason=note)
        if target.suffix.lower() in (".html", ".htm"):
            from dialer.page import write_page  # matplotlib: only when a page is asked for

            return write_page(campaign, journal, target)
        return write_campaign_report(journal, target)
    finally:
        journal.close()


async def _dispatch(
    campaign: Campaign, journal: JournalStore, options: RunOptions, suppressed: dict[str, str]
) -> RunStats:
    from dialer import client as api
    from dialer.dispatch import Dispatcher, DispatchOptions

    client = api.SynthflowClient(
        options.base_url or campaign.api.base_url,
        options.api_key,
        timeout=campaign.api.timeout_seconds,
        connections=campaign.limits.concurrency,
        transport=options.transport,
    )
    dispatcher = Dispatcher(
        campaign,
        journal,
        client,
        DispatchOptions(
            limit=options.limit,
            clock=options.clock,
            progress=options.progress,
            wait_for_calls=not options.no_wait,
        ),
        suppressed,
    )
    loop = asyncio.get_running_loop()
    if options.handle_signals:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, _stopper(dispatcher, signum))
    try:
        return await dispatcher.run()
    finally:
        if options.handle_signals:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
        await client.aclose()


def _stopper(dispatcher: Dispatcher, signum: int) -> Callable[[], None]:
    def stop() -> None:
        if dispatcher.stats.stopped_by is None:
            dispatcher.stats.stopped_by = signal.Signals(signum).name
            log.warning("run.stopping", signal=dispatcher.stats.stopped_by)
        dispatcher.stop.set()

    return stop


def quiet_by_default() -> None:
    """Used as a library with logging left alone, structlog would print every row: don't."""
    if not structlog.is_configured():
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))


def start_opt_out_list(campaign: Campaign) -> None:
    """The campaign's opt-out list exists from its first run (header only until someone opts
    out), so any campaign may name it in `suppress` at once."""
    from dialer.optout import ensure_list

    listed = campaign.outcomes.opt_out_list
    if listed is None:
        return
    try:
        ensure_list(listed)
    except OSError as exc:
        raise SetupError(f"{listed}: cannot create the opt-out list: {exc.strerror or exc}") from None


def run_campaign(campaign: Campaign, options: RunOptions) -> RunResult:
    """Import (first run), dial every due row, write the report. Holds the campaign's lock."""
    from dialer.columns import check_placeholders
    from dialer.report import check_report_path
    from dialer.suppress import suppression_sources

    quiet_by_default()
    check_report_path(options.report or campaign.report_path)  # a .pdf is refused before any call
    with journal_lock(campaign), journal_errors(campaign.journal_path):
        journal = open_journal(campaign)
        try:
            campaign = with_leads(campaign, options.leads)
            report = options.report or campaign.report_path
            start_opt_out_list(campaign)
            if not journal.is_imported and not options.new_journal:
                refuse_a_new_journal_after_calls(campaign, report)
            imported = import_if_needed(campaign, journal, campaign.leads)
            check_placeholders(campaign, journal.headers)  # the campaign may have changed since
            if options.retry_failed:
                journal.requeue(Status.FAILED, "retried with --retry-failed")
            if options.retry_unknown:
                journal.requeue(Status.UNKNOWN, "sent again with --retry-unknown")
            # The lists may have grown since the import: read them once per run, here, and
            # hand them to the stages that need them.
            suppressed = suppression_sources(campaign)
            journal.suppress(suppressed)
            counts = journal.counts()
            options.progress.start(sum(counts.get(s, 0) for s in REMAINING))
            try:
                stats = asyncio.run(_dispatch(campaign, journal, options, suppressed))
            except DialerError:
                # Stopped (a refused key): the journal has every row as it was left, and
                # the report says so too, as after any run.
                write_campaign_report(journal, report)
                raise
            write_campaign_report(journal, report)
            now = options.clock()
            return RunResult(
                stats=stats,
                counts=journal.counts(),
                imported=imported,
                report=report,
                next_due=next_due(journal, campaign, now),
                calls=journal.call_figures(now.timestamp()) if campaign.mode == "call" else None,
            )
        finally:
            journal.close()


@dataclass
class CampaignStatus:
    counts: dict[str, int]
    due_now: int
    next_due: datetime | None
    removed: int
    caps_reset: datetime | None  # when a capped caller id may dial again
    calls: CallFigures | None = None  # per call status, pick-up rate, live calls
    note: str | None = None  # why live calls were not polled, if they were not
    rested: dict[str, str] = field(default_factory=dict)  # caller ids rested now, and why


def _caps_reset(campaign: Campaign, usage: dict[tuple[str, str], int], now: datetime) -> datetime | None:
    """When a capped caller id dials again; by the counts the campaign's runs share (the
    other runs' and the account's other campaigns' calls too) when they are shared."""
    from dialer.numbers import NumberPool
    from dialer.store.callerdays import shared_days

    shared = shared_days(campaign)
    pool = NumberPool(campaign.numbers, usage, shared=shared)
    if shared is not None:

        async def read() -> None:
            try:
                await pool.sync(now)
            finally:
                await shared.close()

        # In a thread of its own: status may be asked from code already running an event
        # loop (a page built inside one, a test's browser), where asyncio.run refuses.
        with ThreadPoolExecutor(max_workers=1) as thread:
            thread.submit(asyncio.run, read()).result()
    return pool.next_reset(now)


def campaign_status(
    campaign: Campaign, *, clock: Clock = utc_now, collect: Collect | None = None
) -> CampaignStatus | None:
    """Counts per status from the journal, what is due now and when the rest becomes due;
    given a key (`collect`), the outcomes of calls that ended since are collected first."""
    if not journal_exists(campaign):
        return None
    journal = open_journal(campaign)
    try:
        note = collect_outcomes(campaign, journal, collect)
        now = clock()
        due = _due(journal, campaign, now)
        return CampaignStatus(
            counts=journal.counts(),
            due_now=due.now,
            next_due=due.next,
            removed=journal.count_removed(),
            caps_reset=_caps_reset(campaign, journal.number_usage(), now),
            calls=journal.call_figures(now.timestamp()),
            note=note,
            # On the wall clock, as in dispatch.rested_now: calls are stamped with it.
            rested=rested_callers(journal.recent_by_caller(time.time() - WINDOW.total_seconds())),
        )
    finally:
        journal.close()
