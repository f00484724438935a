"""Do-not-call lists: CSV, XLSX or bare numbers, in any format; a missing one named."""

from __future__ import annotations

from pathlib import Path

import openpyxl
import pytest

from dialer.errors import LeadsFileError
from dialer.suppress import load_suppression
from tests.mapped import campaign, mapped, write_csv


def test_do_not_call_lists_in_mixed_formats(tmp_path: Path) -> None:
    dnc_csv = write_csv(
        tmp_path / "dnc.csv", [["Phone Number", "Reason"], ["(415) 555-0132", "asked"], ["not a number", ""]]
    )
    bare = tmp_path / "bare.txt"
    bare.write_text("+1 415 555 0133\n415.555.0134\n", encoding="utf-8")
    workbook = openpyxl.Workbook()
    workbook.active.append(["Notes", "Tel"])
    workbook.active.append(["int cell", 14155550135])
    workbook.save(tmp_path / "dnc.xlsx")
    empty = tmp_path / "none-yet.csv"
    empty.write_bytes(b"")
    leads_path = write_csv(
        tmp_path / "l.csv",
        [["Name", "Phone"]] + [[f"N{i}", f"415-555-013{i}"] for i in range(2, 7)] + [["Again", "4155550132"]],
    )
    c = campaign(
        tmp_path,
        leads_path,
        suppress=[dnc_csv, bare, tmp_path / "dnc.xlsx", empty],
    )

    assert load_suppression(c) == frozenset({"+14155550132", "+14155550133", "+14155550134", "+14155550135"})
    leads = mapped(c)
    assert [(lead.status, lead.error) for lead in leads] == [
        ("suppressed", "on the do-not-call list dnc.csv"),
        ("suppressed", "on the do-not-call list bare.txt"),
        ("suppressed", "on the do-not-call list bare.txt"),
        ("suppressed", "on the do-not-call list dnc.xlsx"),
        ("pending", ""),
        ("suppressed", "on the do-not-call list dnc.csv"),  # suppressed rows claim no number
    ]


def test_missing_do_not_call_list_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "dnc.csv"
    c = campaign(tmp_path, tmp_path / "l.csv", suppress=[missing])
    with pytest.raises(LeadsFileError) as error:
        load_suppression(c)
    assert str(error.value) == f"{missing}: file not found (a do-not-call list in suppress)"
