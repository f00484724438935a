"""The campaign page (`dialer report CAMPAIGN.toml --out FILE.html`), in a real browser.

A campaign is run against the sandbox (some rows failed by 503s, some invalid in the
file), then its `calls` table is given calls with redials (ordinals 1-3), final statuses,
durations and one call still live. The page is opened in headless Chromium (Debian's
`chromium`, driven by playwright, which never downloads a browser): it must load with no
console error and no request but its own file, and its figures must be those of
`dialer status` and of the calls the test put in. Chromium missing is a failure, not a skip.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from dialer.cli import main
from dialer.config import load_campaign
from dialer.run import RunOptions, _reason_kind, report_campaign, run_campaign

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
# A Monday, 14:00 UTC: calls are spread from here over three days.
START = datetime(2026, 11, 2, 14, 0, tzinfo=UTC).timestamp()
# (status, final, timed_out, duration) for the calls, in turn.
FATES = [
    ("completed", 1, 0, 95.0),
    ("no-answer", 1, 0, 0.0),
    ("busy", 1, 0, 0.0),
    ("completed", 1, 0, 40.5),
    ("hangup_on_voicemail", 1, 0, 12.0),
    ("in-progress", 1, 1, None),  # gave up on: not in the pick-up rate
]


@dataclass
class Placed:
    call_id: str
    lead_id: int
    ordinal: int
    from_number: str
    placed_at: float
    status: str
    final: int
    timed_out: int
    duration: float | None


def _campaign_file(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "sample_leads.csv", tmp_path / "leads.csv")
    demo = (ROOT / "campaigns" / "demo.toml").read_text()
    text = (
        demo.replace('"../sample_leads.csv"', '"leads.csv"')
        .replace('"../out/demo.report.csv"', '"demo.report.csv"')
        .replace('"../out/demo.sqlite"', '"demo.sqlite"')
        .replace("max_attempts = 4", "max_attempts = 1")
    )
    path = tmp_path / "demo.toml"
    path.write_text(text)
    return path


def _add_calls(journal: Path) -> list[Placed]:
    """Calls for every sent row: 1, 2 or 3 of them (redials), the last one of one lead live."""
    conn = sqlite3.connect(journal)
    leads = conn.execute(
        "SELECT id, from_number FROM leads WHERE status = 'sent' ORDER BY position"
    ).fetchall()
    placed: list[Placed] = []
    turn = 0
    for index, (lead_id, from_number) in enumerate(leads):
        for ordinal in range(1, 2 + index % 3):
            status, final, timed_out, duration = FATES[turn % len(FATES)]
            # Every 7 hours and a bit: the calls fall on many hours and three weekdays.
            at = START + turn * 7.3 * 3600 / 3
            placed.append(
                Placed(
                    f"call-{lead_id}-{ordinal}",
                    lead_id,
                    ordinal,
                    from_number,
                    at,
                    status,
                    final,
                    timed_out,
                    duration,
                )
            )
            turn += 1
    live = placed[-1]
    placed[-1] = Placed(
        **{**live.__dict__, "status": "in-progress", "final": 0, "timed_out": 0, "duration": None}
    )
    with conn:
        conn.execute("DELETE FROM calls")
        conn.executemany(
            "INSERT INTO calls (call_id, lead_id, ordinal, from_number, placed_at, status, final,"
            " timed_out, duration) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    p.call_id,
                    p.lead_id,
                    p.ordinal,
                    p.from_number,
                    p.placed_at,
                    p.status,
                    p.final,
                    p.timed_out,
                    p.duration,
                )
                for p in placed
            ],
        )
        latest = {p.lead_id: p.call_id for p in placed}
        conn.executemany(
            "UPDATE leads SET call_id = ? WHERE id = ?", [(c, lead) for lead, c in latest.items()]
        )
    conn.close()
    return placed


@dataclass
class Built:
    campaign_file: Path
    page: Path
    placed: list[Placed]


@pytest.fixture
def built(tmp_path: Path, sandbox: Any) -> Built:
    path = _campaign_file(tmp_path)
    server = sandbox(api_key=KEY, fail_rate=0.35, seed=3)
    campaign = load_campaign(path)
    run_campaign(campaign, RunOptions(api_key=KEY, base_url=server.url))
    placed = _add_calls(campaign.journal_path)
    page = tmp_path / "page.html"
    report_campaign(campaign, page)
    return Built(path, page, placed)


def status_counts(campaign_file: Path) -> dict[str, int]:
    """What `dialer status` prints: `  <status>  <n>` lines, `total` among them."""
    done = CliRunner().invoke(main, ["status", str(campaign_file)])
    assert done.exit_code == 0, done.output
    return {m[1]: int(m[2]) for m in re.finditer(r"^  (\w+) +(\d+)$", done.output, re.M)}


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


def test_the_page_loads_offline_and_its_figures_are_those_of_status(built: Built, browser: Any) -> None:
    opened = open_page(browser, built.page, viewport={"width": 1280, "height": 900})
    page = opened.page
    assert opened.errors == []
    assert opened.requests == [built.page.resolve().as_uri()]  # the file itself, nothing else

    status = status_counts(built.campaign_file)
    statuses = {k: v for k, v in status.items() if k != "total"}
    assert {"sent", "failed", "invalid", "duplicate"} <= statuses.keys(), status  # a campaign of each
    on_page = {k: int(v) for k, v in data_values(page, "status").items()}
    assert on_page == statuses
    figures = data_values(page, "figure")
    assert int(figures["leads"]) == status["total"]
    assert int(figures["failed"]) == status["failed"]
    assert int(figures["invalid"]) == status["invalid"]

    # The call figures: those of the calls put in the journal, counted here on their own.
    placed = built.placed
    basis = [p for p in placed if p.final and not p.timed_out]
    completed = [p for p in placed if p.status == "completed"]
    assert float(figures["pickup-rate"]) == pytest.approx(len(completed) / len(basis), abs=1e-4)
    assert int(figures["dialed"]) == len({p.lead_id for p in placed})
    assert int(figures["reached"]) == len({p.lead_id for p in completed})
    assert int(figures["live"]) == sum(1 for p in placed if not p.final) == 1
    talk = sum(p.duration or 0.0 for p in placed) / 60
    assert float(figures["talk-minutes"]) == pytest.approx(talk, abs=0.05)
    # As `status` counts them: calls per final status, those given up on and still live apart.
    ended = Counter(p.status for p in basis)
    assert {k: int(v) for k, v in data_values(page, "call-status").items()} == ended
    outcomes = page.inner_text("#outcomes")
    given_up = sum(1 for p in placed if p.timed_out)
    assert given_up > 0 and outcomes.endswith(f"never ended (given up)\t{given_up}")
    assert "still live\t1\n" in outcomes
    callers = Counter(p.from_number for p in placed)
    assert {k: int(v) for k, v in data_values(page, "caller").items()} == callers

    # The shown numbers are the figures, not just the attributes.
    headline = page.inner_text("#headline")
    assert f"{status['total']:,}" in headline
    assert f"{100 * len(completed) / len(basis):.1f}%" in headline

    # Redials: leads with 1, 2 and 3 calls, and the pick-up rate of each attempt.
    attempts = page.inner_text("#attempts")
    for ordinal in (1, 2, 3):
        calls = [p for p in placed if p.ordinal == ordinal]
        assert re.search(rf"^{ordinal}\t{len(calls)}\t", attempts, re.M), attempts

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


def test_failed_and_invalid_rows_are_grouped_by_reason_without_their_values(
    built: Built, browser: Any
) -> None:
    conn = sqlite3.connect(load_campaign(built.campaign_file).journal_path)
    rows = conn.execute(
        "SELECT status, error, position FROM leads WHERE status IN ('failed', 'invalid') ORDER BY position"
    ).fetchall()
    conn.close()
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
    journal = load_campaign(built.campaign_file).journal_path
    conn = sqlite3.connect(journal)
    with conn:
        conn.execute(
            "UPDATE calls SET status = '<img src=x onerror=console.error(1)>' WHERE call_id = ?",
            (built.placed[0].call_id,),
        )
        conn.execute(
            "UPDATE leads SET error = 'refused: <script>console.error(2)</script>'"
            " WHERE id = (SELECT min(id) FROM leads WHERE status = 'failed')"
        )
    conn.close()
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
