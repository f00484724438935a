"""The campaign page (`dialer report CAMPAIGN.toml --out FILE.html`), in a real browser.

A campaign is run against the sandbox with its telephony on (calls live a fraction of a
second and end completed, no-answer or busy, seeded), some rows failed by 503s, some
invalid in the file; the run follows every call to its end. Redials are not built yet,
so the test then inserts further calls (ordinals 2 and 3) for a few leads into the
`calls` table, as a redial would leave them, plus one call given up on and one still
live. The page is opened in headless Chromium (Debian's `chromium`, driven by
playwright, which never downloads a browser): it must load with no console error and no
request but its own file, and its figures must be those `dialer status` prints (its text,
parsed) and those of the sandbox's record. Chromium missing is a failure, not a skip.
The tests marked with both stores run the campaign once on a SQLite journal and once on a
PostgreSQL one (the throwaway server of tests/pg.py): the page reads either.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from dialer.cli import main
from dialer.config import Campaign, load_campaign
from dialer.run import RunOptions, report_campaign, run_campaign
from dialer.sandbox import read_events
from dialer.store import journal_url
from dialer.store.pgdb import pg_sql
from dialer.store.pgurl import schema_name
from dialer.validate import _reason_kind
from tests.pg import PASSWORD, SUPERUSER

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium itself asks Google's hosts for things.
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
KEY = "test-key"
OUTCOMES = "completed=0.5,no-answer=0.3,busy=0.2"
# The redials inserted after the run, in turn: (status, final, timed_out, duration).
REDIALS = [
    ("completed", 1, 0, 95.0),
    ("no-answer", 1, 0, 0.0),
    ("hangup_on_voicemail", 1, 0, 12.0),
    ("busy", 1, 0, 0.0),
    ("completed", 1, 0, 40.5),
]
GIVEN_UP = ("in-progress", 1, 1, None)  # final, but not in the pick-up rate
LIVE = ("ringing", 0, 0, None)


@dataclass(frozen=True)
class Call:
    """A row of the `calls` table, as the test reads it back."""

    lead_id: int
    ordinal: int
    from_number: str
    status: str
    final: int
    timed_out: int
    duration: float | None


def _campaign_file(tmp_path: Path, journal: str = "demo.sqlite") -> Path:
    """The demo campaign in `tmp_path`; its journal a file there, or a postgresql:// URL."""
    shutil.copy(ROOT / "sample_leads.csv", tmp_path / "leads.csv")
    demo = (ROOT / "campaigns" / "demo.toml").read_text()
    text = (
        demo.replace('"../sample_leads.csv"', '"leads.csv"')
        .replace('"../out/demo.report.csv"', '"demo.report.csv"')
        .replace('"../out/demo.sqlite"', f'"{journal}"')
        .replace("max_attempts = 4", "max_attempts = 1")
    )
    path = tmp_path / "demo.toml"
    path.write_text(text + "\n[outcomes]\npoll_seconds = 0.05\n")
    return path


