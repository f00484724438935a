"""(8) PostgreSQL: claims per second, and the shared rate bound read from the sandbox's record.

A throwaway PostgreSQL 15 cluster (tests/pg.py) is started for the section and
stopped after it. Measured:
  - claims per second: one run taking every row of a campaign, ten at a time
    (`Claims.claim_dialable`: FOR UPDATE SKIP LOCKED, lease written);
  - three `dialer run` processes on one campaign: the most requests in any 1 s
    window against the campaign's rate, and one call per lead;
  - two campaigns naming one account: the most in any 1 s against the account's rate;
  - two campaigns naming one account with `max_live_calls`, calls that live (the sandbox's
    `--call-seconds`): the most calls live at once from the record (accepted POSTs up,
    `call.ended` down) against the limit, and the time taken against the ideal (the sum of
    the calls' durations / the limit).
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any

from bench.data import campaign_toml, clean_leads_csv
from bench.measure import peak_window, rate_of, read_posts, run_measured
from bench.results import Context, Section
from dialer.sandbox import SandboxOptions, read_events, read_record, spawn_process
from tests.pg import MissingPostgres, PgServer, start_server, stop_server


def run(ctx: Context) -> Section:
    section = Section("9 postgresql")
    try:
        server, owner = start_server()
    except MissingPostgres as exc:
        section.add(str(exc), 0, "", "binaries present", False)
        return section
    try:
        folder = ctx.work / "postgres"
        folder.mkdir(parents=True, exist_ok=True)
        _claims(ctx, server, section)
        rate = 10 if ctx.quick else 20
        leads = rate * (2 if ctx.quick else 6)
        posts = _parallel(ctx, folder, server, [("one", rate, None)] * 3, leads)
        phones = [p["body"]["phone"] for p in posts if p["status"] == 200]
        peak = peak_window([p["time"] for p in posts])
        section.details["three runs, one campaign"] = {"rate": rate, "leads": leads, "posts": len(posts)}
        section.add(f"3 runs, 1 campaign at {rate}/s: achieved", rate_of([p["time"] for p in posts]), "/s")
        section.add("  most requests in any 1 s", peak, "", f"<= {rate}", peak <= rate)
        section.add(
            "  calls per lead", len(phones) / leads, "", "= 1", len(phones) == len(set(phones)) == leads
        )
        account = rate // 2
        posts = _parallel(ctx, folder, server, [("a", rate, account), ("b", rate, account)], leads // 2)
        peak = peak_window([p["time"] for p in posts])
        section.add(
            f"2 campaigns at {rate}/s, account {account}/s: achieved",
            rate_of([p["time"] for p in posts]),
            "/s",
        )
        section.add("  most requests in any 1 s", peak, "", f"<= {account}", peak <= account)
        _live(ctx, folder, server, section)
    finally:
        stop_server(server, owner)
    return section


def _claims(ctx: Context, server: PgServer, section: Section) -> None:
    from dialer.columns import ColumnMap
    from dialer.model import Lead, Status
    from dialer.store.postgres import PgJournal

    rows = 2000 if ctx.quick else 50_000
    journal = PgJournal(server.new_database(), "claims")
    columns = ColumnMap(phone="Phone", name=("Name",), timezone=None, email=None, variables=())
    leads = (
        Lead(row=i + 2, values=(f"L{i}", f"+1212555{i:04d}"), status=Status.PENDING, phone=f"+1212{i:07d}")
        for i in range(rows)
    )
    journal.import_leads(["Name", "Phone"], columns, leads, {"sha256": "bench"})
    claims = journal.claims(30.0)
    taken = 0
    t0 = time.perf_counter()
    while batch := claims.claim_dialable(10):
        taken += len(batch)
    took = time.perf_counter() - t0
    journal.close()
    section.details["claims"] = {"rows": rows, "seconds": took}
    section.add(
        f"claims per second ({rows:,} rows, 10 a transaction)",
        taken / took,
        "/s",
        ">= 1000",
        taken / took >= 1000,
    )


def _live(ctx: Context, folder: Path, server: PgServer, section: Section) -> None:
    """Two campaigns on one account whose live calls are limited: the record's most live."""
    limit = 3 if ctx.quick else 6
    leads = 10 if ctx.quick else 60
    seconds = "0.3:0.6" if ctx.quick else "1:2"
    account = f'\n[account]\nname = "bench-live"\nmax_live_calls = {limit}\n[outcomes]\npoll_seconds = 0.1\n'
    record = _parallel_record(
        ctx, folder, server, [("a", 10, None), ("b", 10, None)], leads, account, {"call_seconds": seconds}
    )
    lines = read_record(record)
    ended = read_events(record)
    placed = [float(r["time"]) for r in lines if r.get("method") == "POST" and r["status"] == 200]
    moves = sorted([(t, 1) for t in placed] + [(float(e["time"]), -1) for e in ended])
    live = most = 0
    for _, step in moves:  # at one moment, ends (-1) sort before placements
        live += step
        most = max(most, live)
    took = max(float(e["time"]) for e in ended) - min(placed)
    ideal = sum(float(e["duration"]) for e in ended) / limit
    section.details["two campaigns, one account's live calls"] = {
        "limit": limit,
        "calls": len(placed),
        "call_seconds": seconds,
        "seconds": took,
        "ideal_seconds": ideal,
    }
    section.add(
        f"2 campaigns, account max_live_calls {limit} ({len(placed)} calls, {seconds} s): most live",
        most,
        "",
        f"<= {limit}",
        most <= limit and len(placed) == 2 * leads,
    )
    section.add("  time against the ideal (durations / limit)", took / ideal, "x")


