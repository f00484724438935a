"""Headers -> fields: common names, the [columns] table, missing columns named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dialer.columns import ColumnMap, resolve_columns
from dialer.errors import LeadsFileError
from tests.mapped import campaign, mapped, write_csv


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
