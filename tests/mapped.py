"""Helpers of the mapping tests (columns, phones, do-not-call lists, rows): a campaign, a CSV, its leads."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from dialer.columns import resolve_columns
from dialer.config import Campaign
from dialer.load import open_leads
from dialer.mapping import map_leads
from dialer.model import Lead


def campaign(tmp_path: Path, leads: Path, **settings: Any) -> Campaign:
    mode = settings.pop("mode", "call")
    if mode == "call":
        settings.setdefault("call", {"model_id": "m-1"})
    else:
        settings.setdefault("chat", {"agent_id": "a-1", "channel": "sms"})
        settings.setdefault("numbers", {"pool": ["+14155550100"]})
    return Campaign(path=tmp_path / "c.toml", name="t", mode=mode, leads=leads, **settings)


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


def mapped(c: Campaign, **options: Any) -> list[Lead]:
    leads = open_leads(c.leads, encoding=c.encoding, sheet=c.sheet)
    return list(map_leads(c, leads, resolve_columns(c, leads.headers), **options))
