"""The import's records: the same whether built from Leads or from map_rows' columns."""

from __future__ import annotations

import hashlib
from pathlib import Path

from dialer.columns import resolve_columns
from dialer.load import open_leads
from dialer.mapping import map_leads, map_rows
from dialer.store.importing import lead_records
from tests.mapped import campaign, write_csv


def _expected_fingerprints(rows: list[tuple[str, ...]]) -> list[str]:
    """The fingerprint rule older journals were written with: blake2b (12 bytes, hex) of the
    cells joined by \\x1f; the n-th identical row gets "#n"."""
    seen: dict[str, int] = {}
    prints = []
    for cells in rows:
        base = hashlib.blake2b("\x1f".join(cells).encode(), digest_size=12).hexdigest()
        seen[base] = seen.get(base, 0) + 1
        prints.append(base if seen[base] == 1 else f"{base}#{seen[base]}")
    return prints


def test_records_from_columns_are_the_records_from_leads(tmp_path: Path) -> None:
    # Identical rows across chunk boundaries (chunks of 3), a repeated number, an
    # invalid phone, a zone column: the records, fingerprints included, must not
    # depend on how the mapping handed the rows over.
    body = [["Name", "Phone", "Time Zone", "Company"]]
    for i in range(20):
        body.append([f"Lead {i % 4}", f"(212) 555-01{i % 4:02d}", "", "Acme"])  # every 4th row identical
    body += [["Zed", "555-12", "", "Acme"], ["Yan", "(415) 555-0199", "Mars/Olympus", "Acme"]]
    c = campaign(tmp_path, write_csv(tmp_path / "leads.csv", body))
    leads = open_leads(c.leads)
    columns = resolve_columns(c, leads.headers)
    from_leads = list(lead_records(map_leads(c, leads, columns, chunk_rows=3, workers=1), "now"))
    from_rows = list(lead_records(map_rows(c, leads, columns, chunk_rows=3, workers=1), "now"))
    assert from_rows == from_leads
    assert [record[1] for record in from_rows] == _expected_fingerprints([tuple(r) for r in body[1:]])
    assert sum(1 for record in from_rows if "#" in record[1]) == 16  # rows 5..20 repeat rows 1..4
