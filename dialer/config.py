"""The campaign file: a TOML document validated into pydantic models at load.

Every setting is checked here, before any file is read or request sent, so a
bad rate or a missing model_id fails with one line naming the key.
Relative paths are resolved against the campaign file's folder.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from datetime import date, datetime, time
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails

from dialer.errors import CampaignError
from dialer.model import FINAL_CALL_STATUSES

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
E164 = re.compile(r"^\+[1-9]\d{6,14}$")


class _Strict(BaseModel):
    # A misspelt key is a mistake the user wants to hear about, not a silent default;
    # inf and nan are TOML floats but no setting means anything with them.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Api(_Strict):
    base_url: str = "https://api.synthflow.ai"
    timeout_seconds: Annotated[float, Field(gt=0)] = 30.0

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError(f"must be an http(s) URL, not {value!r}")
        return value.rstrip("/")


class Call(_Strict):
    model_id: Annotated[str, Field(min_length=1)]
    prompt: str | None = None
    greeting: str | None = None


class Template(_Strict):
    content_sid: Annotated[str, Field(min_length=1)]
    variables: dict[str, str] = {}


class Chat(_Strict):
    agent_id: Annotated[str, Field(min_length=1)]
    channel: Literal["whatsapp", "sms"]
    initial_message: str | None = None
    template: Template | None = None


class Columns(_Strict):
    phone: str | None = None
    name: str | list[str] | None = None
    timezone: str | None = None
    email: str | None = None
    # The lead's US state (a code like FL or a name), for the law's calling hours and caps.
    state: str | None = None
    variables: list[str] | None = None


class Numbers(_Strict):
    pool: list[str] = []
    strategy: Literal["local", "round_robin", "least_used"] = "local"
    daily_cap: Annotated[int, Field(gt=0)] | None = None

    @field_validator("pool")
    @classmethod
    def _e164(cls, pool: list[str]) -> list[str]:
        for number in pool:
            if not E164.match(number):
                raise ValueError(f"{number!r} is not an E.164 number like +14155550100")
        if len(set(pool)) != len(pool):
            raise ValueError("lists a number twice")
        return pool


class StopWhenFailed(_Strict):
    """Stop the run when `share` of the last `of_last` calls failed (a misconfigured campaign)."""

    share: Annotated[float, Field(gt=0, le=1)] = 0.5
    of_last: Annotated[int, Field(ge=1)] = 20


class Limits(_Strict):
    rate_per_second: Annotated[float, Field(gt=0)] = 5.0
    concurrency: Annotated[int, Field(ge=1, le=1000)] = 10
    max_attempts: Annotated[int, Field(ge=1)] = 4
    # How long after an unanswered request a look-up that finds no call is
    # trusted to mean "not placed" (the API may still be creating it).
    settle_after_seconds: Annotated[float, Field(ge=0)] = 60.0
    # Full-jitter exponential backoff for retryable answers (503, refused connection).
    backoff_base_seconds: Annotated[float, Field(ge=0)] = 1.0
    backoff_max_seconds: Annotated[float, Field(ge=0)] = 60.0
    # On SIGINT/SIGTERM, how long in-flight requests may take to finish.
    drain_seconds: Annotated[float, Field(ge=0)] = 30.0
    # Adaptive pacing lowers the rate on 429s; it never goes below this.
    min_rate_per_second: Annotated[float, Field(gt=0)] = 0.2
    # Calls to one number in any 24 hours (None: no cap of the campaign's own); the law's
    # cap for the lead's state (dialer/data/calling_law.toml) holds as well, the lower wins.
    calls_per_24h: Annotated[int, Field(ge=1)] | None = None
    # Calls live at once, from the accepted POST until the dialer has seen the final status.
    max_live_calls: Annotated[int, Field(ge=1)] | None = None
    stop_when_failed: StopWhenFailed | None = None
    # PostgreSQL journal, several runs at once: how long a run's claim on a row lasts
    # unless renewed (a run that dies gives its rows back after this).
    claim_lease_seconds: Annotated[float, Field(gt=0)] = 30.0


class Account(_Strict):
    """[account]: the Synthflow account's own limits, shared by every campaign naming it."""

    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    rate_per_second: Annotated[float, Field(gt=0)] | None = None
    # Live calls of every campaign naming the account, together (store/liveslots.py).
    max_live_calls: Annotated[int, Field(ge=1)] | None = None


