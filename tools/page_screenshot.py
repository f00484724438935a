"""The README's picture of a campaign page: `python tools/page_screenshot.py OUT.png [PAGE.html]`.

`make screenshot` runs this into docs/campaign-page.png. With no PAGE.html it first builds
a campaign whose calls were followed to their end: 300 leads over six US time zones (a few
rows invalid in the file), dialed against the sandbox in this process with its telephony
on (seeded; calls of 0.5-3 s, 20 live at most; completed 45%, no-answer 30%, busy 10%,
hangup_on_voicemail 10%, failed 5%; 2% of POSTs answered 503, so a few rows fail), and
writes its page to out/screenshot/campaign.html. The run's clock (what the law's
08:00-21:00 and the calling hours are checked against) is today's at 20:00 UTC and on from
there, so every zone's leads may be called whatever hour it is retaken at; the charts show
the real moments the calls were placed. Then Debian's chromium (driven by
playwright, which never downloads a browser) takes the whole page at 1100 px wide.
"""

from __future__ import annotations

import csv
import random
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from playwright.sync_api import sync_playwright

from dialer.config import load_campaign
from dialer.run import RunOptions, report_campaign, run_campaign
from dialer.sandbox import SandboxOptions, start_in_thread

ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
FOLDER = Path("out/screenshot")
LEADS = 300
KEY = "screenshot-key"
OUTCOMES = "completed=0.45,no-answer=0.3,busy=0.1,hangup_on_voicemail=0.1,failed=0.05"
# (area code, time zone): the leads' local hours differ, so the hour chart has several bars.
AREAS = [
    ("212", "America/New_York"),
    ("312", "America/Chicago"),
    ("303", "America/Denver"),
    ("415", "America/Los_Angeles"),
    ("907", "America/Anchorage"),
    ("808", "Pacific/Honolulu"),
]
# Rows the loader refuses, as real files have them.
INVALID = [("555-01", "America/New_York"), ("+1 212 555", ""), ("(415) 555-0199", "Pacific/Standard")]
CAMPAIGN = """\
name = "spring-renewals"
mode = "call"
leads = "leads.csv"
report = "report.csv"
journal = "journal.sqlite"
default_region = "US"

[api]
base_url = "{url}"

[call]
model_id = "1696372226173x164740052408336400"
prompt = "You are calling on behalf of Acme about {{Company}}'s renewal."

[columns]
phone = "Phone"
name = "Name"
timezone = "Time Zone"
variables = ["Company"]

[numbers]
pool = ["+12125550100", "+13125550100", "+14155550100", "+13035550100"]
strategy = "local"
daily_cap = 100

[limits]
rate_per_second = 50
concurrency = 8
max_attempts = 1
max_live_calls = 20

[outcomes]
poll_seconds = 0.25

[hours]
start = "00:00"
end = "24:00"
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
"""


def evening_clock() -> Callable[[], datetime]:
    """Today at 20:00 UTC when first asked, then going on at the real pace."""
    start = datetime.now(UTC).replace(hour=20, minute=0, second=0, microsecond=0)
    began = time.monotonic()
    return lambda: start + timedelta(seconds=time.monotonic() - began)


def build_campaign(folder: Path) -> Path:
    """Run the campaign against the sandbox; the page's path."""
    folder.mkdir(parents=True, exist_ok=True)
    # A fresh campaign each time: the journal and the report go together (a report without
    # its journal makes the dialer refuse to call its rows again).
    for old in [*folder.glob("journal.sqlite*"), folder / "report.csv"]:
        old.unlink(missing_ok=True)
    pick = random.Random(16)
    with (folder / "leads.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Name", "Phone", "Time Zone", "Company"])
        for i in range(LEADS - len(INVALID)):
            area, zone = pick.choice(AREAS)
            writer.writerow([f"Lead {i + 1}", f"+1{area}555{i:04d}", zone, f"Company {i % 40 + 1}"])
        for i, (phone, zone) in enumerate(INVALID):
            writer.writerow([f"Invalid {i + 1}", phone, zone, "Initech"])
    sandbox = start_in_thread(
        SandboxOptions(
            api_key=KEY,
            seed=16,
            fail_rate=0.02,
            call_seconds=(0.5, 3.0),
            outcomes=OUTCOMES,  # type: ignore[arg-type]  # parsed by SandboxOptions, as --outcomes is
            max_live_calls=20,
        )
    )
    try:
        path = folder / "campaign.toml"
        path.write_text(CAMPAIGN.format(url=sandbox.url), encoding="utf-8")
        campaign = load_campaign(path)
        run_campaign(campaign, RunOptions(api_key=KEY, base_url=sandbox.url, clock=evening_clock()))
        page = folder / "campaign.html"
        report_campaign(campaign, page)
    finally:
        sandbox.stop()
    return page


def screenshot(page_path: Path, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page(viewport={"width": 1100, "height": 900}, device_scale_factor=1)
        page.goto(page_path.resolve().as_uri(), wait_until="load")
        page.screenshot(path=str(out), full_page=True)
        browser.close()


def main(argv: list[str]) -> int:
    if len(argv) not in (1, 2):
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(argv[0])
    page = Path(argv[1]) if len(argv) == 2 else build_campaign(FOLDER)
    screenshot(page, out)
    print(f"screenshot: {out} (of {page})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
