"""The fast path of numbers of every country gives exactly what phonenumbers gives."""

from __future__ import annotations

import random

import phonenumbers
import pytest
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, PhoneNumberFormat, PhoneNumberType

from dialer import phones
from tests.test_phones import general_only

# Default regions whose parsing differs: NANP ones (IDD 011, national prefix 1), a code
# shared by several regions with leading digits (GG under +44, KZ under +7), national
# prefixes that are transformed (AR, BR, MG, SM), "00" and other IDDs (GB, JP, AU, RU),
# Italy's leading zeros, and a lower-case or unknown region (only a "+" is read then).
_REGIONS = (
    "US",
    "CA",
    "JM",
    "GB",
    "GG",
    "DE",
    "FR",
    "IT",
    "IN",
    "AU",
    "BR",
    "AR",
    "JP",
    "RU",
    "KZ",
    "MG",
    "SM",
)
_ODD_REGIONS = ("us", "XX")
_TYPES = [
    kind
    for name, kind in vars(PhoneNumberType).items()
    if isinstance(kind, int) and not name.startswith("_") and kind != PhoneNumberType.UNKNOWN
]


def _examples() -> list[tuple[int, str, str]]:
    """(country code, national significant number, region) of phonenumbers' example of every
    type of every region (its region "001" for a non-geographic code)."""
    found: set[tuple[int, str, str]] = set()
    for code, regions in COUNTRY_CODE_TO_REGION_CODE.items():
        for region in regions:
            if region == "001":
                numbers = [phonenumbers.example_number_for_non_geo_entity(code)]
            else:
                numbers = [phonenumbers.example_number_for_type(region, kind) for kind in _TYPES]
            for number in numbers:
                if number is not None:
                    found.add((code, phonenumbers.national_significant_number(number), region))
    return sorted(found)


def _separated(rng: random.Random, digits: str) -> str:
    """The digits with a separator lead files use between some of them."""
    out = []
    for i, digit in enumerate(digits):
        if i and rng.random() < 0.25:
            out.append(rng.choice((" ", " ", "-", ".", "/", ") ", " (")))
        out.append(digit)
    return "".join(out)


def _written(rng: random.Random, code: int, national: str) -> list[str]:
    """A number written the ways people write it: international and national formats, IDDs,
    a "(0)", the country code without "+", separators, extensions; three of them at random."""
    try:
        number = phonenumbers.parse(f"+{code}{national}", None)
        formats = [
            phonenumbers.format_number(number, PhoneNumberFormat.NATIONAL),
            phonenumbers.format_number(number, PhoneNumberFormat.INTERNATIONAL),
        ]
    except phonenumbers.NumberParseException:
        formats = []
    shapes = [
        *formats,
        f"+{code}{national}",
        f"+{code} {_separated(rng, national)}",
        f"+ {code} ({national[:2]}) {national[2:]}",
        f"+{code} (0){national}",
        f"00{code} {national}",
        f"011 {code} {_separated(rng, national)}",
        f"8 10 {code} {national}",
        f"0{_separated(rng, national)}",
        national,
        f"{code}{national}",
        f"({national[:3]}) {national[3:]}",
        f"+{code}{national}.0",
        f"{code}{national}.0",
    ]
    tails = ["", "", "", " ext. 12", "x7", " x 1234567", "\t"]
    return [rng.choice(shapes) + rng.choice(tails) for _ in range(3)]


def _mutated(rng: random.Random, national: str) -> str:
    """A near miss of a valid number: its start kept, the rest random, a digit more or less."""
    keep = rng.randrange(1, len(national) + 1)
    size = max(0, len(national) - keep + rng.choice((0, 0, 1, -1)))
    return national[:keep] + "".join(rng.choice("0123456789") for _ in range(size))


def _corpus(rng: random.Random) -> list[tuple[str, str]]:
    pairs = []
    for code, national, own in _examples():
        for variant in (national, national, *(_mutated(rng, national) for _ in range(3))):
            for raw in _written(rng, code, variant):
                # Read in the number's own region (a national format is meant for it) or another.
                pairs.append((raw, own if own != "001" and rng.random() < 0.5 else rng.choice(_REGIONS)))
                if rng.random() < 0.05:
                    pairs.append((raw, rng.choice(_ODD_REGIONS)))
    # Strings of digits and separators alone, prefixes and all.
    for _ in range(3000):
        body = "".join(rng.choice("0123456789" * 6 + " .-/()") for _ in range(rng.randrange(2, 18)))
        prefix = rng.choice(("", "+", "+ ", "00", "011", "0", "(0)", "+(", "1", "810"))
        pairs.append((prefix + body + rng.choice(("", "", " x12", "ext.3", ")")), rng.choice(_REGIONS)))
    return pairs


