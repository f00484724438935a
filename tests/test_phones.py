"""Phone cells -> E.164 and their zones; the NANP fast path agrees with phonenumbers."""

from __future__ import annotations

import random

import phonenumbers
import pytest

from dialer import phones
from dialer.phones import normalize_phone
from dialer.zones import number_zones


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


def _reference(raw: str, region: str) -> tuple[str, tuple[str, ...]] | None:
    """phonenumbers alone: (E.164, zones) of a valid number, None otherwise."""
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None
    if phonenumbers.number_type(number) == phonenumbers.PhoneNumberType.UNKNOWN:
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), number_zones(number)


def test_fast_path_agrees_on_every_area_code() -> None:
    # The fast path finds a +1 number's region, type and zones without phonenumbers'
    # calls: over every area code (US, Canada, the Caribbean, toll-free, premium,
    # personal, unassigned) and a spread of exchanges, in two shapes and two default
    # regions, it must give what phonenumbers gives, valid or not.
    rng = random.Random(15)
    numbers = [f"{area}{rng.randrange(10**7):07d}" for area in range(200, 1000) for _ in range(6)]
    numbers += [
        f"{area}{exchange}0100" for area in (212, 416, 800, 808, 907, 939) for exchange in range(200, 1000, 7)
    ]
    phones._phone_cache.clear()  # every number parsed here, none remembered from another test
    for national in numbers:
        for raw, region in (
            (f"+1 {national}", "GB"),
            (f"({national[:3]}) {national[3:6]}-{national[6:]}", "CA"),
        ):
            expected = _reference(raw, region)
            e164, zones, error = normalize_phone(raw, region)
            if expected is None:
                assert e164 == "" and error, raw
            else:
                assert (e164, zones, error) == (*expected, ""), raw


def _shapes(rng: random.Random, national: str) -> list[str]:
    """A national number written the ways lead files write it, extensions included."""
    a, b, c = national[:3], national[3:6], national[6:]
    plain = [
        f"({a}) {b}-{c}",
        f"{a}-{b}-{c}",
        f"{a}.{b}.{c}",
        f"+1 {a} {b} {c}",
        f"1{national}",
        f"+1{national}",
        f"1 ({a}) {b}-{c}",
        f"{national}.0",
        f"{a} {b}{c}",
    ]
    tails = ["", " ext. 12", " ext 7", "ext.123456", " x45", "x9", "\text. 3", " x 1234567", " ext.", " X12"]
    return [rng.choice(plain) + rng.choice(tails) for _ in range(3)]


def general_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Switch both fast paths off: normalize_phone is then phonenumbers alone (the reference)."""
    monkeypatch.setattr(phones, "_nanp_result", lambda value, region: None)
    monkeypatch.setattr(phones, "_digits_result", lambda value, region: None)
    phones._phone_cache.clear()


def test_fast_path_gives_exactly_what_phonenumbers_gives(monkeypatch: pytest.MonkeyPatch) -> None:
    # A differential test: a large generated corpus of numbers, valid and not (every +1
    # area code with random exchanges, the shapes of _shapes, extensions, other countries'
    # numbers), through normalize_phone and through the general path alone (the fast path
    # switched off): every result, E.164, zones and error message, must be the same.
    rng = random.Random(1515)
    corpus = [
        shape
        for area in range(200, 1000)
        for _ in range(4)
        for shape in _shapes(rng, f"{area}{rng.randrange(10**7):07d}")
    ]
    corpus += [
        f"+{code} {rng.randrange(10**9):09d}" for code in (33, 44, 49, 52, 61, 81, 91) for _ in range(50)
    ]
    corpus += [
        "555-12",
        "1.23457E+10",
        "+1 212 555 01",
        "212-555-01000",
        "(212) 555-0100 ext",
        "2125550100\nx12",
    ]
    regions = ("US", "CA", "GB")
    fast = {(raw, region): phones._normalize(raw, region) for raw in corpus for region in regions}
    assert sum(1 for e164, _, _ in fast.values() if e164) > len(fast) // 4  # many valid numbers
    general_only(monkeypatch)
    for (raw, region), result in fast.items():
        assert result == phones._normalize(raw, region), (raw, region)


def test_fast_path_reads_extensions() -> None:
    # The extension forms the fast path takes are those phonenumbers drops: the number
    # is the one before them, as the general path reads it.
    for raw in ("(415) 555-0132 ext. 12", "415-555-0132x7", "+1 415 555 0132 ext 123456"):
        assert phones._nanp_result(raw, "US") is not None, raw
        assert phones._nanp_result(raw, "US") == _reference(raw, "US") + ("",), raw  # type: ignore[operator]
