"""(8) Following calls: the live-call ceiling kept full, and what polling costs.

`dialer run` against a sandbox process whose calls live a known time (`--call-seconds`)
and which refuses a POST past `--max-live-calls` L, the campaign's `max_live_calls` L
too. From the sandbox's record: the time from the first accepted POST to the last
call's end against the ideal (sum of the calls' durations / L), the most calls live at
once (accepted POSTs up, `call.ended` down), GET requests per placed call; from the
journal: outcome latency (a call's end to its outcome committed).

A scaled run: calls of 2-4 s, polled every 0.25 s, stand for calls of 2-4 minutes
polled every 15 s (every ratio is the same; only the clock runs 60 times faster).
"""

from __future__ import annotations

import sqlite3
import statistics

from bench.data import campaign_toml, clean_leads_csv
from bench.measure import run_measured
from bench.results import Context, Section
from dialer.sandbox import SandboxOptions, read_events, read_record, spawn_process
from dialer.sandbox.options import parse_outcomes, parse_seconds


def _most_live(record: list[dict[str, object]], ended: list[dict[str, object]]) -> int:
    moves = [(float(str(r["time"])), 1) for r in record if r.get("method") == "POST" and r["status"] == 200]
    moves += [(float(str(e["time"])), -1) for e in ended]
    live = peak = 0
    for _, step in sorted(moves):
        live += step
        peak = max(peak, live)
    return peak


def run(ctx: Context) -> Section:
    section = Section("8 outcomes")
    live_limit = 5 if ctx.quick else 20
    leads = 15 if ctx.quick else 400
    seconds = "0.3:0.6" if ctx.quick else "2:4"
    poll = 0.05 if ctx.quick else 0.25
    folder = ctx.work / "outcomes"
    folder.mkdir(parents=True, exist_ok=True)
    record_path = folder / "record.jsonl"
    record_path.unlink(missing_ok=True)
    csv_path = clean_leads_csv(folder / f"clean_{leads}.csv", leads)
    section.details.update(leads=leads, max_live_calls=live_limit, call_seconds=seconds, poll_seconds=poll)
    sandbox = spawn_process(
        SandboxOptions(
            api_key=ctx.key,
            record=record_path,
            call_seconds=parse_seconds(seconds),
            max_live_calls=live_limit,
            outcomes=parse_outcomes("completed=0.6,no-answer=0.25,busy=0.05,hangup_on_voicemail=0.1"),
            seed=6,
        )
    )
    try:
        campaign = campaign_toml(
            folder / "outcomes.toml",
            name="outcomes",
            leads=csv_path,
            rate=20,
            concurrency=10,
            base_url=sandbox.url,
        )
        text = campaign.read_text().replace(
            "max_attempts = 4\n", f"max_attempts = 4\nmax_live_calls = {live_limit}\n"
        )
        campaign.write_text(text + f"\n[outcomes]\npoll_seconds = {poll}\n")
        campaign.with_suffix(".sqlite").unlink(missing_ok=True)
        done = run_measured(
            ctx.dialer("run", str(campaign), "--log-format", "json"),
            env=ctx.env(),
            out_dir=ctx.logs,
            name="outcomes",
        )
        section.details["exit_code"] = done.returncode
    finally:
        sandbox.stop()
    record = read_record(record_path)
    ended = read_events(record_path)
    accepted = [r for r in record if r.get("method") == "POST" and r["status"] == 200]
    gets = [r for r in record if r.get("method") == "GET"]
    refused = [r for r in record if r.get("method") == "POST" and r["status"] == 429]
    ideal = sum(float(e["duration"]) for e in ended) / live_limit
    took = max(float(e["time"]) for e in ended) - min(float(r["time"]) for r in accepted)
    conn = sqlite3.connect(campaign.with_suffix(".sqlite"))
    seen_at = dict(conn.execute("SELECT call_id, ended_at FROM calls WHERE final = 1").fetchall())
    conn.close()
    latency = [float(seen_at[e["call_id"]]) - float(e["time"]) for e in ended if e["call_id"] in seen_at]
    most = _most_live(record, ended)
    section.add(
        "calls placed / ended", len(accepted), "calls", f"{leads} / {len(ended)}", len(ended) == leads
    )
    section.add("most calls live at once", most, "calls", f"<= {live_limit}", most <= live_limit)
    section.add("POSTs refused 429 (concurrency)", len(refused), "requests", "0", not refused)
    section.add("time to finish / ideal", took / ideal, "x", "<= 1.10", took / ideal <= 1.10)
    per_call = len(gets) / max(1, len(accepted))
    section.add("GET requests per placed call", per_call, "x", "well under 1", per_call < 1)
    if latency:
        section.add("outcome latency, median", statistics.median(latency), "s", f"~ poll/2 = {poll / 2:g} s")
        section.add("outcome latency, max", max(latency), "s", f"~ poll = {poll:g} s")
    section.details.update(seconds=took, ideal_seconds=ideal, gets=len(gets), placed=len(accepted))
    return section