def _parallel(
    ctx: Context, folder: Path, server: PgServer, runs: list[tuple[str, float, int | None]], leads: int
) -> list[dict[str, Any]]:
    """`dialer run` processes side by side against one sandbox; its record's POSTs."""
    return read_posts(_parallel_record(ctx, folder, server, runs, leads))[0]


def _parallel_record(
    ctx: Context,
    folder: Path,
    server: PgServer,
    runs: list[tuple[str, float, int | None]],
    leads: int,
    extra: str = "",
    telephony: dict[str, Any] | None = None,
) -> Path:
    """`dialer run` processes side by side against one sandbox (`telephony`: its options),
    each campaign file with `extra` appended; the sandbox's record."""
    url = server.new_database()
    csv_path = clean_leads_csv(folder / f"clean_{leads}.csv", leads)
    record = folder / f"parallel-{time.monotonic_ns()}.record.jsonl"
    with spawn_process(SandboxOptions(api_key=ctx.key, record=record, **(telephony or {}))) as box:
        threads = []
        failures: list[BaseException] = []
        for index, (name, rate, account) in enumerate(runs):
            toml = campaign_toml(
                folder / f"{name}-{index}.toml", name=name, leads=csv_path, rate=rate, concurrency=8
            )
            text = re.sub(r'(?m)^journal = ".*"$', f'journal = "{url}"', toml.read_text())
            if account is not None:
                text += f'\n[account]\nname = "bench"\nrate_per_second = {account}\n'
            toml.write_text(text + extra)
            # A report left by an earlier bench would make a new journal refuse to start.
            toml.with_suffix(".report.csv").unlink(missing_ok=True)
            argv = ctx.dialer("run", str(toml), "--base-url", box.url, "--log-format", "json")
            threads.append(
                threading.Thread(target=_run_checked, args=(ctx, argv, f"postgres-{index}", failures))
            )
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    if failures:
        raise failures[0]
    return record


def _run_checked(ctx: Context, argv: list[str], name: str, failures: list[BaseException]) -> None:
    try:
        run_measured(argv, env=ctx.env(), out_dir=ctx.logs, name=name).check()
    except BaseException as exc:  # handed to the main thread, which raises it
        failures.append(exc)
