"""Rows -> leads: columns, E.164, time zones, variables, duplicates and do-not-call lists."""

from __future__ import annotations

import csv
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from datetime import date, datetime
from pathlib import Path
from typing import Any

import openpyxl
import phonenumbers
import pytest

from dialer import mapping, phones
from dialer.columns import ColumnMap, resolve_columns
from dialer.config import Campaign
from dialer.errors import LeadsFileError
from dialer.load import open_leads
from dialer.mapping import map_leads
from dialer.model import Lead, Status
from dialer.phones import PhoneResult, normalize_phone
from dialer.suppress import load_suppression
from dialer.zones import number_zones, zones_named


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


# --- columns -------------------------------------------------------------------------


def test_common_names_are_recognised_and_described(tmp_path: Path) -> None:
    headers = [" Company", "First_Name", "Last Name", "Mobile", "E-mail", "Time Zone", "Role"]
    c = campaign(tmp_path, tmp_path / "leads.csv")
    columns = resolve_columns(c, headers)
    assert columns == ColumnMap(
        phone="Mobile",
        name=("First_Name", "Last Name"),
        timezone="Time Zone",
        email="E-mail",
        variables=(" Company", "Role"),
    )
    assert columns.describe() == [
        ("phone", "Mobile"),
        ("name", "First_Name + Last Name"),
        ("timezone", "Time Zone"),
        ("email", "E-mail"),
        ("variables", " Company, Role"),
    ]


@pytest.mark.parametrize(
    ("headers", "phone", "name"),
    [
        pytest.param(["Full Name", "Phone Number"], "Phone Number", ("Full Name",), id="full-name"),
        pytest.param(["Name", "Tel", "Mobile"], "Mobile", ("Name",), id="mobile-beats-tel"),
        pytest.param(
            ["Contact Name", "Primary Phone", "Phone Type"],
            "Primary Phone",
            ("Contact Name",),
            id="phone-word",
        ),
        pytest.param(["NAME", "TELEPHONE"], "TELEPHONE", ("NAME",), id="upper-case"),
        pytest.param(["Name", "First Name", "Cell"], "Cell", ("Name",), id="first-name-alone"),
    ],
)
def test_common_name_variants(tmp_path: Path, headers: list[str], phone: str, name: tuple[str, ...]) -> None:
    columns = resolve_columns(campaign(tmp_path, tmp_path / "l.csv"), headers)
    assert (columns.phone, columns.name) == (phone, name)
    assert columns.describe()[2] == ("timezone", "(inferred from the number)")


def test_columns_table_matches_ignoring_case_and_lists_variables(tmp_path: Path) -> None:
    c = campaign(
        tmp_path,
        tmp_path / "l.csv",
        columns={"phone": "cell no", "name": ["given", "FAMILY"], "variables": ["Role", "company"]},
    )
    columns = resolve_columns(c, ["Given", "Family", "Cell No", "Company", "Role", "Notes"])
    assert columns == ColumnMap(
        phone="Cell No",
        name=("Given", "Family"),
        timezone=None,
        email=None,
        variables=("Company", "Role"),
    )


@pytest.mark.parametrize(
    ("settings", "headers", "problem"),
    [
        pytest.param(
            {"columns": {"phone": "Phone"}},
            ["Name", "Mobile"],
            'column "Phone" (columns.phone) not found; headers are: "Name", "Mobile"',
            id="columns-phone-missing",
        ),
        pytest.param(
            {"columns": {"variables": ["Company"]}},
            ["Name", "Phone"],
            'column "Company" (columns.variables) not found; headers are: "Name", "Phone"',
            id="columns-variable-missing",
        ),
        pytest.param(
            {},
            ["Name", "Company"],
            'no phone column found; set [columns] phone to one of the headers: "Name", "Company"',
            id="no-phone",
        ),
        pytest.param(
            {},
            ["Phone", "Company"],
            "no name column found and the API requires a name; set [columns] name to a header "
            'or a list like ["First Name", "Last Name"]; headers are: "Phone", "Company"',
            id="call-without-name",
        ),
    ],
)
def test_missing_columns_give_one_line(
    tmp_path: Path, settings: dict[str, Any], headers: list[str], problem: str
) -> None:
    c = campaign(tmp_path, tmp_path / "leads.csv", **settings)
    with pytest.raises(LeadsFileError) as error:
        resolve_columns(c, headers)
    assert str(error.value) == f"{c.leads}: {problem}"


