"""Single measured steps, each run by the benchmarks in a process of its own.

    python -m bench.step pandas FILE [--chunksize N]   read a CSV (or XLSX, with calamine) with pandas alone
    python -m bench.step load FILE                     the dialer's loader alone: every chunk of FILE
    python -m bench.step writer LIB ROWS OUT.xlsx      a typed XLSX report of ROWS rows, streamed by
                                                       LIB: xlsxwriter (the report's) or openpyxl
    python -m bench.step import CAMPAIGN.toml          import the leads into a new journal
    python -m bench.step settle CAMPAIGN.toml --due N  mark all but the last N dialable rows sent
    python -m bench.step bare CAMPAIGN.toml URL --concurrency C [--journal J]
                                                       the bare httpx loop
    python -m bench.step raw CAMPAIGN.toml URL --concurrency C [--journal J]
                                                       a raw-socket client: the sandbox's ceiling

Each prints one JSON object on stdout with what it measured from inside.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any


def _pandas(args: argparse.Namespace) -> dict[str, Any]:
    import pandas as pd

    t0 = time.perf_counter()
    rows = 0
    if args.file.endswith(".xlsx"):
        # pandas' own XLSX reader on calamine, the engine the dialer uses: the floor.
        rows = len(pd.read_excel(args.file, engine="calamine", dtype=object, na_filter=False))
        return {"rows": rows, "seconds": time.perf_counter() - t0}
    options: dict[str, Any] = {"dtype": object, "na_filter": False, "engine": "c"}
    if args.chunksize:
        with pd.read_csv(args.file, chunksize=args.chunksize, **options) as reader:
            for frame in reader:
                rows += len(frame)
    else:
        rows = len(pd.read_csv(args.file, **options))
    return {"rows": rows, "seconds": time.perf_counter() - t0}


def _load(args: argparse.Namespace) -> dict[str, Any]:
    from dialer.load import open_leads

    t0 = time.perf_counter()
    rows = sum(len(chunk.frame) for chunk in open_leads(Path(args.file)).read())
    return {"rows": rows, "seconds": time.perf_counter() - t0}


def _report_rows(rows: int) -> Any:
    from dialer import cells
    from dialer.model import Outcome

    for i in range(rows):
        yield (
            [
                "Liam",
                "Williams",
                cells.Number(14155550000 + i),
                "Umbrella",
                f"liam.{i}@example.com",
                "",
                cells.Date("2024-06-19"),
            ],
            Outcome("sent", f"call-{i}", "+14155550100", 1, "", "2024-06-03T16:00:00Z"),
        )


def _openpyxl_report(path: Path, headers: list[str], rows: Any) -> None:
    """The report's typed cells through openpyxl's write-only mode, for comparison."""
    from openpyxl import Workbook
    from openpyxl.cell import WriteOnlyCell

    from dialer import cells
    from dialer.report import report_headers

    book = Workbook(write_only=True)
    sheet = book.create_sheet("report")

    def text(value: str) -> Any:
        if not value:
            return None
        cell = WriteOnlyCell(sheet, value=value)
        cell.data_type = "s"  # never a formula
        return cell

    sheet.append([text(h) for h in report_headers(headers)])
    for values, outcome in rows:
        row: list[Any] = []
        for value in values:
            if type(value) is cells.Number:
                row.append(float(value))
            elif type(value) is cells.Date:
                cell = WriteOnlyCell(sheet, value=value.value())
                cell.number_format = "yyyy-mm-dd"
                row.append(cell)
            else:
                row.append(text(value))
        row += [text(outcome.status), text(outcome.id), text(outcome.from_number), outcome.attempts]
        row += [text(outcome.error), text(outcome.updated_at)]
        sheet.append(row)
    book.save(path)


def _writer(args: argparse.Namespace) -> dict[str, Any]:
    from dialer.report import write_report

    headers = ["First Name", "Last Name", "Phone Number", "Company", "E-mail", "Time Zone", "Signup Date"]
    t0 = time.perf_counter()
    if args.lib == "xlsxwriter":
        write_report(Path(args.out), headers, _report_rows(args.rows))
    else:
        _openpyxl_report(Path(args.out), headers, _report_rows(args.rows))
    return {"rows": args.rows, "seconds": time.perf_counter() - t0, "bytes": Path(args.out).stat().st_size}


def _import(args: argparse.Namespace) -> dict[str, Any]:
    from dialer.config import load_campaign
    from dialer.run import import_if_needed
    from dialer.store import Journal

    campaign = load_campaign(Path(args.campaign))
    t0 = time.perf_counter()
    journal = Journal(campaign.journal_path, campaign.name)
    try:
        summary = import_if_needed(campaign, journal, campaign.leads)
        counts = journal.counts()
    finally:
        journal.close()
    return {
        "seconds": time.perf_counter() - t0,
        "added": summary.added if summary else 0,
        "counts": counts,
    }


def _settle(args: argparse.Namespace) -> dict[str, Any]:
    from dialer.config import load_campaign

    return settle(load_campaign(Path(args.campaign)).journal_path, args.due)


def settle(journal: Path, due: int) -> dict[str, Any]:
    """As if earlier runs had dialed every row but the last `due` dialable ones."""
    conn = sqlite3.connect(journal, isolation_level=None)
    t0 = time.perf_counter()
    conn.execute("BEGIN IMMEDIATE")
    cutoff = conn.execute(
        "SELECT position FROM leads WHERE status IN ('pending', 'deferred')"
        " AND position IS NOT NULL ORDER BY position DESC LIMIT 1 OFFSET ?",
        (due,),
    ).fetchone()
    changed = 0
    if cutoff is not None:
        changed = conn.execute(
            "UPDATE leads SET status = 'sent', attempts = 1, call_id = 'bench-' || id,"
            " intent_at = 0 WHERE status IN ('pending', 'deferred') AND position <= ?",
            (cutoff[0],),
        ).rowcount
    conn.execute("COMMIT")
    counts = dict(conn.execute("SELECT status, count(*) FROM leads GROUP BY status").fetchall())
    conn.close()
    return {"seconds": time.perf_counter() - t0, "marked_sent": changed, "counts": counts}


def _bodies(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The request bodies the dialer sent (or would send): call_body over the journal's rows."""
    from dialer.client import call_body
    from dialer.config import load_campaign
    from dialer.model import Status
    from dialer.store import Journal

    campaign = load_campaign(Path(args.campaign))
    journal = Journal(Path(args.journal) if args.journal else campaign.journal_path, campaign.name)
    try:
        rows = journal.rows_with_status(
            {Status.PENDING, Status.DEFERRED, Status.SENT, Status.UNKNOWN, Status.FAILED}
        )
        return [call_body(campaign, row, "") for row in rows]
    finally:
        journal.close()


