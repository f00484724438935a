"""`python -m bench` (`make bench`): run the benchmarks, print one table, write out/bench.json.

python -m bench                       everything, with a 1,000,000-row file
python -m bench --rows 200000         a smaller big file
python -m bench --only ceiling,pacing some of: ceiling, validate, resume, pacing, sandbox,
                                      sheets, page, outcomes, postgres, redial
python -m bench --quick               tiny sizes, a few seconds each (the smoke test)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench import bigfile, ceiling, outcomes, pacing, page, postgres, redial, sandbox_store, sheets
from bench.results import Context, Section

BENCHES = {
    "ceiling": ceiling.run,
    "validate": bigfile.validate,
    "resume": bigfile.import_and_resume,
    "pacing": pacing.run,
    "sandbox": sandbox_store.run,
    "sheets": sheets.run,
    "page": page.run,
    "outcomes": outcomes.run,
    "postgres": postgres.run,
    "redial": redial.run,
}


def _machine() -> dict[str, Any]:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": cpus,
        "cpu": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": os.getloadavg(),
    }


def table(sections: list[Section], title: str) -> Table:
    grid = Table(title=title, show_edge=False)
    grid.add_column("bench")
    grid.add_column("measure")
    grid.add_column("value", justify="right")
    grid.add_column("target")
    grid.add_column("ok")
    for section in sections:
        for index, row in enumerate(section.rows):
            ok = "" if row.ok is None else ("yes" if row.ok else "NO")
            grid.add_row(section.name if index == 0 else "", row.measure, row.shown(), row.target, ok)
        grid.add_section()
    return grid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--rows", type=int, default=None, help="rows of the big CSV (default 1,000,000; 2,000 with --quick)"
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for smoke tests")
    parser.add_argument(
        "--only", default=",".join(BENCHES), help=f"comma-separated, of: {', '.join(BENCHES)}"
    )
    parser.add_argument("--out", type=Path, default=Path("out/bench.json"))
    parser.add_argument(
        "--work", type=Path, default=None, help="folder for generated files and logs (default: beside --out)"
    )
    args = parser.parse_args(argv)
    rows = args.rows or (2000 if args.quick else 1_000_000)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in BENCHES]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHES)}")
    work = (args.work or args.out.parent / "bench").resolve()
    work.mkdir(parents=True, exist_ok=True)
    ctx = Context(work=work, rows=rows, quick=args.quick)
    console = Console(width=120)
    sections: list[Section] = []
    timings: dict[str, float] = {}
    for name in chosen:
        console.print(f"[dim]running {name}...[/dim]")
        t0 = time.perf_counter()
        sections.append(BENCHES[name](ctx))
        timings[name] = time.perf_counter() - t0
    machine = _machine()
    title = f"dialer bench: {machine['cpus']} CPUs, Python {machine['python']}, rows={rows:,}"
    console.print(table(sections, title))
    report = {
        "machine": machine,
        "load_average_at_end": os.getloadavg(),
        "command": " ".join([Path(sys.executable).name, "-m", "bench", *sys.argv[1:]]),
        "rows": rows,
        "quick": args.quick,
        "bench_seconds": timings,
        "results": {s.name: s.as_json() for s in sections},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
