"""(1) The dialer's own ceiling: `dialer run` with no rate limit against the sandbox.

Beside it, in the same run and against the same sandbox process: a bare httpx
asyncio loop posting the same bodies with the same concurrency (what the dialer
could at best reach with its HTTP client), and a raw-socket client (what the
sandbox itself can serve, so that it is known not to be the bottleneck). Every
rate is measured by the sandbox: its record's arrival times, first to last POST.
The sandbox's CPU use in each phase shows how close it came to its own limit.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from bench.data import campaign_toml, clean_leads_csv, reset_journal
from bench.measure import cpu_seconds, rate_of, read_posts, run_measured
from bench.results import Context, Section
from dialer.sandbox import SandboxOptions, spawn_process


def run(ctx: Context) -> Section:
    section = Section("1 ceiling")
    leads = 300 if ctx.quick else 5000
    concurrencies = (4,) if ctx.quick else (10, 50)
    rounds = 1 if ctx.quick else 3
    shares: dict[str, float] = {}
    folder = ctx.work / "ceiling"
    folder.mkdir(parents=True, exist_ok=True)
    csv_path = clean_leads_csv(folder / f"clean_{leads}.csv", leads)
    record = folder / "record.jsonl"
    record.unlink(missing_ok=True)
    section.details.update(leads=leads, concurrency=list(concurrencies))
    sandbox = spawn_process(SandboxOptions(api_key=ctx.key, record=record))
    assert sandbox.pid is not None
    offset = 0
    try:
        for concurrency in concurrencies:
            campaign = campaign_toml(
                folder / f"ceiling_c{concurrency}.toml",
                name=f"ceiling-c{concurrency}",
                leads=csv_path,
                rate=100_000,
                concurrency=concurrency,
            )
            reset_journal(campaign)
            phases = {
                "dialer run": ctx.dialer(
                    "run", str(campaign), "--base-url", sandbox.url, "--log-format", "json"
                ),
                "bare httpx": ctx.step("bare", str(campaign), sandbox.url, "--concurrency", str(concurrency)),
                "raw sockets": ctx.step("raw", str(campaign), sandbox.url, "--concurrency", str(concurrency)),
            }
            # The machine is shared and noisy: alternate the phases, take each one's median.
            samples: dict[str, list[float]] = {phase: [] for phase in phases}
            for round_no in range(rounds):
                for phase, argv in phases.items():
                    if phase == "dialer run":
                        reset_journal(campaign)
                    cpu0, t0 = cpu_seconds(sandbox.pid), time.perf_counter()
                    measured = run_measured(
                        argv,
                        env=ctx.env(),
                        out_dir=ctx.logs,
                        name=f"ceiling-c{concurrency}-{phase.replace(' ', '-')}-{round_no}",
                    ).check()
                    sandbox_cpu = cpu_seconds(sandbox.pid) - cpu0
                    elapsed = time.perf_counter() - t0
                    posts, offset = _settled_posts(record, offset, leads)
                    times = [p["time"] for p in posts]
                    samples[phase].append(rate_of(times))
                    busy = sandbox_cpu / (times[-1] - times[0]) if len(times) > 1 else 0.0
                    section.details[f"c{concurrency} {phase} round {round_no}"] = {
                        "posts": len(posts),
                        "rate": samples[phase][-1],
                        "statuses": sorted({p["status"] for p in posts}),
                        "sandbox_cpu_share": busy,
                        "sandbox_cpu_seconds": sandbox_cpu,
                        "process_wall": measured.wall,
                        "process_cpu_seconds": measured.cpu_seconds,
                        "phase_seconds": elapsed,
                    }
                    if round_no == rounds - 1:
                        shares[phase] = busy
            rates = {phase: statistics.median(values) for phase, values in samples.items()}
            for phase in phases:
                section.add(
                    f"{phase}, concurrency {concurrency} (median of {rounds})",
                    rates[phase],
                    "req/s",
                )
                section.add(
                    f"  sandbox CPU while serving {phase} (c={concurrency})",
                    100 * shares[phase],
                    "%",
                )
            ratio = rates["dialer run"] / rates["bare httpx"] if rates["bare httpx"] else 0.0
            section.add(
                f"dialer / bare httpx, concurrency {concurrency}",
                ratio,
                "x",
                ">= 0.80",
                ratio >= 0.8,
            )
            section.add(
                f"sandbox headroom: raw / bare httpx (c={concurrency})",
                rates["raw sockets"] / rates["bare httpx"] if rates["bare httpx"] else 0.0,
                "x",
                "> 1",
                rates["raw sockets"] > rates["bare httpx"],
            )
    finally:
        sandbox.stop()
    return section


def _settled_posts(record: Path, offset: int, expected: int) -> tuple[list[dict[str, Any]], int]:
    """The POSTs a phase made; waits briefly for the sandbox's last flushed lines."""
    posts: list[dict[str, Any]] = []
    deadline = time.monotonic() + 5
    while True:
        more, offset = read_posts(record, offset)
        posts += more
        if len(posts) >= expected or time.monotonic() > deadline:
            return posts, offset
        time.sleep(0.05)
