"""What the phone workers are sent and answer: one text, columns back, the same results per row."""

from __future__ import annotations

import gc
import os

import numpy as np
import pandas as pd
import pytest

from dialer import phones
from dialer.load import Chunk

# Valid numbers of several zones, repeats, an empty cell, errors, a cell holding a newline
# (a quoted CSV cell may), one with an extension, other countries'.
_CELLS = [
    "(415) 555-0132",
    "+44 20 7946 0958",
    "",
    "(415) 555-0132",
    "212-555-0100\nx12",
    "555-12",
    "1.23457E+10",
    "+1 808 555 0100",
    "+91 98765 43210",
    "call me",
    "+44 20 7946 0958",
    "(212) 555-0100 ext. 7",
    "  ",
    "+49 30 1234567",
]


def _chunks(cells: list[str], size: int) -> list[Chunk]:
    frame = pd.DataFrame({"Phone": cells, "Name": [f"N{i}" for i in range(len(cells))]})
    return [Chunk(frame.iloc[start : start + size]) for start in range(0, len(cells), size)]


def _expected(cells: list[str]) -> list[phones.PhoneResult]:
    phones._phone_cache.clear()
    return [phones.normalize_phone(cell, "US") for cell in cells]


def test_distinct_phones_are_sent_as_one_text_unless_a_cell_holds_a_newline() -> None:
    assert phones._sent(["(415) 555-0132", "", "+44 20 7946 0958"]) == "(415) 555-0132\n\n+44 20 7946 0958"
    assert phones._sent([""]) == ""
    with_newline = ["(415) 555-0132", "212-555-0100\nx12"]
    assert phones._sent(with_newline) == with_newline


def test_an_answer_is_columns_that_give_each_rows_result() -> None:
    distinct = list(dict.fromkeys(_CELLS))
    answer = phones._parse_distinct(phones._sent(distinct), "US")
    text, table, _, wrong, messages = answer
    assert text.split("\n")[0] == "+14155550132" and len(text.split("\n")) == len(distinct)
    assert len(table) < len(distinct)  # zones as indexes into the distinct tuples
    assert [distinct[i] for i in wrong] == [
        cell for cell in distinct if phones.normalize_phone(cell, "US")[2]
    ] and all(messages)
    codes = np.array([distinct.index(cell) for cell in _CELLS], dtype=np.intp)
    columns = phones._columns(answer, codes)
    assert list(zip(columns.e164, columns.zones, columns.errors, strict=True)) == _expected(_CELLS)


@pytest.mark.parametrize(
    ("workers", "fork"), [pytest.param(1, False, id="here"), pytest.param(2, True, id="pool")]
)
def test_every_row_gets_its_result_here_and_through_the_pool(
    monkeypatch: pytest.MonkeyPatch, workers: int, fork: bool
) -> None:
    monkeypatch.setattr(phones, "_can_fork", lambda: fork)
    cells = _CELLS * 3
    got: list[phones.PhoneResult] = []
    for chunk, columns in phones.with_phone_columns(_chunks(cells, 4), "Phone", "US", workers):
        assert len(columns.e164) == len(chunk.frame)
        got += zip(columns.e164, columns.zones, columns.errors, strict=True)
    assert got == _expected(cells)
    # with_phones (the do-not-call lists' reader) gives the same, as a dict per chunk.
    for chunk, cells_of_chunk, results in phones.with_phones(_chunks(cells, 5), "Phone", "US", workers):
        assert cells_of_chunk == chunk.frame["Phone"].tolist()
        assert [results[cell] for cell in cells_of_chunk] == _expected(cells_of_chunk)


def test_only_what_phonenumbers_parses_is_cached() -> None:
    # The fast paths' numbers (3-5 us each) are not kept: a worker remembering a whole
    # chunk's numbers held ~10 MiB more for almost no hit. phonenumbers' (30-80 us) are.
    phones._phone_cache.clear()
    fast = phones.normalize_phone("(415) 555-0132", "US"), phones.normalize_phone("+44 20 7946 0958", "US")
    assert phones._phone_cache == {} and fast[0][0] == "+14155550132" and fast[1][0] == "+442079460958"
    slow = phones.normalize_phone("1-800-FLOWERS", "US")
    assert phones._phone_cache == {("1-800-FLOWERS", "US"): slow} and slow[0] == "+18003569377"
    assert phones.normalize_phone("1-800-FLOWERS", "US") is slow


def test_workers_are_forked_with_this_processs_objects_frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    # gc.freeze() before the fork: a worker's collector never walks (and so never copies
    # the pages of) the objects it shares with this process; this process's is unfrozen after.
    parent, real = os.getpid(), phones._normalize_all

    def report_freeze(values: list[str], region: str) -> list[phones.PhoneResult]:
        if os.getpid() != parent:
            return [("", (), f"frozen {gc.get_freeze_count()}")] * len(values)
        return real(values, region)

    # Pickled by name, as the real one is: the forked worker finds this one.
    report_freeze.__module__, report_freeze.__qualname__ = phones.__name__, "_normalize_all"
    monkeypatch.setattr(phones, "_normalize_all", report_freeze)
    monkeypatch.setattr(phones, "_can_fork", lambda: True)
    errors = [
        error
        for _, columns in phones.with_phone_columns(_chunks(_CELLS, 4), "Phone", "US", 2)
        for error in columns.errors
    ]
    assert errors and all(error.startswith("frozen ") and int(error.split()[1]) > 1000 for error in errors)
    assert gc.get_freeze_count() == 0
