"""What a benchmark hands back: rows of the one table, and details for out/bench.json."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.measure import PYTHON


@dataclass
class Row:
    """One line of the table: a figure, with its target when the issue sets one."""

    bench: str
    measure: str
    value: float
    unit: str
    target: str = ""
    ok: bool | None = None

    def shown(self) -> str:
        if self.unit == "s":
            return f"{self.value:.2f} s"
        if self.unit == "MiB":
            return f"{self.value:.0f} MiB"
        if self.unit == "x":
            return f"{self.value:.2f}"
        if self.unit in ("req/s", "/s"):
            return f"{self.value:,.1f} {self.unit}"
        return f"{self.value:,.0f} {self.unit}".strip()


@dataclass
class Context:
    """Where a benchmark works and how big it goes."""

    work: Path
    rows: int
    quick: bool
    key: str = "bench-key"

    @property
    def logs(self) -> Path:
        return self.work / "logs"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["SYNTHFLOW_API_KEY"] = self.key
        env.pop("SANDBOX_API_KEY", None)
        return env

    def dialer(self, *args: str) -> list[str]:
        return [PYTHON, "-m", "dialer", *args]

    def step(self, *args: str) -> list[str]:
        return [PYTHON, "-m", "bench.step", *args]


@dataclass
class Section:
    name: str
    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def add(self, measure: str, value: float, unit: str, target: str = "", ok: bool | None = None) -> None:
        self.rows.append(Row(self.name, measure, value, unit, target, ok))

    def as_json(self) -> dict[str, Any]:
        return {"rows": [asdict(r) for r in self.rows], "details": self.details}
