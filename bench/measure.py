"""Measuring a step in a process of its own: wall time, peak memory, CPU; and record-file maths.

Each measured step runs as a child process so that its peak memory is its own,
not the benchmark driver's. `os.wait4` gives the rusage of that one child
(`ru_maxrss` is the largest RSS of the child or of any descendant it waited
for, e.g. the phone-parsing pool), unlike `getrusage(RUSAGE_CHILDREN)`, which
is a running maximum over every child so far. A sampler thread also sums the
PSS of the whole process tree every 50 ms, since pool workers live alongside
the parent (PSS, not RSS: forked workers share pages with the parent).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PYTHON = sys.executable
_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Measured:
    """What one child process took."""

    argv: list[str]
    returncode: int
    wall: float  # seconds, perf_counter around the whole process
    started_at: float  # epoch seconds just before the process was started
    peak_rss_mib: float  # largest single process (the step or one of its children)
    tree_rss_mib: float  # largest PSS sum over the process tree, sampled every 50 ms
    cpu_seconds: float  # user + system, the step and its waited-for children
    stdout: str
    stderr: str

    def check(self) -> Measured:
        if self.returncode not in (0, 75):
            raise RuntimeError(f"{' '.join(self.argv)} exited {self.returncode}:\n{self.stderr[-3000:]}")
        return self


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            text = Path(f"/proc/{pid}/task/{task}/children").read_text()
        except OSError:
            continue
        found += [int(p) for p in text.split()]
    return found


def rss_bytes(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def pss_bytes(pid: int) -> int:
    """Proportional set size: pages shared with a forked parent count once, not per process."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return rss_bytes(pid)


def tree_rss_bytes(pid: int) -> int:
    """Memory of a process and its descendants, as the sum of their PSS."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        total += pss_bytes(current)
        todo += _children(current)
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process (not of its children)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def run_measured(
    argv: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 900.0,
    out_dir: Path,
    name: str,
) -> Measured:
    """Run `argv` to its end; stdout and stderr go to files in `out_dir` (no pipe to fill)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    out_path, err_path = out_dir / f"{name}.stdout", out_dir / f"{name}.stderr"
    peak_tree = 0
    with out_path.open("w") as out, err_path.open("w") as err:
        started_at = time.time()
        t0 = time.perf_counter()
        process = subprocess.Popen(list(argv), stdout=out, stderr=err, env=env, cwd=cwd)
        done = threading.Event()

        def sample() -> None:
            nonlocal peak_tree
            while not done.wait(0.05):
                peak_tree = max(peak_tree, tree_rss_bytes(process.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                process.kill()
                pid, status, usage = os.wait4(process.pid, 0)
                break
            time.sleep(0.01)
        wall = time.perf_counter() - t0
        process.returncode = os.waitstatus_to_exitcode(status)  # Popen must not wait again
        done.set()
        sampler.join()
    return Measured(
        argv=list(argv),
        returncode=process.returncode,
        wall=wall,
        started_at=started_at,
        peak_rss_mib=usage.ru_maxrss / 1024,  # KiB on Linux
        tree_rss_mib=peak_tree / 2**20,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        stdout=out_path.read_text(errors="replace"),
        stderr=err_path.read_text(errors="replace"),
    )


# -- the sandbox's record file -------------------------------------------------------


def read_posts(path: Path, start: int = 0) -> tuple[list[dict[str, Any]], int]:
    """POST records from byte `start` of a record file, and the offset after them."""
    import json

    with path.open("rb") as handle:
        handle.seek(start)
        data = handle.read()
    end = data.rfind(b"\n") + 1
    posts = []
    for line in data[:end].splitlines():
        if line:
            record = json.loads(line)
            if record.get("method") == "POST":
                posts.append(record)
    return posts, start + end


def rate_of(times: Sequence[float]) -> float:
    """Requests per second between the first and the last."""
    if len(times) < 2 or times[-1] <= times[0]:
        return 0.0
    return (len(times) - 1) / (times[-1] - times[0])


def peak_window(times: Sequence[float], window: float = 1.0) -> int:
    """The most times falling in any half-open window (t - window, t]."""
    ordered = sorted(times)
    best, left = 0, 0
    for right, t in enumerate(ordered):
        while ordered[left] <= t - window:
            left += 1
        best = max(best, right - left + 1)
    return best