@dataclass(frozen=True)
class JournalSql:
    """The test's own SQL on a campaign's journal, whichever store keeps it (`?` style)."""

    campaign: Campaign

    def rows(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._run(statement, params, fetch=True)

    def execute(self, statement: str, params: Sequence[Any] = ()) -> None:
        self._run(statement, params, fetch=False)

    def _run(self, statement: str, params: Sequence[Any], *, fetch: bool) -> list[tuple[Any, ...]]:
        url = journal_url(self.campaign)
        if url is None:
            conn = sqlite3.connect(self.campaign.journal_path)
            try:
                with conn:
                    found = conn.execute(statement, params).fetchall()
            finally:
                conn.close()
            return [tuple(row) for row in found]
        import psycopg

        with psycopg.connect(url) as pg:
            pg.execute(f'SET search_path TO "{schema_name(self.campaign.name)}"'.encode())
            cursor = pg.execute(pg_sql(statement).encode(), tuple(params))
            return [tuple(row) for row in cursor.fetchall()] if fetch else []


def _add_redials(journal: JournalSql) -> None:
    """Calls 2 and 3 for the first sent leads, as redials would leave them; the last lead's
    latest call given up on, the one before's still live."""
    leads = journal.rows(
        "SELECT l.id, l.from_number, max(c.ordinal), max(c.placed_at) FROM leads l"
        " JOIN calls c ON c.lead_id = l.id GROUP BY l.id ORDER BY l.position"
    )
    assert len(leads) >= 6, leads
    fates = iter(REDIALS * 2)
    added: list[tuple[object, ...]] = []
    for index, (lead_id, from_number, ordinal, placed_at) in enumerate(leads[:4]):
        for extra in range(1, 2 + index % 2):  # one or two more calls
            status, final, timed_out, duration = next(fates)
            at = placed_at + extra * 7.3 * 3600  # hours later: other local hours and weekdays
            added.append((lead_id, ordinal + extra, from_number, at, status, final, timed_out, duration))
    for (lead_id, from_number, ordinal, placed_at), fate in zip(leads[-2:], (LIVE, GIVEN_UP), strict=True):
        added.append((lead_id, ordinal + 1, from_number, placed_at + 3600, *fate))
    for lead_id, ordinal, *rest in added:
        call_id = f"redial-{lead_id}-{ordinal}"
        journal.execute(
            "INSERT INTO calls (call_id, lead_id, ordinal, from_number, placed_at, status, final,"
            " timed_out, duration) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (call_id, lead_id, ordinal, *rest),
        )
        journal.execute("UPDATE leads SET call_id = ? WHERE id = ?", (call_id, lead_id))


def journal_calls(journal: JournalSql) -> list[Call]:
    rows = journal.rows("SELECT lead_id, ordinal, from_number, status, final, timed_out, duration FROM calls")
    return [Call(*row) for row in rows]


@dataclass
class Built:
    campaign_file: Path
    page: Path
    record: Path  # the sandbox's: what the calls it placed did
    calls: list[Call]  # the journal's calls table after the redials were added
    journal: JournalSql


BOTH_STORES = pytest.mark.parametrize("built", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture
def built(
    request: pytest.FixtureRequest, tmp_path: Path, sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> Built:
    """The campaign run, its redials added, its page written; on SQLite unless the test is
    parametrized with "postgresql" (BOTH_STORES)."""
    monkeypatch.delenv("SYNTHFLOW_API_KEY", raising=False)  # `status` must not poll the inserted calls
    store = getattr(request, "param", "sqlite")
    journal = "demo.sqlite" if store == "sqlite" else request.getfixturevalue("pg_url")
    path = _campaign_file(tmp_path, journal)
    server = sandbox(api_key=KEY, fail_rate=0.35, seed=3, call_seconds="0.05:0.2", outcomes=OUTCOMES)
    campaign = load_campaign(path)
    assert (journal_url(campaign) is None) == (store == "sqlite")
    result = run_campaign(campaign, RunOptions(api_key=KEY, base_url=server.url))
    assert result.calls is not None and result.calls.live == 0  # every call followed to its end
    sql = JournalSql(campaign)
    _add_redials(sql)
    page = tmp_path / "page.html"
    report_campaign(campaign, page)
    assert server.record is not None
    return Built(path, page, server.record, journal_calls(sql), sql)


@dataclass
class Status:
    """What `dialer status` prints, parsed from its text."""

    rows: dict[str, int]  # `  <status>  <n>` lines, `total` among them
    ended: dict[str, int]  # `calls ended: busy 1, completed 2`
    pickup_percent: int | None  # `pick-up rate: 25%` (`-`: none ended)
    live: int
    given_up: int


def _status_text(campaign_file: Path) -> str:
    done = CliRunner().invoke(main, ["status", str(campaign_file)], env={"COLUMNS": "200"})
    assert done.exit_code == 0, done.output
    return done.output


def _rows(text: str) -> dict[str, int]:
    """`dialer status`'s `  <status>  <n>` lines, `total` among them."""
    return {m[1]: int(m[2]) for m in re.finditer(r"^  (\w+) +(\d+)$", text, re.M)}


def status_counts(campaign_file: Path) -> dict[str, int]:
    return _rows(_status_text(campaign_file))


def dialer_status(campaign_file: Path) -> Status:
    text = _status_text(campaign_file)
    ended_line = re.search(r"^calls ended: (.*)$", text, re.M)
    rate_line = re.search(
        r"^pick-up rate: (-|\d+)%?; live calls: (\d+)(?:; never ended \(given up\): (\d+))?$", text, re.M
    )
    assert ended_line and rate_line, text
    ended = {m[1]: int(m[2]) for m in re.finditer(r"([\w-]+) (\d+)", ended_line[1])}
    rate = None if rate_line[1] == "-" else int(rate_line[1])
    return Status(_rows(text), ended, rate, int(rate_line[2]), int(rate_line[3] or 0))


# -- the browser ---------------------------------------------------------------------


@pytest.fixture
def browser() -> Iterator[Any]:
    assert CHROMIUM.exists(), (
        f"{CHROMIUM} is missing: the page is tested in Debian's chromium (apt-get install -y chromium;"
        " .ci/run installs it)"
    )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@dataclass
class Opened:
    page: Any
    errors: list[str]
    requests: list[str]


def open_page(browser: Any, path: Path, **context: Any) -> Opened:
    ctx = browser.new_context(**context)
    page = ctx.new_page()
    errors: list[str] = []
    requests: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(path.resolve().as_uri(), wait_until="load")
    return Opened(page, errors, requests)


def data_values(page: Any, attribute: str) -> dict[str, str]:
    found: dict[str, str] = page.eval_on_selector_all(
        f"[data-{attribute}]",
        f"els => Object.fromEntries(els.map(e => [e.dataset['{_camel(attribute)}'], e.dataset.value]))",
    )
    return found


def _camel(name: str) -> str:
    head, *rest = name.split("-")
    return head + "".join(part.title() for part in rest)


@BOTH_STORES
def test_the_page_loads_offline_and_its_figures_are_those_of_status(built: Built, browser: Any) -> None:
    opened = open_page(browser, built.page, viewport={"width": 1280, "height": 900})
    page = opened.page
    assert opened.errors == []
    assert opened.requests == [built.page.resolve().as_uri()]  # the file itself, nothing else

    status = dialer_status(built.campaign_file)
    statuses = {k: v for k, v in status.rows.items() if k != "total"}
    assert {"sent", "failed", "invalid", "duplicate"} <= statuses.keys(), status  # a campaign of each
    on_page = {k: int(v) for k, v in data_values(page, "status").items()}
    assert on_page == statuses
    figures = data_values(page, "figure")
    assert int(figures["leads"]) == status.rows["total"]
    assert int(figures["failed"]) == status.rows["failed"]
    assert int(figures["invalid"]) == status.rows["invalid"]

    # The call figures are those `dialer status` prints: per final status, live, given up, pick-up rate.
    ended_on_page = {k: int(v) for k, v in data_values(page, "call-status").items()}
    assert ended_on_page == status.ended
    assert list(ended_on_page) == list(status.ended)  # in the same order, too
    call_figures = {k: int(v) for k, v in data_values(page, "call-figure").items()}
    assert call_figures == {"live": status.live, "given-up": status.given_up} == {"live": 1, "given-up": 1}
    assert int(figures["live"]) == status.live
    rate = float(figures["pickup-rate"])
    assert rate == pytest.approx(status.ended["completed"] / sum(status.ended.values()), abs=1e-4)
    assert round(100 * rate) == status.pickup_percent
    outcomes = page.inner_text("#outcomes")
    assert outcomes.endswith("never ended (given up)\t1") and "still live\t1\n" in outcomes

    # And those of the calls the sandbox placed (its record) with the redials the test added.
    real = Counter(e["status"] for e in read_events(built.record))
    assert set(real) == {"completed", "no-answer", "busy"}, real
    redials = Counter(c.status for c in built.calls if c.ordinal > 1 and c.final and not c.timed_out)
    assert ended_on_page == real + redials

    # The headline's other call figures, counted here from the journal's calls.
    calls = built.calls
    completed = [c for c in calls if c.status == "completed"]
    assert int(figures["dialed"]) == len({c.lead_id for c in calls}) == status.rows["sent"]
    assert int(figures["reached"]) == len({c.lead_id for c in completed})
    talk = sum(c.duration or 0.0 for c in calls) / 60
    assert float(figures["talk-minutes"]) == pytest.approx(talk, abs=0.05)
    callers = Counter(c.from_number for c in calls)
    assert {k: int(v) for k, v in data_values(page, "caller").items()} == callers

    # The shown numbers are the figures, not just the attributes.
    headline = page.inner_text("#headline")
    assert f"{status.rows['total']:,}" in headline
    assert f"{100 * rate:.1f}%" in headline

    # Several calls per lead: leads with 1, 2 and 3 calls, and the pick-up rate of each attempt.
    attempts = page.inner_text("#attempts")
    for ordinal in (1, 2, 3):
        placed = [c for c in calls if c.ordinal == ordinal]
        assert placed and re.search(rf"^{ordinal}\t{len(placed)}\t", attempts, re.M), attempts

    # Every chart is an accessible inline SVG: a title and a description, named by aria.
    charts = page.eval_on_selector_all(
        "svg.chart",
        "els => els.map(e => [e.getAttribute('role'), e.querySelector('title').textContent,"
        " e.querySelector('desc').textContent, e.getAttribute('aria-labelledby')])",
    )
    assert len(charts) >= 8
    for role, title, desc, labelled in charts:
        assert role == "img" and title and desc and labelled.endswith("-desc")
    assert (
        page.eval_on_selector_all("svg.chart image, script, link[rel=stylesheet]", "els => els.length") == 0
    )

    # Whichever store: the footer names the journal, never a password, user or host of it.
    footer = page.inner_text("footer")
    text = built.page.read_text()
    assert PASSWORD not in text and SUPERUSER not in text and "127.0.0.1" not in text
    if journal_url(built.journal.campaign) is not None:
        assert f"schema {schema_name('demo')}" in footer, footer
    else:
        assert "demo.sqlite" in footer, footer


@BOTH_STORES
def test_failed_and_invalid_rows_are_grouped_by_reason_without_their_values(
    built: Built, browser: Any
) -> None:
    rows = built.journal.rows(
        "SELECT status, error, position FROM leads WHERE status IN ('failed', 'invalid') ORDER BY position"
    )
    # Grouped as `validate` groups its reasons.
    expected = Counter((status, _reason_kind(error)) for status, error, _ in rows)
    page = open_page(browser, built.page).page
    table = page.inner_text("#problems tbody")
    lines = [line.split("\t") for line in table.splitlines()]
    assert Counter({(s, r): int(n) for s, r, n, _ in lines}) == expected
    assert "555-01" not in table and "Pacific/Standard" not in table  # values elided, as validate does
    first_invalid = next(p for s, _, p in rows if s == "invalid")
    assert any(str(first_invalid) in examples for s, _, _, examples in lines if s == "invalid")


def test_the_page_fits_a_phone_and_prints(built: Built, browser: Any, tmp_path: Path) -> None:
    opened = open_page(browser, built.page, viewport={"width": 390, "height": 844}, is_mobile=True)
    page = opened.page
    assert opened.errors == []
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0
    page.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
    shutil.copy(built.page, "/tmp/page-built.html")
    page.emulate_media(media="print")
    assert page.is_hidden("nav")
    pdf = page.pdf()
    assert pdf.startswith(b"%PDF")


@pytest.fixture
def without_calls(tmp_path: Path, sandbox: Any) -> Path:
    """A campaign's page written by the command line from a journal whose calls are gone.

    (Made before the browser starts: playwright's sync API holds an event loop while open.)
    """
    path = _campaign_file(tmp_path)
    server = sandbox(api_key=KEY)
    campaign = load_campaign(path)
    run_campaign(campaign, RunOptions(api_key=KEY, base_url=server.url))
    conn = sqlite3.connect(campaign.journal_path)
    with conn:
        conn.execute("DELETE FROM calls")
    conn.close()
    page_path = tmp_path / "empty.html"
    done = CliRunner().invoke(main, ["report", str(path), "--out", str(page_path)])
    assert done.exit_code == 0, done.output
    return page_path


def test_a_journal_with_no_calls_says_so(without_calls: Path, browser: Any) -> None:
    opened = open_page(browser, without_calls)
    assert opened.errors == []
    for section in ("#over-time", "#local-time", "#caller-ids", "#attempts"):
        assert "no calls followed yet" in opened.page.inner_text(section)
    assert opened.page.eval_on_selector_all("svg.chart", "els => els.length") == 1  # the statuses
    sent = status_counts(without_calls.parent / "demo.toml")["sent"]
    assert int(data_values(opened.page, "figure")["dialed"]) == sent > 0


def test_matplotlib_is_imported_only_when_a_page_is_written() -> None:
    code = (
        "import sys, dialer.run, dialer.page, dialer.cli;"
        " print('matplotlib' in {m.split('.')[0] for m in sys.modules})"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "False"


@pytest.fixture
def hostile(built: Built) -> Path:
    """The page again, after the API answered a call status and an error made of markup."""
    built.journal.execute(
        "UPDATE calls SET status = '<img src=x onerror=console.error(1)>'"
        " WHERE call_id = (SELECT min(call_id) FROM calls)"
    )
    built.journal.execute(
        "UPDATE leads SET error = 'refused: <script>console.error(2)</script>'"
        " WHERE id = (SELECT min(id) FROM leads WHERE status = 'failed')"
    )
    page = built.page.with_name("hostile.html")
    report_campaign(load_campaign(built.campaign_file), page)
    return page


def test_markup_in_answers_and_errors_is_shown_as_text(hostile: Path, browser: Any) -> None:
    opened = open_page(browser, hostile)
    assert opened.errors == []
    assert opened.requests == [hostile.resolve().as_uri()]
    page = opened.page
    assert page.eval_on_selector_all("script, img", "els => els.length") == 0
    assert "<img src=x onerror=console.error(1)>" in page.inner_text("#outcomes")
    assert "<script>console.error(…)</script>" in page.inner_text("#problems")
