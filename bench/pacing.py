"""(4) Pacing, measured by the sandbox's record: at several configured rates, the
achieved rate and the most requests in any 1-second window; and against a lower
hidden limit (the sandbox answers 429 beyond it), the time to finish compared
with the ideal of sending at exactly that limit, and the number of 429s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.data import campaign_toml, clean_leads_csv, reset_journal
from bench.measure import peak_window, rate_of, read_posts, run_measured
from bench.results import Context, Section
from dialer.sandbox import SandboxOptions, spawn_process


def run(ctx: Context) -> Section:
    section = Section("4 pacing")
    folder = ctx.work / "pacing"
    folder.mkdir(parents=True, exist_ok=True)
    seconds = 1.5 if ctx.quick else 6.0
    rates = (20,) if ctx.quick else (5, 20, 100)
    hidden = (30, 10, 20) if ctx.quick else (60, 20, 400)  # configured, hidden limit, leads
    for rate in rates:
        leads = max(10, int(rate * seconds))
        posts = _campaign_run(ctx, folder, f"pacing-{rate}", rate, leads, None)
        times = [p["time"] for p in posts]
        peak = peak_window(times)
        section.details[f"rate {rate}"] = {
            "leads": leads,
            "posts": len(posts),
            "achieved": rate_of(times),
            "peak_1s": peak,
        }
        section.add(f"configured {rate}/s: achieved", rate_of(times), "/s")
        section.add(f"  configured {rate}/s: most requests in any 1 s", peak, "", f"<= {rate}", peak <= rate)
    configured, limit, leads = hidden
    posts = _campaign_run(ctx, folder, "pacing-hidden", configured, leads, limit)
    accepted = [p["time"] for p in posts if p["status"] == 200]
    throttled = sum(1 for p in posts if p["status"] == 429)
    start = min(p["time"] for p in posts)
    took = max(accepted) - start
    ideal = (leads - 1) / limit
    section.details["hidden limit"] = {
        "configured": configured,
        "limit": limit,
        "leads": leads,
        "posts": len(posts),
        "accepted": len(accepted),
        "throttled": throttled,
        "seconds": took,
        "ideal": ideal,
        "peak_1s_sent": peak_window([p["time"] for p in posts]),
    }
    label = f"configured {configured}/s, hidden limit {limit}/s, {leads} leads"
    section.add(f"{label}: time to finish", took, "s")
    section.add(f"  ideal at exactly {limit}/s", ideal, "s")
    section.add("  time / ideal", took / ideal if ideal else 0.0, "x")
    section.add("  429 answers", throttled, "")
    section.add("  rows accepted", len(accepted), "", f"= {leads}", len(accepted) == leads)
    return section


def _campaign_run(
    ctx: Context, folder: Path, name: str, rate: float, leads: int, limit: int | None
) -> list[dict[str, Any]]:
    csv_path = clean_leads_csv(folder / f"clean_{leads}.csv", leads)
    campaign = campaign_toml(folder / f"{name}.toml", name=name, leads=csv_path, rate=rate, concurrency=10)
    reset_journal(campaign)
    record = folder / f"{name}.record.jsonl"
    record.unlink(missing_ok=True)
    with spawn_process(SandboxOptions(api_key=ctx.key, record=record, rate_limit=limit)) as box:
        run_measured(
            ctx.dialer("run", str(campaign), "--base-url", box.url, "--log-format", "json"),
            env=ctx.env(),
            out_dir=ctx.logs,
            name=name,
        ).check()
    return read_posts(record)[0]