def test_chat_mode_needs_no_name(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "l.csv", [["WhatsApp", "Company"], ["+14155550132", "Acme"]])
    c = campaign(tmp_path, path, mode="chat")
    columns = resolve_columns(c, ["WhatsApp", "Company"])
    assert columns.name == ()
    assert columns.describe()[1] == ("name", "(none)")
    [lead] = mapped(c)
    assert (lead.status, lead.name, lead.variables) == ("pending", "", {"Company": "Acme"})


# --- phones ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        pytest.param("14155550132", "+14155550132", id="excel-number-with-country-code"),
        pytest.param("4155550141.0", "+14155550141", id="float-written-as-text"),
        pytest.param("(415) 555-0132 ext. 12", "+14155550132", id="extension-dropped"),
        pytest.param("415.555.0132 x7", "+14155550132", id="dotted-extension"),
        pytest.param(" +1 (415) 555-0132 ", "+14155550132", id="spaces"),
        pytest.param("1-800-FLOWERS", "+18003569377", id="vanity"),
        pytest.param("+44 20 7946 0958", "+442079460958", id="uk"),
        pytest.param("011 44 20 7946 0958", "+442079460958", id="uk-from-us-idd"),
    ],
)
def test_phones_become_e164(raw: str, e164: str) -> None:
    assert normalize_phone(raw, "US")[::2] == (e164, "")


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        pytest.param("", "missing phone number", id="empty"),
        pytest.param(
            "1.23457E+10",
            "phone 1.23457E+10 is in scientific notation: digits were lost "
            "(format the column as text in Excel)",
            id="scientific",
        ),
        pytest.param(
            "1,23457E+10",
            "phone 1,23457E+10 is in scientific notation: digits were lost "
            "(format the column as text in Excel)",
            id="scientific-decimal-comma",
        ),
        pytest.param("555-01", "invalid phone number '555-01': too short", id="too-short"),
        pytest.param("call me", "invalid phone number 'call me': not a phone number", id="text"),
        pytest.param(
            "+1 201 111 1111", "invalid phone number '+1 201 111 1111': not a valid number", id="unassigned"
        ),
        pytest.param(
            "+999 1234567", "invalid phone number '+999 1234567': unknown country code", id="country-code"
        ),
    ],
)
def test_bad_phones_are_named(raw: str, error: str) -> None:
    assert normalize_phone(raw, "US") == ("", (), error)


@pytest.mark.parametrize("region", ["US", "CA", "GB", "DE"])
def test_fast_path_agrees_with_phonenumbers(region: str) -> None:
    # The NANP fast path must read every shape exactly as phonenumbers.parse does: the same
    # number, and the same zones from it (number_zones finds the number's type itself).
    shapes = [
        "(415) 555-0132",
        "415-555-0132",
        "415.555.0132",
        "4155550132",
        "14155550132",
        "1 415 555 0132",
        "+1 415 555 0132",
        "+14155550132",
        "+1 (905) 555-0199",
        "(876) 555-0100",
        "1-264-497-1234",
        "+1 800 555 0100",
        "(201) 111-1111",
        "+1 671 555 0100",
        "030 123456",
        "+1 808 555 0100",
        "212 555 0100",
        "1 (212) 555-0100",
    ]
    for raw in shapes:
        e164, zones, error = normalize_phone(raw, region)
        try:
            number = phonenumbers.parse(raw, region)
            valid = phonenumbers.is_valid_number(number)
        except phonenumbers.NumberParseException:
            valid = False
        if valid:
            assert (e164, zones) == (
                phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164),
                number_zones(number),
            ), raw
        else:
            assert e164 == "" and error, raw


