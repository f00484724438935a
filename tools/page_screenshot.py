"""Screenshot a campaign page in Debian's chromium: `python tools/page_screenshot.py PAGE.html OUT.png`.

`make screenshot` takes the demo campaign's (out/demo.report.html) into docs/campaign-page.png,
which the README shows. Playwright drives /usr/bin/chromium; it never downloads a browser.
"""

from __future__ import annotations

import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

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


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    page_path, out = Path(argv[0]).resolve(), Path(argv[1])
    out.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page(viewport={"width": 1100, "height": 900}, device_scale_factor=1)
        page.goto(page_path.as_uri(), wait_until="load")
        page.screenshot(path=str(out), full_page=True)
        browser.close()
    print(f"screenshot: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
