"""(9) Redials: calls per lead against the policy's exact allowance, and time to finish.

A campaign of a few thousand leads against a sandbox process whose calls end at once with
a realistic mix (30% no-answer, 10% busy, 10% hangup_on_voicemail, the rest completed),
`[redial]` with short waits (seconds standing for hours), `max_calls = 3`. `dialer run` is
started again as cron would, as soon as the one before exits, until it exits 0 (no redial
left). The sandbox's record is the witness: calls placed per lead must equal the allowance
`fate()` predicts (the first call, then one more while the call before ended a redialed
status and calls are left), lead by lead.
"""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from datetime import UTC, datetime

from bench.data import campaign_toml, clean_leads_csv
from bench.results import Context, Section
from dialer.bookkeeping import CLOCK_SHIFT_ENV
from dialer.sandbox import SandboxOptions, fate, read_record, spawn_process
from dialer.sandbox.options import parse_outcomes

WAITS = {"no-answer": 2.0, "busy": 3.0, "hangup_on_voicemail": 2.0}
MAX_CALLS = 3
MIX = "completed=0.5,no-answer=0.3,busy=0.1,hangup_on_voicemail=0.1"


def _allowance(options: SandboxOptions, phone: str) -> int:
    calls = 1
    while calls < MAX_CALLS and fate(options.seed, phone, calls, options).status in WAITS:
        calls += 1
    return calls


def run(ctx: Context) -> Section:
    section = Section("10 redial")
    leads = 60 if ctx.quick else 3000
    folder = ctx.work / "redial"
    folder.mkdir(parents=True, exist_ok=True)
    record_path = folder / "record.jsonl"
    record_path.unlink(missing_ok=True)
    csv_path = clean_leads_csv(folder / f"clean_{leads}.csv", leads)
    options = SandboxOptions(api_key=ctx.key, record=record_path, outcomes=parse_outcomes(MIX), seed=13)
    section.details.update(leads=leads, mix=MIX, waits=WAITS, max_calls=MAX_CALLS)
    sandbox = spawn_process(options)
    runs = 0
    try:
        campaign = campaign_toml(
            folder / "redial.toml",
            name="redial",
            leads=csv_path,
            rate=100,
            concurrency=10,
            base_url=sandbox.url,
        )
        waits = "".join(f'{status} = "{seconds:g}s"\n' for status, seconds in WAITS.items())
        campaign.write_text(
            campaign.read_text()
            + f"\n[outcomes]\npoll_seconds = 0.2\n\n[redial]\n{waits}max_calls = {MAX_CALLS}\n"
        )
        for suffix in (".sqlite", ".sqlite-wal", ".sqlite-shm", ".report.csv"):
            campaign.with_suffix(suffix).unlink(missing_ok=True)
        env = ctx.env()
        # The run's clock at 20:00 UTC today: inside the law's window for New York's numbers.
        now = datetime.now(UTC)
        env[CLOCK_SHIFT_ENV] = repr((now.replace(hour=20, minute=0, second=0) - now).total_seconds())
        started = time.perf_counter()
        code = 75
        while code == 75 and runs < 200:
            runs += 1
            done = subprocess.run(
                ctx.dialer("run", str(campaign), "--log-format", "json"),
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            code = done.returncode
            if code == 75:
                time.sleep(0.5)  # cron's next tick, scaled: the redials' waits are seconds
        took = time.perf_counter() - started
        section.details["exit_code"] = code
    finally:
        sandbox.stop()
    placed = Counter(
        str(r["body"]["phone"])
        for r in read_record(record_path)
        if r.get("method") == "POST" and r["path"] == "/v2/calls" and r["status"] == 200
    )
    exact = {phone: _allowance(options, phone) for phone in placed}
    off = sum(1 for phone in placed if placed[phone] != exact[phone])
    calls = sum(placed.values())
    section.add("leads called", len(placed), "leads", f"{leads}", len(placed) == leads)
    allowed = sum(exact.values())
    section.add("calls placed (all leads)", calls, "calls", f"= the allowance, {allowed}", calls == allowed)
    section.add("leads whose calls differ from the allowance", off, "leads", "0", off == 0)
    section.add("runs until none was left (exit 0)", runs, "runs", "", code == 0)
    section.add("time to finish", took, "s", "")
    section.details.update(seconds=took, runs=runs, calls=calls, off=off)
    return section