# --- rows -----------------------------------------------------------------------------


def test_time_zones_given_invalid_inferred_and_multi_zone(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "tz.csv",
        [
            ["Name", "Phone", "Timezone"],
            ["A", "+1 212 555 0100", "america/chicago"],
            ["B", "+1 212 555 0101", "EST5"],
            ["C", "+1 212 555 0102", ""],
            ["D", "+1 208 555 0100", " "],  # Idaho: two zones
            ["E", "+800 1234 5678", ""],  # international freephone: no zone
            ["F", "+1 212 555 0103", "EST5EDT"],  # legacy, but zoneinfo knows it
        ],
    )
    leads = mapped(campaign(tmp_path, path))
    assert [(lead.status, lead.timezones, lead.error) for lead in leads] == [
        ("pending", ("America/Chicago",), ""),
        ("invalid", (), 'unknown time zone "EST5" (use an IANA name like America/New_York)'),
        ("pending", ("America/New_York",), ""),
        ("pending", ("America/Boise", "America/Los_Angeles"), ""),
        ("invalid", (), "cannot infer a time zone for +80012345678; add a time zone column"),
        ("pending", ("EST5EDT",), ""),
    ]
    assert zones_named(" europe/LONDON ") == ("Europe/London",)


def test_duplicates_name_the_first_dialable_row(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "dup.csv",
        [
            ["Name", "Phone"],
            ["", "(415) 555-0132"],  # row 2: invalid (no name), claims nothing
            ["Ana", "+1 415 555 0132"],  # row 3: the first dialable
            ["Bo", "415.555.0132"],  # row 4
            ["Cy", "14155550132"],  # row 5
            ["Di", "+1 415 555 0133"],
        ],
    )
    leads = mapped(campaign(tmp_path, path))
    assert [(lead.row, lead.status, lead.error) for lead in leads] == [
        (2, "invalid", "missing name (the API requires one)"),
        (3, "pending", ""),
        (4, "duplicate", "same number as row 3"),
        (5, "duplicate", "same number as row 3"),
        (6, "pending", ""),
    ]
    assert {lead.phone for lead in leads} == {"+14155550132", "+14155550133"}


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


def test_xlsx_values_and_variables_read_as_a_person_would_write_them(tmp_path: Path) -> None:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = "Leads"
    sheet.append(["Name", "Phone", "Amount", "Signed up", "Met at", "Notes", "Time Zone"])
    sheet.append(
        ["José Müller", 14155550132, 1500.0, datetime(2024, 1, 1), datetime(2024, 1, 1, 9, 30), None, None]
    )
    sheet.append(["Zoë", 4155550141.0, 12.5, date(2024, 2, 29), None, "ça va", "Europe/Paris"])
    path = tmp_path / "leads.xlsx"
    workbook.save(path)

    leads = mapped(campaign(tmp_path, path, sheet="Leads"))

    assert [(lead.row, lead.status, lead.phone, lead.name) for lead in leads] == [
        (2, "pending", "+14155550132", "José Müller"),
        (3, "pending", "+14155550141", "Zoë"),
    ]
    assert leads[0].values == (
        "José Müller",
        "14155550132",
        "1500",
        "2024-01-01",
        "2024-01-01T09:30:00",
        "",
        "",
    )
    assert leads[0].variables == {
        "Amount": "1500",
        "Signed up": "2024-01-01",
        "Met at": "2024-01-01T09:30:00",
        "Notes": "",
    }
    assert leads[1].variables["Notes"] == "ça va"
    assert leads[1].timezones == ("Europe/Paris",)


