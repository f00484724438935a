"""Headers -> fields: which column of the leads file holds the phone, the name, the zone...

Keys set in the campaign's [columns] must name existing headers (case and
surrounding spaces do not matter); keys left out are matched by common header
names ("Mobile", "First Name" + "Last Name", "E-mail"). Every column no field
took is a custom variable. Any column, a custom variable or not, can fill a
{Column} placeholder of the campaign's texts; check_placeholders refuses one
that names no column.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from dialer.config import Campaign
from dialer.errors import CampaignError, LeadsFileError

INFERRED = "(inferred from the number)"


@dataclass(frozen=True)
class ColumnMap:
    """Which header of the leads file feeds which field. Names are headers as in the file."""

    phone: str
    name: tuple[str, ...]  # one column, or ("First Name", "Last Name") joined by a space
    timezone: str | None
    email: str | None
    variables: tuple[str, ...]  # custom variables, in file order
    state: str | None = None  # the lead's US state, for the law (else its area code decides)

    def describe(self) -> list[tuple[str, str]]:
        """(field, column(s)) pairs for `validate` to print."""
        pairs = [
            ("phone", self.phone),
            ("name", " + ".join(self.name) if self.name else "(none)"),
            ("timezone", self.timezone or INFERRED),
            ("email", self.email or "(none)"),
            ("variables", ", ".join(self.variables) if self.variables else "(none)"),
        ]
        if self.state is not None:  # without one, the area code decides the law: nothing to say
            pairs.insert(4, ("state", self.state))
        return pairs


# Common header names, best first, compared after _compact() (accents, case,
# spaces and punctuation removed: "E-mail" and "e_mail" are both "email").
PHONE_NAMES = (
    "phone",
    "phonenumber",
    "phoneno",
    "mobile",
    "mobilenumber",
    "mobilephone",
    "cell",
    "cellphone",
    "cellnumber",
    "tel",
    "telephone",
    "telephonenumber",
    "contactnumber",
    "contactphone",
    "whatsapp",
    "whatsappnumber",
    "msisdn",
    "telefono",
    "celular",
    "movil",
    "handy",
    "number",
)
NAME_NAMES = (
    "name",
    "fullname",
    "contactname",
    "leadname",
    "customername",
    "clientname",
    "contact",
)
FIRST_NAMES = ("firstname", "first", "givenname", "forename", "fname")
LAST_NAMES = ("lastname", "last", "surname", "familyname", "lname")
TIMEZONE_NAMES = ("timezone", "tz", "timezonename", "ianatimezone")
EMAIL_NAMES = ("email", "emailaddress", "mail", "mailaddress")
# Only names that mean a US state: "Province" or "Region" hold other countries' places
# (or a sales region), and a value that is no US state would make the row invalid.
STATE_NAMES = ("state", "statecode", "usstate", "stateabbreviation", "stateabbr")
# A header holding one of these words is probably a phone even when not named
# exactly ("Primary Phone"), unless it is about the phone ("Phone Type").
_PHONE_WORDS = ("phone", "mobile", "cell")
_NOT_PHONE_WORDS = ("type", "ext", "status", "country", "code", "verified", "carrier")


def _compact(header: str) -> str:
    decomposed = unicodedata.normalize("NFKD", header.casefold())
    return "".join(ch for ch in decomposed if ch.isalnum() and ch.isascii())


def _listed(headers: Sequence[str], limit: int = 25) -> str:
    shown = ", ".join(f'"{h}"' for h in headers[:limit])
    return shown + (f", ... ({len(headers)} in all)" if len(headers) > limit else "")


def _find(path: Path, headers: Sequence[str], wanted: str, key: str) -> str:
    """The header named `wanted`: exactly, else ignoring case and surrounding spaces."""
    if wanted in headers:
        return wanted
    folded = wanted.strip().casefold()
    for header in headers:
        if header.strip().casefold() == folded:
            return header
    raise LeadsFileError(f'{path}: column "{wanted}" ({key}) not found; headers are: {_listed(headers)}')


def _guess(headers: Sequence[str], names: Sequence[str], used: set[str]) -> str | None:
    """The free header matching the best-ranked common name."""
    compacted = [(_compact(h), h) for h in headers if h not in used]
    for name in names:
        for compact, header in compacted:
            if compact == name.replace(" ", ""):
                return header
    return None


def guess_phone(headers: Sequence[str], used: set[str]) -> str | None:
    """The header most likely to hold phone numbers, or None."""
    found = _guess(headers, PHONE_NAMES, used)
    if found is not None:
        return found
    for header in headers:
        compact = _compact(header)
        if (
            header not in used
            and any(word in compact for word in _PHONE_WORDS)
            and not any(word in compact for word in _NOT_PHONE_WORDS)
        ):
            return header
    return None


def _optional_column(
    path: Path,
    headers: Sequence[str],
    given: str | None,
    key: str,
    names: Sequence[str],
    used: set[str],
) -> str | None:
    """The [columns] entry if set (it must exist), else a header with a common name, or None."""
    if given is not None:
        column: str | None = _find(path, headers, given, f"columns.{key}")
    else:
        column = _guess(headers, names, used)
    if column is not None:
        used.add(column)
    return column


def resolve_columns(campaign: Campaign, headers: list[str]) -> ColumnMap:
    """Map headers to fields from [columns] or by common names; LeadsFileError names a missing column.

    A phone column is always required, a name column in mode "call" (the API needs it);
    a {placeholder} of the campaign's texts naming no header is a CampaignError.
    """
    path, given = campaign.leads, campaign.columns
    used: set[str] = set()
    phone = _phone_column(path, headers, given.phone, used)
    name = _name_columns(path, headers, given.name, used)
    if not name and campaign.mode == "call":
        raise LeadsFileError(
            f"{path}: no name column found and the API requires a name; set [columns] name "
            f'to a header or a list like ["First Name", "Last Name"]; headers are: '
            f"{_listed(headers)}"
        )
    used.update(name)
    timezone = _optional_column(path, headers, given.timezone, "timezone", TIMEZONE_NAMES, used)
    email = _optional_column(path, headers, given.email, "email", EMAIL_NAMES, used)
    # The state stays a custom variable too (a copy of `used`): it was one before the law
    # read it, and an agent's prompt may use it.
    state = _optional_column(path, headers, given.state, "state", STATE_NAMES, set(used))
    if given.variables is not None:
        listed = {_find(path, headers, v, "columns.variables") for v in given.variables}
        variables = tuple(h for h in headers if h in listed)
    else:
        variables = tuple(h for h in headers if h not in used)
    check_placeholders(campaign, headers)
    return ColumnMap(phone=phone, name=name, timezone=timezone, email=email, variables=variables, state=state)


def _phone_column(path: Path, headers: Sequence[str], given: str | None, used: set[str]) -> str:
    phone = _find(path, headers, given, "columns.phone") if given is not None else guess_phone(headers, used)
    if phone is None:
        raise LeadsFileError(
            f"{path}: no phone column found; set [columns] phone to one of the headers: {_listed(headers)}"
        )
    used.add(phone)
    return phone


def _name_columns(
    path: Path, headers: Sequence[str], given: str | list[str] | None, used: set[str]
) -> tuple[str, ...]:
    """The [columns] name entry (one header or several), else a guess; () when none is found."""
    if given is not None:
        wanted = [given] if isinstance(given, str) else given
        return tuple(_find(path, headers, n, "columns.name") for n in wanted)
    full = _guess(headers, NAME_NAMES, used)
    first = _guess(headers, FIRST_NAMES, used)
    last = _guess(headers, LAST_NAMES, used | ({first} if first else set()))
    if first is None:
        return (full,) if full else ()
    # "First Name" + "Last Name" beats a "Name" column only when both halves exist:
    # a lone "First Name" beside a "Name" column is usually a nickname.
    if last:
        return (first, last)
    return (full,) if full else (first,)


# --- placeholders --------------------------------------------------------------------

PLACEHOLDER = re.compile(r"\{([^{}]+)\}")
# What a placeholder names when no header does: the lead's mapped fields.
FIELDS = ("name", "phone", "email")


def placeholder_column(key: str, headers: Iterable[str]) -> str | None:
    """The header `{key}` stands for: exactly, else ignoring case and surrounding spaces; or None."""
    headers = list(headers)
    if key in headers:
        return key
    folded = key.strip().casefold()
    return next((header for header in headers if header.strip().casefold() == folded), None)


def campaign_texts(campaign: Campaign) -> list[tuple[str, str]]:
    """(where, text) of every text of the campaign that may hold {Column} placeholders."""
    texts: list[tuple[str, str | None]] = []
    if campaign.call is not None:
        texts += [("[call] prompt", campaign.call.prompt), ("[call] greeting", campaign.call.greeting)]
    if campaign.chat is not None:
        texts.append(("[chat] initial_message", campaign.chat.initial_message))
        if campaign.chat.template is not None:
            texts += [
                (f"[chat] template.variables.{k}", v) for k, v in campaign.chat.template.variables.items()
            ]
    return [(where, text) for where, text in texts if text]


def check_placeholders(campaign: Campaign, headers: Sequence[str]) -> None:
    """CampaignError naming the first {placeholder} that is neither a header nor name/phone/email.

    Checked before anything is sent: a placeholder nobody fills would go out as literal
    text ("Hello {Frist Name}") to every lead.
    """
    for where, text in campaign_texts(campaign):
        for key in PLACEHOLDER.findall(text):
            if placeholder_column(key, headers) is None and key.strip().casefold() not in FIELDS:
                raise CampaignError(
                    f"{campaign.path}: {where}: placeholder {{{key}}} names no column of "
                    f"{campaign.leads.name}; headers are: {_listed(headers)}"
                )
