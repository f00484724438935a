"""(7) The campaign page of a big campaign: `dialer report X.toml --out X.html` on a journal
of `--rows` leads (a million by default) with about 1.5 calls per lead, a tenth of the
rows failed or invalid, at a tenth, a quarter and all of the size: the time should grow
with the rows (the aggregates are SQL), and the memory stay flat.

The journal is written directly in SQL (a recursive CTE: a million rows in seconds), in
the schema the dialer itself creates, so no sandbox run is needed to measure the page.

Then the largest journal is copied into PostgreSQL (`dialer migrate`'s copy, on a throwaway
cluster of tests/pg.py, ANALYZEd as autovacuum would soon do) and its page written again
from there: the time, and whether the page is the same as SQLite's (its footer aside).
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

from bench.data import campaign_toml
from bench.measure import run_measured
from bench.results import Context, Section
from dialer.store import Journal

T0 = 1_800_000_000.0  # calls placed from here, one every 0.2 s
ZONES = ("America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles", "Asia/Kolkata")
CALLERS = ("+14155550100", "+12125550100", "+13125550100", "+17135550100")
STATUSES = ("completed", "no-answer", "busy", "hangup_on_voicemail", "completed", "failed")
ERRORS = (
    "invalid phone number '555-0{n}': too short",
    'unknown time zone "Mars/Base{n}" (use an IANA name like America/New_York)',
)


def fill_journal(path: Path, rows: int) -> None:
    """A journal with `rows` leads, their calls (1-3 per sent lead) and their failures."""
    for stale in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        stale.unlink(missing_ok=True)
    Journal(path, "bench-page").close()  # the schema, as the dialer makes it
    conn = sqlite3.connect(path)
    zones = " ".join(f"WHEN {i} THEN '{z}'" for i, z in enumerate(ZONES))
    callers = " ".join(f"WHEN {i} THEN '{c}'" for i, c in enumerate(CALLERS))
    statuses = " ".join(f"WHEN {i} THEN '{s}'" for i, s in enumerate(STATUSES))
    with conn:
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)"
            " INSERT INTO leads (id, position, fingerprint, raw, phone, name, email, timezones, variables,"
            " status, error, call_id, from_number, attempts, intent_at, updated_at)"
            " SELECT i, i + 1, 'f' || i, '[]', '+1415' || printf('%07d', i), '', '',"
            f" CASE i % {len(ZONES)} {zones} END, '{{}}',"
            " CASE WHEN i % 20 = 0 THEN 'invalid' WHEN i % 20 = 1 THEN 'failed' ELSE 'sent' END,"
            " CASE WHEN i % 20 = 0 THEN (CASE WHEN i % 40 = 0 THEN ? ELSE ? END)"
            " WHEN i % 20 = 1 THEN 'refused by the API: 400 {\"detail\": \"bad number ' || i || '\"}'"
            " ELSE '' END,"
            " CASE WHEN i % 20 > 1 THEN 'c' || i || '-' || (1 + i % 3) ELSE '' END,"
            f" CASE i % {len(CALLERS)} {callers} END, 1, ? + i * 0.2, '2027-01-15T08:00:00Z' FROM n",
            (rows, *ERRORS, T0),
        )
        conn.execute("UPDATE leads SET error = replace(error, '{n}', id) WHERE status = 'invalid'")
        conn.execute(
            "WITH RECURSIVE k(o) AS (SELECT 1 UNION ALL SELECT o + 1 FROM k WHERE o < 3)"
            " INSERT INTO calls (call_id, lead_id, ordinal, from_number, placed_at, status, final, timed_out,"
            " ended_at, duration)"
            " SELECT 'c' || id || '-' || o, id, o, from_number, intent_at + (o - 1) * 7200,"
            f" CASE (id + o) % {len(STATUSES)} {statuses} END, 1, 0, intent_at + 60,"
            f" CASE WHEN (id + o) % {len(STATUSES)} IN (0, 4) THEN 30 + id % 200 ELSE 0 END"
            " FROM leads JOIN k ON k.o <= 1 + id % 3 WHERE status = 'sent'"
        )
        conn.execute(
            "INSERT OR REPLACE INTO number_usage SELECT from_number, date(placed_at, 'unixepoch'), count(*)"
            " FROM calls GROUP BY 1, 2"
        )
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('headers', '[]')")
        conn.execute(
            "INSERT OR REPLACE INTO meta VALUES ('signature', ?)",
            (json.dumps({"size": 0, "mtime_ns": 0, "sha256": ""}),),
        )
    conn.close()


def run(ctx: Context) -> Section:
    section = Section("7 page")
    folder = ctx.work / "page"
    folder.mkdir(parents=True, exist_ok=True)
    sizes = [ctx.rows] if ctx.quick else sorted({max(1, ctx.rows // 10), max(1, ctx.rows // 4), ctx.rows})
    peaks: dict[int, float] = {}
    for rows in sizes:
        campaign = campaign_toml(
            folder / f"page_{rows}.toml", name="bench-page", leads=folder / "none.csv", rate=5, concurrency=10
        )
        fill_journal(campaign.with_suffix(".sqlite"), rows)
        page = folder / f"page_{rows}.html"
        measured = run_measured(
            ctx.dialer("report", str(campaign), "--out", str(page)),
            env=ctx.env(),
            out_dir=ctx.logs,
            name=f"page-{rows}",
        ).check()
        peaks[rows] = measured.tree_rss_mib
        section.details[f"page {rows}"] = {
            "wall": measured.wall,
            "cpu_seconds": measured.cpu_seconds,
            "peak_rss_mib": measured.peak_rss_mib,
            "page_bytes": page.stat().st_size,
        }
        if rows == ctx.rows:
            target = "< 10 s" if rows >= 1_000_000 else ""
            section.add(
                f"dialer report --out page.html, {rows:,} rows",
                measured.wall,
                "s",
                target,
                measured.wall < 10 if target else None,
            )
            section.add(
                "  CPU time (user + system; the wall time depends on the machine's load)",
                measured.cpu_seconds,
                "s",
            )
            section.add("  page size", page.stat().st_size / 1024, "KiB")
    _postgres(ctx, folder, section, max(sizes))
    smallest, largest = min(peaks), max(peaks)
    for rows in sorted(peaks):
        section.add(f"  peak memory, {rows:,} rows", peaks[rows], "MiB")
    if largest != smallest:
        growth = peaks[largest] / max(peaks[smallest], 1.0)
        section.add(
            f"  memory growth {smallest:,} -> {largest:,} rows", growth, "x", "< 1.5 (flat)", growth < 1.5
        )
    return section


def _postgres(ctx: Context, folder: Path, section: Section, rows: int) -> None:
    """The page of the `rows` campaign from a PostgreSQL journal: its time, and the same page."""
    import psycopg

    from dialer.store.moving import copy_to_postgres
    from dialer.store.pgurl import schema_name
    from tests.pg import MissingPostgres, start_server, stop_server

    try:
        server, owner = start_server()
    except MissingPostgres as exc:
        section.add(str(exc), 0, "", "binaries present", False)
        return
    try:
        url = server.new_database()
        toml = folder / f"page_{rows}.toml"
        copy_to_postgres(toml.with_suffix(".sqlite"), "bench-page", url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'ANALYZE "{schema_name("bench-page")}".calls'.encode())
            conn.execute(f'ANALYZE "{schema_name("bench-page")}".leads'.encode())
        pg_toml = folder / f"page_{rows}_pg.toml"
        text = toml.read_text()
        pg_toml.write_text(re.sub(r'^journal = ".*"$', f'journal = "{url}"', text, count=1, flags=re.M))
        page = folder / f"page_{rows}_pg.html"
        measured = run_measured(
            ctx.dialer("report", str(pg_toml), "--out", str(page)),
            env=ctx.env(),
            out_dir=ctx.logs,
            name="page-pg",
        ).check()
        section.details[f"page {rows} postgresql"] = {
            "wall": measured.wall,
            "cpu_seconds": measured.cpu_seconds,
            "peak_rss_mib": measured.peak_rss_mib,
        }
        section.add(f"  the same page from PostgreSQL, {rows:,} rows", measured.wall, "s")
        section.add("    CPU time of dialer (the server's own is not counted)", measured.cpu_seconds, "s")
        same = _without_footer(page) == _without_footer(folder / f"page_{rows}.html")
        section.add("    the same page as from SQLite (footer aside)", float(same), "", "1", same)
    finally:
        stop_server(server, owner)


def _without_footer(page: Path) -> str:
    return re.sub(r"<footer>.*?</footer>", "", page.read_text(), flags=re.S)