def test_every_country_gives_exactly_what_phonenumbers_gives(monkeypatch: pytest.MonkeyPatch) -> None:
    # A differential test: phonenumbers' example number of every type of every region,
    # near misses of each (valid or not), written in many shapes and read in their own
    # region or in others, through normalize_phone and through phonenumbers alone (both fast paths
    # off): every result, E.164, zones and error message, must be the same.
    rng = random.Random(4915)
    corpus = _corpus(rng)
    digits_result = phones._digits_result
    phones._phone_cache.clear()
    fast = [phones._normalize(raw, region) for raw, region in corpus]
    taken = sum(1 for raw, region in corpus if phones._digits_result(raw, region) is not None)
    codes = {phonenumbers.parse(e164, None).country_code for e164, _, _ in fast if e164}
    assert taken > len(corpus) // 8 and len(codes) > 150  # the digits path took many, of many countries
    general_only(monkeypatch)
    for (raw, region), result in zip(corpus, fast, strict=True):
        assert result == phones._normalize(raw, region), (raw, region)
        # And it gives up on none it could take: every valid number in its shape is its own.
        value = raw.strip()
        if result[0] and phones._DIGITS_SHAPE.fullmatch(value) and not phones._INTEGRAL_FLOAT.match(value):
            assert digits_result(value, region) == result, (raw, region)


@pytest.mark.parametrize(
    ("raw", "region", "e164"),
    [
        pytest.param("+44 20 7946 0958", "US", "+442079460958", id="uk-international"),
        pytest.param("+44 (0)20 7946 0958", "US", "+442079460958", id="uk-with-national-prefix"),
        pytest.param("020 7946 0958", "GB", "+442079460958", id="uk-national"),
        pytest.param("011 44 20 7946 0958", "US", "+442079460958", id="uk-from-us-idd"),
        pytest.param("0049 30 1234567", "GB", "+49301234567", id="germany-from-uk-idd"),
        pytest.param("030/1234567", "DE", "+49301234567", id="germany-slash"),
        pytest.param("+33 1 42 68 53 00", "US", "+33142685300", id="france"),
        pytest.param("+91 98765 43210", "US", "+919876543210", id="india-mobile"),
        pytest.param("+39 06 1234 5678", "US", "+390612345678", id="italy-leading-zero"),
        pytest.param("+7 701 123 4567", "RU", "+77011234567", id="kazakhstan-under-plus-7"),
        pytest.param("+44 7911 123456 ext. 12", "US", "+447911123456", id="uk-mobile-extension"),
        pytest.param("415/555/0132", "US", "+14155550132", id="nanp-slash"),
    ],
)
def test_digits_path_takes_common_international_shapes(raw: str, region: str, e164: str) -> None:
    # These go through the digits fast path (not phonenumbers.parse), and it reads them as
    # phonenumbers does.
    result = phones._digits_result(raw, region)
    assert result is not None and result[0] == e164, raw
    phones._phone_cache.clear()
    assert result == phones._general(raw, raw.strip(), region), raw


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param("415\t555\t0132", id="tabs"),
        pytest.param("415\n555 0132", id="newline"),
        pytest.param("+1\t415 555 0132", id="tab-after-country-code"),
        pytest.param("415\u2003555 0132", id="em-space"),
        pytest.param("(415) 555-\u0660\u0661\u0663\u0662", id="arabic-indic-digits"),
        pytest.param("+44\t20 7946 0958", id="uk-tab"),
    ],
)
def test_fast_paths_leave_other_whitespace_and_digits_to_phonenumbers(
    raw: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # phonenumbers refuses a number with a tab or a newline between its digits ("not a
    # phone number") and reads other scripts' digits as ASCII ones: the fast paths once
    # took these (and gave "+1415555" + Arabic-Indic digits as the E.164).
    fast = phones._normalize(raw, "US")
    general_only(monkeypatch)
    assert fast == phones._normalize(raw, "US"), raw
