"""A PostgreSQL URL as the dialer shows it: never with its password. No psycopg needed here.

The password comes from the URL, `PGPASSWORD` or `~/.pgpass` (libpq reads the
last two itself). It is never printed: messages name `redact(url)`, and any
error text from the server or libpq has the password cut out (`scrub`).
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import unquote, urlsplit, urlunsplit

URL_SCHEMES = ("postgresql://", "postgres://")


def is_url(value: object) -> bool:
    return isinstance(value, str) and value.startswith(URL_SCHEMES)


def password_of(url: str) -> str | None:
    try:
        secret = urlsplit(url).password
    except ValueError:
        return None
    return None if secret is None else unquote(secret)


def redact(url: str) -> str:
    """The URL without its password (user, host, port and database kept)."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc.rpartition("@")
    except ValueError:
        return "postgresql://(unreadable URL)"
    if not netloc[1]:
        return url
    user = netloc[0].partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}@{netloc[2]}"))


def scrub(text: str, url: str) -> str:
    """Error text with the password cut out (libpq may echo parts of a connection string)."""
    secret = password_of(url)
    if secret:
        text = text.replace(secret, "***")
    return re.sub(r"(postgres(?:ql)?://[^:/@\s]*):[^@\s]*@", r"\1:***@", text)


def schema_name(campaign: str) -> str:
    """A schema name for the campaign: readable, within PostgreSQL's 63 bytes, never colliding."""
    slug = re.sub(r"[^a-z0-9]+", "_", campaign.lower()).strip("_")[:40]
    digest = hashlib.blake2b(campaign.encode(), digest_size=4).hexdigest()
    return f"dialer_{slug}_{digest}"
