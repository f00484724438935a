"""validate's counts, a chunk at a time: numpy groups and masks give what a row-by-row pass gives."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from dialer import mapping
from dialer.columns import resolve_columns
from dialer.hours import CallingHours
from dialer.load import open_leads
from dialer.mapping import map_rows
from dialer.model import Status
from dialer.numbers import ForeignCallers
from dialer.validate import _alike_keys, _DueCheck, _groups, _Tally
from tests.mapped import campaign, mapped, write_csv

SUNDAY_NOON = datetime(2026, 11, 29, 17, 0, tzinfo=UTC)
# Numbers whose E.164 share their first five characters but not their length (two UK
# numbers), +1 numbers of states with a rule and without, Canada, a toll-free number.
PHONES = [
    "+1 205 555 0104",  # Alabama: no call on a Sunday
    "+1 212 555 0101",
    "+1 305 555 0102",  # Florida
    "+1 918 555 0103",  # Oklahoma
    "+1 416 555 0100",  # Toronto: no US law
    "+1 800 555 0100",  # toll-free: the federal rule
    "+44 20 7946 0000",
    "+49 30 12345678",
    "+49 30 1234567",  # the same first five characters, a character shorter
    "+61 2 9374 4000",
]
STATES = ["", "", "FL", "Texas", " ok ", "AL", "Rhode Island"]
ZONES = ["", "", "", "America/Chicago", "Europe/London", "America/New_York"]


def _leads(tmp_path: Path, rows: int) -> Path:
    rng = random.Random(15)
    cells = [["Name", "Phone", "Time Zone", "State"]]
    for i in range(rows):
        phone = rng.choice(PHONES)
        if rng.random() < 0.5:  # a number of its own, so that not every row is a duplicate
            phone = phone[:-4] + f"{i % 10_000:04d}"
        cells.append([f"N{i}", phone, rng.choice(ZONES), rng.choice(STATES)])
    return write_csv(tmp_path / "leads.csv", cells)


def test_the_hours_check_of_a_chunk_gives_what_each_row_checked_alone_gives(tmp_path: Path) -> None:
    days = {"start": "09:00", "end": "17:00", "days": ["sun"]}  # Alabama's and Rhode Island's never open
    c = campaign(tmp_path, _leads(tmp_path, 3_000), hours=days)
    leads = open_leads(c.leads)
    columns = resolve_columns(c, leads.headers)
    tally = _Tally(_DueCheck(CallingHours(c.hours), SUNDAY_NOON), ForeignCallers(c.numbers))
    for rows in map_rows(c, leads, columns, chunk_rows=700, workers=1):
        tally.add(rows, want_examples=0)
    alone = _DueCheck(CallingHours(c.hours), SUNDAY_NOON)  # each row on its own
    counts: Counter[str] = Counter()
    never: list[tuple[int, str]] = []
    for lead in mapped(c, chunk_rows=700, workers=1):
        reason = alone.check(lead.timezones, lead.phone, lead.state) if lead.status == Status.PENDING else ""
        counts[Status.INVALID if reason else lead.status] += 1
        if reason:
            never.append((lead.row, reason))
    assert never and alone.due_now and alone.laws  # every path was taken
    assert (tally.counts, tally.due.due_now, tally.due.laws) == (counts, alone.due_now, alone.laws)
    assert tally.due.next_due() == alone.next_due()
    refused = {row: error for row, _, error in tally.problems if error.startswith("never inside")}
    assert refused == dict(never[: len(refused)])


def test_rows_are_alike_when_their_numbers_share_length_and_first_five_characters(tmp_path: Path) -> None:
    phones = ["+49 30 1234567", "+49 30 12345678", "+49 30 7654321", "+49 89 1234567", "+1 212 555 0101"]
    path = write_csv(tmp_path / "leads.csv", [["Name", "Phone"], *[["A", phone] for phone in phones]])
    c = campaign(tmp_path, path)
    leads = open_leads(c.leads)
    [rows] = map_rows(c, leads, resolve_columns(c, leads.headers), workers=1)
    assert rows.status == [Status.PENDING] * 5, rows.error
    keys = _alike_keys(rows, np.arange(5)).tolist()
    # rules_for reads "+4930" and the length: only the first and the third are alike (Munich: "+4989").
    assert keys[0] == keys[2] and len(set(keys)) == 4


def test_validate_builds_no_names_cells_or_emails_beyond_its_examples(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "leads.csv",
        [["Name", "Phone", "Email"], ["Ana", "+1 212 555 0101", " a@example.com "], ["", "x", ""]],
    )
    c = campaign(tmp_path, path)
    leads = open_leads(c.leads)
    tally = _Tally(_DueCheck(CallingHours(c.hours), SUNDAY_NOON), ForeignCallers(c.numbers))
    [rows] = map_rows(c, leads, resolve_columns(c, leads.headers), workers=1)
    assert tally.add(rows, want_examples=0) == []
    assert tally.counts == Counter({Status.PENDING: 1, Status.INVALID: 1})
    assert not {"cells", "name", "email"} & set(vars(rows))  # built only when asked for
    assert rows.name == ["Ana", ""] and rows.email == ["a@example.com", ""]


@pytest.mark.parametrize("side_rows", [8, 20_000])  # the side merged often, or never
def test_first_rows_agree_with_a_dict_over_chunks_of_repeats(
    side_rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mapping, "_RECENT_ROWS", side_rows)
    rng = random.Random(3)
    seen, first = mapping._FirstRows(), dict[int, int]()
    row = 2
    for _ in range(30):
        numbers = [rng.randrange(14155550000, 14155550400) for _ in range(rng.randrange(1, 60))]
        rows = list(range(row, row + len(numbers)))
        row += len(numbers) + rng.randrange(3)  # blank rows leave gaps
        expected = []
        for number, at in zip(numbers, rows, strict=True):
            expected.append(first.get(number, 0))
            first.setdefault(number, at)
        assert seen.claim(numbers, rows).tolist() == expected
    known, first_rows = seen.remembered()
    assert known.tolist() == sorted(first) and first_rows.tolist() == [first[n] for n in sorted(first)]


def test_first_rows_leave_the_big_arrays_alone_until_the_side_fills(monkeypatch: pytest.MonkeyPatch) -> None:
    # Copying every number seen into new arrays for each chunk was the bulk of the
    # duplicate check's time on a million rows (issue 15).
    monkeypatch.setattr(mapping, "_RECENT_ROWS", 4)
    seen = mapping._FirstRows()
    assert seen.claim([30, 10, 20, 40], [2, 3, 4, 5]).tolist() == [0, 0, 0, 0]  # the side fills: merged
    big = seen.numbers
    assert big.tolist() == [10, 20, 30, 40]
    assert seen.claim([50, 10], [6, 7]).tolist() == [0, 3]
    assert seen.claim([60, 50], [8, 9]).tolist() == [0, 6]
    assert seen.numbers is big  # two new numbers: on the side, the big arrays not copied
    assert seen.claim([80, 70], [10, 11]).tolist() == [0, 0]  # four on the side: merged
    assert seen.numbers.tolist() == [10, 20, 30, 40, 50, 60, 70, 80]
    assert seen.rows.tolist() == [3, 4, 2, 5, 6, 8, 11, 10]


def test_groups_of_keys_are_numpy_unique_s_in_order_of_first_appearance() -> None:
    keys = np.array([7, 3, 7, 9, 3, 3, 2**40, 9, 7], dtype=np.int64)
    first, group, sizes = _groups(keys)
    assert first.tolist() == [0, 1, 3, 6]
    assert group.tolist() == [0, 1, 0, 2, 1, 1, 3, 2, 0]
    assert sizes.tolist() == [3, 3, 2, 1]
    rng = np.random.default_rng(5)
    keys = rng.integers(0, 50, 1_000)
    first, group, sizes = _groups(keys)
    distinct, at, inverse, counts = np.unique(
        keys, return_index=True, return_inverse=True, return_counts=True
    )
    order = np.argsort(at)  # np.unique's groups, numbered in order of first appearance
    assert first.tolist() == at[order].tolist() and sizes.tolist() == counts[order].tolist()
    assert (keys[first][group] == keys).all()