def parse_duration(value: str | float) -> float:
    """ "90s", "30m", "2h", "1d" or a number of seconds, as seconds; ValueError when not one."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", str(value))
        if not match:
            raise ValueError(f'expected a duration such as "90s", "30m", "2h" or "1d", got {value!r}')
        seconds = float(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]
    if not seconds > 0:
        raise ValueError(f"a duration must be more than 0, got {value!r}")
    return seconds


class Outcomes(_Strict):
    """How live calls are followed to their end (mode = "call")."""

    poll_seconds: Annotated[float, Field(gt=0)] = 5.0
    # A call with no final status this long after it was placed is reported as never ended
    # (calls stuck "in-progress" for days are real): the row keeps its last status, the slot
    # is freed. Four hours: longer than any real conversation, short enough for a day's run.
    give_up_after: float = 4 * 3600.0
    # A collected variable: a call ending with it yes / true / 1 puts the number on the list.
    opt_out_variable: Annotated[str, Field(min_length=1)] | None = None
    opt_out_list: Path | None = None

    @field_validator("give_up_after", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return parse_duration(value)

    @model_validator(mode="after")
    def _opt_out_both(self) -> Outcomes:
        if (self.opt_out_variable is None) != (self.opt_out_list is None):
            raise ValueError("opt_out_variable and opt_out_list go together: give both, or neither")
        return self


# The call statuses `[redial]` may name: the API's final ones.
REDIAL_STATUSES = tuple(sorted(FINAL_CALL_STATUSES))


class Redial(_Strict):
    """`[redial]`: per final call status, the wait before the lead's next call; `max_calls`
    calls per lead in all, the first included. A status not named is never redialed."""

    waits: dict[str, float] = {}
    max_calls: Annotated[int, Field(ge=1)] = 3

    @model_validator(mode="before")
    @classmethod
    def _statuses(cls, data: Any) -> Any:
        # The file names statuses as keys ("no-answer" = "2h"): they become `waits`.
        if not isinstance(data, dict) or "waits" in data:
            return data
        waits: dict[str, float] = {}
        rest: dict[str, Any] = {}
        for key, value in data.items():
            if key == "max_calls":
                rest[key] = value
            elif key in REDIAL_STATUSES:
                try:
                    waits[key] = parse_duration(value)
                except ValueError as exc:
                    raise ValueError(f"{key}: {exc}") from None
            else:
                near = difflib.get_close_matches(key, [*REDIAL_STATUSES, "max_calls"], n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                raise ValueError(
                    f"{key!r} is not a final call status{hint}; name one of {', '.join(REDIAL_STATUSES)},"
                    " or max_calls"
                )
        return {**rest, "waits": waits}


def _parse_date(value: str) -> date | None:
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        return None


def _parse_clock(value: str) -> time | None:
    match = re.fullmatch(r"(\d{1,2}):(\d{2})", value.strip())
    if not match:
        return None
    hour, minute = int(match[1]), int(match[2])
    if (hour, minute) == (24, 0):
        return time.max
    if hour > 23 or minute > 59:
        return None
    return time(hour, minute)


class Hours(_Strict):
    start: str = "08:00"
    end: str = "21:00"
    days: list[str] = list(DAYS[:6])
    # Whole days without calls (holidays), each in the lead's own local time.
    skip_dates: list[str] = []

    @field_validator("skip_dates", mode="before")
    @classmethod
    def _skip_dates(cls, value: object) -> object:
        # A TOML date (2026-12-25, unquoted) arrives as datetime.date; a quoted one as str.
        if not isinstance(value, list):
            return value
        texts: list[object] = []
        for item in value:
            if isinstance(item, datetime):
                raise ValueError(f"{item.isoformat()} has a time of day; give a date like 2026-12-25")
            if isinstance(item, date):
                item = item.isoformat()
            if isinstance(item, str) and _parse_date(item) is None:
                raise ValueError(f'{item!r} is not a date like "2026-12-25"')
            texts.append(item)
        return texts

    @field_validator("start", "end")
    @classmethod
    def _clock(cls, value: str) -> str:
        if _parse_clock(value) is None:
            raise ValueError(f'{value!r} is not a time of day like "08:00" (24:00 is the end of day)')
        return value

    @field_validator("days")
    @classmethod
    def _days(cls, days: list[str]) -> list[str]:
        days = [d.strip().lower()[:3] for d in days]
        if not days:
            raise ValueError("lists no day: nobody could ever be called")
        for day in days:
            if day not in DAYS:
                raise ValueError(f"{day!r} is not a day; use {', '.join(DAYS)}")
        return days

    @model_validator(mode="after")
    def _order(self) -> Hours:
        if self.start_time >= self.end_time:
            raise ValueError(f"start {self.start} must be before end {self.end}")
        return self

    @property
    def start_time(self) -> time:
        parsed = _parse_clock(self.start)
        assert parsed is not None
        return parsed

    @property
    def end_time(self) -> time:
        parsed = _parse_clock(self.end)
        assert parsed is not None
        return parsed

    @property
    def skip_date_set(self) -> frozenset[date]:
        return frozenset(d for d in (_parse_date(text) for text in self.skip_dates) if d is not None)


class Campaign(_Strict):
    """A whole campaign file. `path` is the file itself; other paths are absolute."""

    path: Path
    name: Annotated[str, Field(min_length=1)]
    mode: Literal["call", "chat"]
    leads: Path
    report: Path | None = None
    journal: Path | str | None = None  # a SQLite file, or a postgresql:// URL
    default_region: str = "US"
    suppress: list[Path] = []
    encoding: str | None = None
    sheet: str | None = None
    api: Api = Api()
    call: Call | None = None
    chat: Chat | None = None
    columns: Columns = Columns()
    numbers: Numbers = Numbers()
    limits: Limits = Limits()
    hours: Hours = Hours()
    outcomes: Outcomes = Outcomes()
    redial: Redial = Redial()
    account: Account | None = None

    @field_validator("name")
    @classmethod
    def _file_name(cls, value: str) -> str:
        # The name makes the report's and the journal's file names: it must stay one name.
        if value.strip() in (".", "..") or any(ch in value for ch in "/\\") or not value.isprintable():
            raise ValueError(
                f"{value!r} cannot be a file name: use letters, digits, spaces, - or _ "
                "(no / or \\, no control characters)"
            )
        return value

    @field_validator("default_region")
    @classmethod
    def _region(cls, value: str) -> str:
        return check_region(value)

    @model_validator(mode="after")
    def _mode_section(self) -> Campaign:
        wanted, other = ("call", "chat") if self.mode == "call" else ("chat", "call")
        if getattr(self, other) is not None:
            # Refused, not ignored: the other table says the user meant the other
            # mode, and a phone call placed instead of a message cannot be taken back.
            raise ValueError(
                f'a [{other}] table is for mode = "{other}" but mode = "{wanted}": '
                f"remove [{other}] or change mode"
            )
        if self.mode == "call" and self.call is None:
            raise ValueError('mode = "call" needs a [call] table with model_id')
        if self.mode == "chat":
            if self.chat is None:
                raise ValueError('mode = "chat" needs a [chat] table with agent_id and channel')
            if not self.numbers.pool:
                raise ValueError('mode = "chat" needs [numbers] pool: from_number is required')
        return self

    @property
    def report_path(self) -> Path:
        return self.report or self.path.parent / "out" / f"{self.name}.report.csv"

    @property
    def journal_path(self) -> Path:
        """The SQLite journal's file (for a PostgreSQL journal: where one would be; unused)."""
        if isinstance(self.journal, Path):
            return self.journal
        return self.report_path.with_name(f"{self.name}.sqlite")


