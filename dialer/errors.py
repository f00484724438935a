"""The dialer's exceptions, one family per exit code.

    DialerError                 base of everything the dialer raises on purpose
    ├── UserError               exit 2: the user's input is wrong; one line says where
    │   ├── CampaignError       the campaign file (TOML syntax, a key, a value)
    │   ├── LeadsFileError      a leads or do-not-call file (missing, empty, binary, a column)
    │   └── SetupError          the environment (no API key, bad --base-url)
    ├── LockedError             exit 75: another run holds this campaign's lock
    ├── ApiUnreachable          exit 75: the API is down; rows left dialable for a later run
    ├── AuthError               exit 1: the API refused the key (401/403); the run stops at once
    ├── FailingError            exit 1: stop_when_failed: too many of the last calls failed
    └── JournalError            exit 1: the journal cannot be opened or is not this campaign's

Each stage wraps the errors of the libraries it uses (tomllib, pydantic, pandas,
sqlite3, httpx) in one of these, with the file, row, column or key in the
message, so the CLI can print `str(error)` as the single line a user sees.
"""

from __future__ import annotations


class DialerError(Exception):
    """Base class: the message is one line meant for the person running the dialer."""

    exit_code = 1


class UserError(DialerError):
    """Bad command line, campaign file or leads file: nothing was sent."""

    exit_code = 2


class CampaignError(UserError):
    """The campaign file cannot be read or holds a bad key or value."""


class LeadsFileError(UserError):
    """A leads or do-not-call file cannot be read, or lacks a needed column."""


class SetupError(UserError):
    """The environment is not set up for this run (for instance, no API key)."""


class LockedError(DialerError):
    """Another run holds this campaign's lock."""

    exit_code = 75


class ApiUnreachable(DialerError):
    """Requests in a row, across rows, reached no API: it is down, not the rows' fault."""

    exit_code = 75


class AuthError(DialerError):
    """The API refused the key: every later request would be refused too."""

    exit_code = 1


class JournalError(DialerError):
    """The journal cannot be opened, or belongs to another campaign."""

    exit_code = 1


class FailingError(DialerError):
    """`[limits] stop_when_failed`: that share of the last calls failed (a wrong agent, say)."""

    exit_code = 1
