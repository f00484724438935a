"""Do-not-call lists: every number on the campaign's `suppress` files, as E.164.

Each file may be CSV or XLSX, with a header (the phone column is found by
common names, else the first column is used) or a bare list of numbers.
Numbers in any format are read with `default_region`; cells that are not valid
numbers are ignored. Opt-out lists will join here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from dialer.columns import guess_phone
from dialer.config import Campaign
from dialer.errors import LeadsFileError
from dialer.load import open_leads
from dialer.phones import CHUNK_ROWS, default_workers, normalize_phone, with_phones

_suppression_cache: dict[tuple[object, ...], dict[str, str]] = {}


def _suppression_key(campaign: Campaign) -> tuple[object, ...]:
    stamps: list[object] = [campaign.default_region]
    for path in campaign.suppress:
        try:
            stat = path.stat()
            stamps.append((str(path), stat.st_mtime_ns, stat.st_size))
        except OSError:
            stamps.append((str(path), None))
    return tuple(stamps)


def suppression_sources(campaign: Campaign, workers: int | None = None) -> dict[str, str]:
    """Every number (as E.164) on the campaign's do-not-call lists -> the name of the first file listing it.

    Read again when a list's size or mtime changed since the last call (the
    lists may grow between runs); `workers` as for mapping.map_leads.
    """
    key = _suppression_key(campaign)
    cached = _suppression_cache.get(key)
    if cached is not None:
        return cached
    numbers: dict[str, str] = {}
    for path in campaign.suppress:
        numbers_in = _read_suppression_file(path, campaign.default_region, workers)
        for number in numbers_in:
            numbers.setdefault(number, path.name)
    _suppression_cache.clear()  # one campaign at a time: keep only the latest
    _suppression_cache[key] = numbers
    return numbers


def _read_suppression_file(path: Path, region: str, workers: int | None) -> Iterator[str]:
    if path.is_file() and path.stat().st_size == 0:
        return  # an empty list: nobody has opted out yet
    try:
        dnc = open_leads(path)
    except LeadsFileError as exc:
        raise LeadsFileError(f"{exc} (a do-not-call list in suppress)") from None
    first_cell = dnc.headers[0]
    headerless = normalize_phone(first_cell, region)[0] != ""
    if headerless:
        # A bare list of numbers: its "header" is the first number.
        column = dnc.headers[0]
        yield normalize_phone(first_cell, region)[0]
    else:
        column = guess_phone(dnc.headers, set()) or dnc.headers[0]
    try:
        for _, _, results in with_phones(
            dnc.read(CHUNK_ROWS), column, region, default_workers() if workers is None else workers
        ):
            for e164, _, error in results.values():
                if not error:
                    yield e164
    except LeadsFileError as exc:
        raise LeadsFileError(f"{exc} (a do-not-call list in suppress)") from None


def load_suppression(campaign: Campaign) -> frozenset[str]:
    """Every number (as E.164) on the campaign's do-not-call lists.

    Each file may be CSV or XLSX, with a header (the phone column is found by
    common names, else the first column is used) or a bare list of numbers.
    Numbers in any format are read with `default_region`; cells that are not
    valid numbers are ignored. A missing file is a LeadsFileError.
    """
    return frozenset(suppression_sources(campaign))
