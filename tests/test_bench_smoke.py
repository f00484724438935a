"""The benchmarks still run: `python -m bench --quick` end to end, and the maths they use.

No figure is asserted here (timings belong in `make bench`, not in `make test`);
only that every benchmark runs, prints its table and writes its JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.measure import peak_window, rate_of, read_posts

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(300)
def test_quick_bench_prints_the_table_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--rows",
            "500",
            "--out",
            str(out),
            "--work",
            str(tmp_path / "work"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for words in (
        "dialer bench",
        "dialer / bare httpx",
        "dialer validate, 500 rows",
        "time to first request",
        "hidden limit",
        "429 answers",
        "validate XLSX / validate CSV",
        "most calls live at once",
    ):
        assert words in done.stdout
    report = json.loads(out.read_text())
    assert report["quick"] is True
    assert set(report["results"]) == {
        "1 ceiling",
        "2 validate",
        "3 import/resume",
        "4 pacing",
        "5 sandbox",
        "6 spreadsheets",
        "7 page",
        "8 outcomes",
        "9 postgresql",
        "10 redial",
    }
    for section in report["results"].values():
        assert section["rows"], section
        for row in section["rows"]:
            assert isinstance(row["value"], int | float)
    details = report["results"]["3 import/resume"]["details"]["resume"]
    assert details["posts"] == 100  # the 100 rows left due, each sent once


def test_bench_rejects_an_unknown_benchmark(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--only", "nope", "--out", str(tmp_path / "b.json")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "unknown benchmark nope" in done.stderr


def test_peak_window_counts_a_half_open_second() -> None:
    assert peak_window([]) == 0
    assert peak_window([0.0, 0.5, 1.0]) == 2  # (0, 1] holds 0.5 and 1.0
    assert peak_window([0.0, 0.5, 0.999]) == 3
    assert peak_window([3.0, 0.0, 0.2, 2.5, 2.9]) == 3  # unsorted input


def test_rate_of_is_requests_per_second_first_to_last() -> None:
    assert rate_of([1.0]) == 0.0
    assert rate_of([0.0, 0.5, 1.0]) == 2.0


def test_read_posts_skips_gets_and_a_half_written_line(tmp_path: Path) -> None:
    record = tmp_path / "record.jsonl"
    record.write_text(
        '{"method":"POST","time":1.0,"status":200}\n'
        '{"method":"GET","time":1.5,"status":200}\n'
        '{"method":"POST","time":2.0,"status":429}\n'
        '{"method":"PO'
    )
    posts, offset = read_posts(record)
    assert [p["time"] for p in posts] == [1.0, 2.0]
    more, _ = read_posts(record, offset)
    assert more == []
