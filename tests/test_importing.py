"""The import's records: the same whether built from Leads or from map_rows' columns."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

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


class _Digest:
    """A stand-in for blake2b whose 12 bytes collide on purpose: the first 8 (or the last 4)
    of different rows' hashes equal, which real hashes almost never show."""

    def __init__(self, data: bytes, digest_size: int) -> None:
        assert digest_size == 12
        text = data.decode()
        cells = text.split("\x1f")
        self.value = hashlib.sha256(cells[0].encode()).digest()[:8] + hashlib.sha256(data).digest()[:4]
        if cells[0] == "same low":  # the last 4 bytes shared, the first 8 not
            self.value = hashlib.sha256(data).digest()[:8] + b"LOW!"

    def digest(self) -> bytes:
        return self.value

    def hexdigest(self) -> str:
        return self.value.hex()


def test_fingerprints_tell_hashes_apart_by_all_twelve_bytes(monkeypatch: Any) -> None:
    # Rows whose hashes share their first 8 bytes (and others their last 4), in one chunk
    # and across chunks, some of them repeated: each identical row gets its "#n", and no
    # row is taken for another whose hash only half matches.
    from dialer.store import importing

    monkeypatch.setattr(hashlib, "blake2b", _Digest)  # the module importing.py hashes with
    chunks = [
        [("a", "1"), ("a", "2"), ("b", "1"), ("a", "1"), ("same low", "1"), ("same low", "2")],
        [("a", "3"), ("a", "2"), ("a", "2"), ("c", "1"), ("same low", "2"), ("same low", "3")],
        [("a", "1"), ("a", "4"), ("b", "1"), ("a", "3"), ("b", "2")],
        [("d", "1"), ("c", "2"), ("b", "2")],
    ]
    seen = importing._Fingerprints()
    got = [seen.of(rows) for rows in chunks]
    expected = _expected_fingerprints([row for rows in chunks for row in rows])
    assert [fp for prints in got for fp in prints] == expected
    assert expected[3] == expected[0] + "#2" and expected[12] == expected[0] + "#3"
    assert expected[5] != expected[4] and expected[10] == expected[5] + "#2"