# What people write for a region libphonenumber spells otherwise (ISO 3166-1 codes).
_REGION_ALIASES = {"UK": "GB", "EL": "GR"}


def check_region(value: str) -> str:
    """`value` as an upper-case region code libphonenumber knows; ValueError naming a fix if not."""
    # Imported here: phonenumbers takes a while to load and only a campaign file needs it.
    from phonenumbers import SUPPORTED_REGIONS

    region = value.strip().upper()
    if region in SUPPORTED_REGIONS:
        return region
    alias = _REGION_ALIASES.get(region)
    if alias is not None:
        raise ValueError(f'{value!r} is not a region code; use "{alias}"')
    raise ValueError(f'{value!r} is not a region code phone numbers know; use two letters like "US" or "GB"')


# The labels pydantic adds to an error's location for a branch of a union or a validator.
_TYPE_LABELS = ("str", "list[str]", "int", "float", "bool")


def _locate(error: ErrorDetails) -> str:
    """`('limits', 'rate_per_second')` -> `[limits] rate_per_second`."""
    loc = [
        str(part)
        for part in error["loc"]
        if str(part) not in _TYPE_LABELS and not str(part).startswith(("function-", "literal["))
    ]
    if not loc:
        return "campaign"
    if len(loc) == 1:
        return loc[0]
    return f"[{loc[0]}] {'.'.join(loc[1:])}"