def test_row_with_shifted_cells_is_refused_and_email_trimmed(tmp_path: Path) -> None:
    path = tmp_path / "l.csv"
    path.write_text(
        "Name,Phone,Email\nSmith, John,+14155550132,j@x.com\nAna,+14155550133, ana@x.com \n",
        encoding="utf-8",
    )
    leads = mapped(campaign(tmp_path, path))
    assert (leads[0].status, leads[0].error) == (
        "invalid",
        "the row has 4 cells but the header has 3: a value may hold an unquoted ','",
    )
    assert (leads[1].status, leads[1].email) == ("pending", "ana@x.com")


def test_invalid_phone_row_keeps_its_values_and_says_why(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "l.csv", [["Name", "Phone"], ["Ané", "1.23457E+10"]])
    [lead] = mapped(campaign(tmp_path, path))
    assert lead == Lead(
        row=2,
        values=("Ané", "1.23457E+10"),
        status=Status.INVALID,
        error="phone 1.23457E+10 is in scientific notation: digits were lost "
        "(format the column as text in Excel)",
        name="Ané",
    )


def ten_rows(tmp_path: Path) -> Campaign:
    rows = [["Name", "Phone", "Company"]]
    rows += [[f"N{i}", f"(415) 555-01{i % 7:02d}", f"Co {i}"] for i in range(10)]
    return campaign(tmp_path, write_csv(tmp_path / "ten.csv", rows))


@pytest.mark.parametrize(
    ("workers", "pools"), [pytest.param(1, 0, id="inline"), pytest.param(2, 1, id="pool")]
)
def test_chunks_of_three_give_the_same_leads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int, pools: int
) -> None:
    c = ten_rows(tmp_path)
    whole = mapped(c)  # one chunk: parsed in this process
    assert [lead.status for lead in whole].count(Status.DUPLICATE) == 3
    started: list[int] = []
    real_pool = phones._pool

    def spy(workers: int) -> ProcessPoolExecutor:
        started.append(workers)
        return real_pool(workers)

    monkeypatch.setattr(phones, "_pool", spy)
    # A daemon thread left by an earlier test (a sandbox's reader) must not
    # turn the pool off here: the workers only parse phones.
    monkeypatch.setattr(phones, "_can_fork", lambda: True)
    assert mapped(c, chunk_rows=3, workers=workers) == whole
    assert len(started) == pools


def test_no_pool_while_other_threads_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    c = ten_rows(tmp_path)
    monkeypatch.setattr(phones, "_pool", lambda n: pytest.fail("forked with a thread running"))
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert len(mapped(c, chunk_rows=3, workers=2)) == 10
    finally:
        stop.set()
        thread.join()


def test_a_dead_worker_does_not_lose_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    c = ten_rows(tmp_path)
    whole = mapped(c)
    parent, real = os.getpid(), phones._normalize_all

    def die_in_worker(values: list[str], region: str) -> list[PhoneResult]:
        if os.getpid() != parent:
            os._exit(1)  # as if killed for lack of memory
        return real(values, region)

    # Pickled by name, as the real one is: the forked worker finds this one.
    die_in_worker.__module__, die_in_worker.__qualname__ = phones.__name__, "_normalize_all"
    monkeypatch.setattr(phones, "_normalize_all", die_in_worker)
    monkeypatch.setattr(phones, "_can_fork", lambda: True)
    assert mapped(c, chunk_rows=3, workers=2) == whole


def test_first_rows_are_remembered_across_chunks() -> None:
    seen = mapping._FirstRows()
    assert seen.claim([14155550105, 14155550103, 14155550105], [2, 3, 4]) == [0, 0, 2]
    assert seen.claim([14155550103, 19995550100, 19995550100, 11], [5, 6, 7, 8]) == [3, 0, 6, 0]
    assert seen.claim([11, 14155550105], [9, 10]) == [8, 2]
