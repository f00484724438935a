"""The benchmarks' inputs: campaign files and lead CSVs, made in the work folder."""

from __future__ import annotations

import csv
import shutil
from datetime import datetime
from pathlib import Path

from bench.gen_leads import HEADERS, write_leads_csv

MODEL_ID = "1696372226173x164740052408336400"


def campaign_toml(
    path: Path,
    *,
    name: str,
    leads: Path,
    rate: float,
    concurrency: int,
    base_url: str = "http://127.0.0.1:9",
) -> Path:
    """A call campaign for the leads of `gen_leads`/`clean_leads_csv`, open every hour of every day."""
    path.write_text(
        f"""\
name = "{name}"
mode = "call"
leads = "{leads.resolve()}"
report = "{path.with_suffix(".report.csv").resolve()}"
journal = "{path.with_suffix(".sqlite").resolve()}"
default_region = "US"

[api]
base_url = "{base_url}"

[call]
model_id = "{MODEL_ID}"
prompt = "You are a friendly assistant calling on behalf of Acme about {{Company}}."

[columns]
phone = "Phone Number"
name = ["First Name", "Last Name"]
timezone = "Time Zone"
email = "E-mail"
variables = ["Company", "Signup Date"]

[limits]
rate_per_second = {rate}
concurrency = {concurrency}
max_attempts = 4

[hours]
start = "00:00"
end = "24:00"
days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
""",
        encoding="utf-8",
    )
    return path


def reset_journal(campaign: Path) -> None:
    """Remove a campaign's journal, its WAL and lock, and its report: the next run starts afresh."""
    for suffix in (".sqlite", ".sqlite-wal", ".sqlite-shm", ".sqlite.lock", ".report.csv"):
        campaign.with_suffix(suffix).unlink(missing_ok=True)


def clean_leads_csv(path: Path, rows: int) -> Path:
    """`rows` leads that are all dialable: distinct valid US numbers, in the gen_leads layout."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADERS)
        for i in range(rows):
            # 212-2xx-xxxx .. 212-9xx-xxxx: valid New York numbers, one per row.
            phone = f"(212) {200 + i // 10_000:03d}-{i % 10_000:04d}"
            writer.writerow(["Ana", f"Lead{i}", phone, "Acme", f"ana.{i}@example.com", "", "2024-05-04"])
    return path


def messy_leads_csv(folder: Path, rows: int) -> Path:
    """The realistic messy file of `gen_leads` with `rows` rows, made once and kept."""
    path = folder / f"leads_{rows}.csv"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        write_leads_csv(tmp, rows, seed=0)
        tmp.replace(path)
    return path


def leads_xlsx(source: Path) -> Path:
    """The same leads as `source` (a gen_leads CSV) in a workbook, made once and kept.

    Written by xlsxwriter (inline strings, as scripts write workbooks); phones stay
    text as in most exports, the signup date is a date cell.
    """
    import xlsxwriter

    path = source.with_suffix(".xlsx")
    if path.exists():
        return path
    tmp = path.with_name(path.stem + ".tmp.xlsx")
    workbook = xlsxwriter.Workbook(str(tmp), {"constant_memory": True})
    sheet = workbook.add_worksheet("Leads")
    dates = workbook.add_format({"num_format": "yyyy-mm-dd"})
    with source.open(encoding="utf-8", newline="") as handle:
        for row, cells in enumerate(csv.reader(handle)):
            for column, cell in enumerate(cells):
                if row and column == 6 and len(cell) == 10 and cell[4] == "-":
                    sheet.write_datetime(row, column, datetime.fromisoformat(cell), dates)
                elif cell:
                    sheet.write_string(row, column, cell)
    workbook.close()
    tmp.replace(path)
    return path


def prefix_csv(source: Path, rows: int, dest: Path) -> Path:
    """The header and the first `rows` data lines of `source` (gen_leads writes no multi-line cells)."""
    if dest.exists():
        return dest
    tmp = dest.with_suffix(".tmp")
    with source.open("rb") as src, tmp.open("wb") as out:
        for index, line in enumerate(src):
            if index > rows:
                break
            out.write(line)
    tmp.replace(dest)
    return dest


def copy_journal(source: Path, dest: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        src = Path(f"{source}{suffix}")
        if src.exists():
            shutil.copyfile(src, f"{dest}{suffix}")
