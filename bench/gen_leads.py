"""Write a realistic, messy leads CSV for benchmarks: `python bench/gen_leads.py OUT.csv [ROWS]`.

The mix mirrors what CRM and Excel exports hold: US numbers in every common
format (some stored as floats by Excel, some with extensions), a few UK ones,
accented names, a time-zone column that is mostly empty, and a sprinkling of
rows the dialer must skip (missing or mangled phones, unknown zones, repeats).
"""

from __future__ import annotations

import csv
import random
import sys
from pathlib import Path

# Real US area codes across all four mainland zones, so time-zone inference
# sees a realistic spread of prefixes.
_AREA_CODES_TEXT = (
    "201 202 203 205 206 207 208 210 212 213 214 215 216 217 218 219 224 225 228 229 "
    "231 234 239 240 248 251 252 253 254 256 260 262 267 269 270 276 281 301 302 303 "
    "304 305 307 308 309 310 312 313 314 315 316 317 318 319 320 321 323 325 330 334 "
    "336 337 339 347 351 352 360 361 385 386 401 402 404 405 406 407 408 409 410 412 "
    "413 414 415 417 419 423 424 425 430 432 434 435 440 442 443 458 469 470 475 478 "
    "479 480 484 501 502 503 504 505 507 508 509 510 512 513 515 516 517 518 520 530 "
    "540 541 551 559 561 562 563 567 570 571 573 574 575 580 585 586 601 602 603 605 "
    "606 607 608 609 610 612 614 615 616 617 618 619 620 623 626 630 631 636 641 646 "
    "650 651 657 660 661 662 678 682 701 702 703 704 706 707 708 712 713 714 715 716 "
    "717 718 719 720 724 727 731 732 734 740 754 757 760 763 765 770 772 773 774 775 "
    "781 785 786 801 802 803 804 805 806 808 810 812 813 814 815 816 817 818 828 830 "
    "831 832 843 845 847 848 850 856 857 858 859 860 862 863 864 865 870 872 878 901 "
    "903 904 906 907 908 909 910 912 913 914 915 916 917 918 919 920 925 928 931 936 "
    "937 940 941 947 949 951 952 954 956 959 970 971 972 973 978 979 980 985 989"
)
_AREA_CODES = tuple(_AREA_CODES_TEXT.split())

_FIRST = [
    "José",
    "Zoë",
    "Renée",
    "Björn",
    "Ana",
    "John",
    "Mary",
    "Wei",
    "Fatima",
    "Liam",
    "Noah",
    "Olivia",
    "Chloé",
    "Søren",
    "Priya",
    "Mateo",
    "Ava",
    "Lucía",
    "Émile",
    "Kai",
]
_LAST = [
    "Müller",
    "García",
    "Smith",
    "O'Brien",
    "Nguyen",
    "Johnson",
    "Łukasz",
    "Dubois",
    "Brown",
    "Kowalski",
    "Rossi",
    "Patel",
    "Kim",
    "Jones",
    "Núñez",
    "Williams",
]
_COMPANIES = [
    "Acme, Inc.",
    "Globex",
    "Initech",
    "Umbrella",
    "Stark Industries",
    "Wayne Enterprises",
    "Société Générale",
    "Hooli",
    "Pied Piper",
    "Vandelay Industries",
]
_ZONES = ["America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles"]

HEADERS = ["First Name", "Last Name", "Phone Number", "Company", "E-mail", "Time Zone", "Signup Date"]


def _us_phone(rng: random.Random) -> str:
    area = rng.choice(_AREA_CODES)
    exchange = rng.randrange(200, 1000)
    line = rng.randrange(10000)
    digits = f"{area}{exchange:03d}{line:04d}"
    style = rng.random()
    if style < 0.30:
        return f"({area}) {exchange:03d}-{line:04d}"
    if style < 0.50:
        return f"{area}-{exchange:03d}-{line:04d}"
    if style < 0.65:
        return f"+1 {area} {exchange:03d} {line:04d}"
    if style < 0.75:
        return digits
    if style < 0.82:
        return f"1{digits}"  # a number column saved by Excel: country code, no plus
    if style < 0.88:
        return f"{digits}.0"  # a float written as text by an export
    if style < 0.94:
        return f"{area}.{exchange:03d}.{line:04d}"
    if style < 0.97:
        return f"+1{digits}"
    return f"({area}) {exchange:03d}-{line:04d} ext. {rng.randrange(10, 999)}"


def _row(rng: random.Random, index: int, seen: list[str]) -> list[str]:
    roll = rng.random()
    if roll < 0.003:
        phone = ""  # missing
    elif roll < 0.005:
        phone = f"{rng.randrange(1, 10)}.{rng.randrange(10000, 99999)}E+10"  # Excel lost digits
    elif roll < 0.007:
        phone = f"555-{rng.randrange(10, 99)}"  # too short
    elif roll < 0.012 and seen:
        phone = rng.choice(seen)  # a repeat of an earlier row
    elif roll < 0.03:
        phone = f"+44 20 7946 {rng.randrange(10000):04d}"
    else:
        phone = _us_phone(rng)
    if len(seen) < 1000:
        seen.append(phone)
    zone_roll = rng.random()
    if zone_roll < 0.9:
        zone = ""
    elif zone_roll < 0.999:
        zone = rng.choice(_ZONES)
    else:
        zone = "EST5"  # not an IANA name: the row is invalid
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    email = f"{first.lower()}.{index}@example.com"
    signup = f"2024-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}"
    return [first, last, phone, rng.choice(_COMPANIES), email, zone, signup]


def write_leads_csv(path: Path | str, rows: int, seed: int = 0) -> Path:
    """Write `rows` leads plus a header to `path` (UTF-8, comma) and return the path."""
    rng = random.Random(seed)
    path = Path(path)
    seen: list[str] = []
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADERS)
        for index in range(rows):
            writer.writerow(_row(rng, index, seen))
    return path


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/tmp/leads_1m.csv")
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000
    write_leads_csv(out, count)
    print(f"wrote {count} rows to {out}")