async def _bare_loop(url: str, key: str, bodies: list[dict[str, Any]], concurrency: int) -> float:
    import httpx

    # The same client settings as dialer.client.SynthflowClient.
    client = httpx.AsyncClient(
        base_url=url,
        headers={"Authorization": f"Bearer {key}"},
        timeout=httpx.Timeout(30.0, connect=10.0),
        limits=httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4),
    )
    queue = iter(bodies)
    failures = 0

    async def worker() -> None:
        nonlocal failures
        for body in queue:
            response = await client.post("/v2/calls", json=body)
            if response.status_code != 200:
                failures += 1

    t0 = time.perf_counter()
    async with client:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    if failures:
        raise SystemExit(f"{failures} requests were not answered 200")
    return time.perf_counter() - t0


def _bare(args: argparse.Namespace) -> dict[str, Any]:
    bodies = _bodies(args)
    seconds = asyncio.run(_bare_loop(args.url, os.environ["SYNTHFLOW_API_KEY"], bodies, args.concurrency))
    return {"requests": len(bodies), "seconds": seconds, "rate": len(bodies) / seconds}


async def _raw_loop(url: str, key: str, bodies: list[dict[str, Any]], concurrency: int) -> float:
    """Keep-alive HTTP/1.1 over plain asyncio streams, request bytes made in advance."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    requests = []
    for body in bodies:
        data = json.dumps(body, separators=(",", ":")).encode()
        head = (
            f"POST /v2/calls HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
        )
        requests.append(head.encode() + data)
    queue = iter(requests)

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        for request in queue:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200"):
                raise SystemExit(f"answer {head[:40]!r}")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
        writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - t0


def _raw(args: argparse.Namespace) -> dict[str, Any]:
    bodies = _bodies(args)
    seconds = asyncio.run(_raw_loop(args.url, os.environ["SYNTHFLOW_API_KEY"], bodies, args.concurrency))
    return {"requests": len(bodies), "seconds": seconds, "rate": len(bodies) / seconds}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.step")
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("pandas")
    p.add_argument("file")
    p.add_argument("--chunksize", type=int, default=0)
    p.set_defaults(func=_pandas)
    p = sub.add_parser("load")
    p.add_argument("file")
    p.set_defaults(func=_load)
    p = sub.add_parser("writer")
    p.add_argument("lib", choices=["xlsxwriter", "openpyxl"])
    p.add_argument("rows", type=int)
    p.add_argument("out")
    p.set_defaults(func=_writer)
    p = sub.add_parser("import")
    p.add_argument("campaign")
    p.set_defaults(func=_import)
    p = sub.add_parser("settle")
    p.add_argument("campaign")
    p.add_argument("--due", type=int, required=True)
    p.set_defaults(func=_settle)
    for name, func in (("bare", _bare), ("raw", _raw)):
        p = sub.add_parser(name)
        p.add_argument("campaign")
        p.add_argument("url")
        p.add_argument("--concurrency", type=int, required=True)
        p.add_argument("--journal")
        p.set_defaults(func=func)
    args = parser.parse_args(argv)
    json.dump(args.func(args), sys.stdout)
    print()


if __name__ == "__main__":
    main()
