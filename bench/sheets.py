"""(5) The same leads as CSV and as XLSX, side by side: pandas' own read (the floor), the
dialer's loader alone, `dialer validate`, the first import, and the report of every row.

Each step is a process of its own (bench/measure.py): wall time and the peak PSS of
its process tree. The loader alone (open_leads and every chunk, no mapping) shows
what the mapping adds on top in validate; import minus validate is the journal's part.
"""

from __future__ import annotations

import json

from bench.data import campaign_toml, leads_xlsx, messy_leads_csv, reset_journal
from bench.measure import Measured, run_measured
from bench.results import Context, Section

MIB_TARGET = 300


def _step(ctx: Context, name: str, argv: list[str]) -> Measured:
    return run_measured(argv, env=ctx.env(), out_dir=ctx.logs, name=name).check()


def _inside(measured: Measured) -> float:
    """The seconds a bench.step measured from inside (no interpreter start, no imports)."""
    return float(json.loads(measured.stdout.strip().splitlines()[-1])["seconds"])


def run(ctx: Context) -> Section:
    section = Section("6 spreadsheets")
    folder = ctx.work / "bigfile"
    folder.mkdir(parents=True, exist_ok=True)
    files = {"CSV": messy_leads_csv(folder, ctx.rows)}
    files["XLSX"] = leads_xlsx(files["CSV"])
    section.details["file_bytes"] = {kind: path.stat().st_size for kind, path in files.items()}
    rows = f"{ctx.rows:,} rows"
    figures: dict[str, dict[str, float]] = {kind: {} for kind in files}
    for kind, path in files.items():
        floor = _step(ctx, f"sheets-pandas-{kind}", ctx.step("pandas", str(path)))
        loader = _step(ctx, f"sheets-load-{kind}", ctx.step("load", str(path)))
        campaign = campaign_toml(
            folder / f"sheets_{kind.lower()}.toml",
            name=f"bench-sheets-{kind.lower()}",
            leads=path,
            rate=5,
            concurrency=10,
        )
        validate = _step(ctx, f"sheets-validate-{kind}", ctx.dialer("validate", str(campaign)))
        reset_journal(campaign)
        imported = _step(ctx, f"sheets-import-{kind}", ctx.step("import", str(campaign)))
        figures[kind] = {
            "pandas": _inside(floor),
            "load": _inside(loader),
            "validate": validate.wall,
            "import": _inside(imported),
        }
        section.add(f"{kind} {rows}: pandas alone (the floor)", _inside(floor), "s")
        section.add(f"  dialer's loader alone ({kind})", _inside(loader), "s")
        section.add(
            f"  dialer validate ({kind}): wall",
            validate.wall,
            "s",
            "< 3x pandas",
            None if ctx.quick else validate.wall < 3 * _inside(floor),
        )
        section.add(
            f"  validate peak memory ({kind})",
            validate.tree_rss_mib,
            "MiB",
            f"< {MIB_TARGET}",
            validate.tree_rss_mib < MIB_TARGET,
        )
        section.add(
            f"  first import ({kind})",
            _inside(imported),
            "s",
            "< 10 s",
            None if ctx.quick else _inside(imported) < 10,
        )
        section.add(
            f"  import peak memory ({kind})",
            imported.tree_rss_mib,
            "MiB",
            f"< {MIB_TARGET}",
            imported.tree_rss_mib < MIB_TARGET,
        )
        section.details[kind] = {
            "pandas": {"seconds": _inside(floor), "tree_rss_mib": floor.tree_rss_mib},
            "load": {"seconds": _inside(loader), "tree_rss_mib": loader.tree_rss_mib},
            "validate": {"wall": validate.wall, "tree_rss_mib": validate.tree_rss_mib},
            "import": {
                "seconds": _inside(imported),
                "wall": imported.wall,
                "tree_rss_mib": imported.tree_rss_mib,
            },
        }
        if kind == "XLSX":
            for out in ("xlsx", "csv"):
                report = _step(
                    ctx,
                    f"sheets-report-{out}",
                    ctx.dialer("report", str(campaign), "--out", str(folder / f"sheets_report.{out}")),
                )
                section.add(f"  report of {rows} as {out.upper()}: wall", report.wall, "s")
                section.add(f"  report peak memory ({out.upper()})", report.tree_rss_mib, "MiB")
                section.details[f"report {out}"] = {"wall": report.wall, "tree_rss_mib": report.tree_rss_mib}
    # The report's XLSX writer against openpyxl's write-only mode, the same typed rows
    # (a tenth of the file: openpyxl takes minutes for a million).
    sample = ctx.rows if ctx.quick else max(1, ctx.rows // 10)
    seconds: dict[str, float] = {}
    for lib in ("xlsxwriter", "openpyxl"):
        written = folder / f"writer_{lib}.xlsx"
        measured = _step(ctx, f"sheets-writer-{lib}", ctx.step("writer", lib, str(sample), str(written)))
        seconds[lib] = _inside(measured)
        section.add(f"typed XLSX report, {sample:,} rows, {lib}", seconds[lib], "s")
        section.add(f"  peak memory ({lib})", measured.tree_rss_mib, "MiB")
        section.details[f"writer {lib}"] = {"seconds": seconds[lib], "tree_rss_mib": measured.tree_rss_mib}
    section.add("  openpyxl / xlsxwriter", seconds["openpyxl"] / seconds["xlsxwriter"], "x")
    ratio = figures["XLSX"]["validate"] / figures["CSV"]["validate"]
    section.add("validate XLSX / validate CSV", ratio, "x", "< 2", None if ctx.quick else ratio < 2)
    return section