def _message(error: ErrorDetails) -> str:
    msg = str(error["msg"])
    msg = msg.removeprefix("Value error, ")
    if error["type"] == "missing":
        return "is missing"
    if error["type"] == "extra_forbidden":
        return "is not a known key"
    return msg[0].lower() + msg[1:] if msg else msg


def _explain(errors: list[ErrorDetails]) -> str:
    """One line for the validation errors: an unknown key first (the likely cause of the rest).

    A misspelt required key ("modle_id") gives two errors, the unknown key and the
    missing one: both are named, so the user sees the typo and what it should be.
    """
    unknown = [e for e in errors if e["type"] == "extra_forbidden"]
    if not unknown:
        return f"{_locate(errors[0])}: {_message(errors[0])}"
    first = unknown[0]
    table = first["loc"][:-1]
    missing = [str(e["loc"][-1]) for e in errors if e["type"] == "missing" and e["loc"][:-1] == table]
    line = f"{_locate(first)}: {_message(first)}"
    if missing:
        close = difflib.get_close_matches(str(first["loc"][-1]), missing, n=1, cutoff=0.0)
        line += f"; did you mean {close[0]}? ({close[0]} is missing)"
    return line


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise CampaignError(f"{path}: campaign file not found") from None
    except IsADirectoryError:
        raise CampaignError(f"{path}: is a folder, not a campaign file") from None
    except UnicodeDecodeError:
        raise CampaignError(f"{path}: not a text file (expected TOML)") from None
    except OSError as exc:
        raise CampaignError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CampaignError(f"{path}: TOML syntax error: {exc}") from None


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    """Make the file paths of the campaign absolute, relative to its folder (`base`)."""

    def beside(value: object) -> object:
        # normpath, not resolve(): "../out" reads better in messages, and symlinks stay as given.
        return Path(os.path.normpath(base / value)) if isinstance(value, str) else value

    for key in ("leads", "report", "journal"):
        if key == "journal" and str(data.get(key, "")).startswith(("postgresql://", "postgres://")):
            continue  # a database, not a file beside the campaign
        if key in data:
            data[key] = beside(data[key])
    outcomes = data.get("outcomes")
    if isinstance(outcomes, dict) and "opt_out_list" in outcomes:
        outcomes["opt_out_list"] = beside(outcomes["opt_out_list"])
    if isinstance(data.get("suppress"), str):
        data["suppress"] = [data["suppress"]]
    if isinstance(data.get("suppress"), list):
        data["suppress"] = [beside(p) for p in data["suppress"]]


def load_campaign(path: Path | str) -> Campaign:
    """Read and validate a campaign file; raise CampaignError with one line on any problem."""
    path = Path(path)
    data = _read_toml(path)
    if "path" in data:
        raise CampaignError(f"{path}: path: is not a known key")
    _resolve_paths(data, path.resolve().parent)
    try:
        return Campaign(path=path.resolve(), **data)
    except ValidationError as exc:
        raise CampaignError(f"{path}: {_explain(exc.errors())}") from None
