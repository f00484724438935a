"""Request-body checks for the two POST endpoints, as Synthflow's docs describe them.

Each check returns None when the body is fine, else the `detail` of the 400:
`"<field>: <what is wrong>"`. Only the first problem is reported, like the real API.
A null optional field counts as absent (the real API is a FastAPI app, whose
optional fields accept null); a null required field is a wrong type.
"""

from __future__ import annotations

import functools
import re
import zoneinfo
from collections.abc import Callable, Mapping

# A check gets the field's value and returns what is wrong with it, or None.
Check = Callable[[object], "str | None"]

# ASCII digits on purpose: `\d` would also accept other scripts' digits.
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_JSON_KINDS = {
    dict: "an object",
    list: "an array",
    str: "a string",
    bool: "a boolean",
    int: "a number",
    float: "a number",
    type(None): "null",
}


def kind(value: object) -> str:
    """The JSON name of a parsed value's type, for error messages."""
    return _JSON_KINDS.get(type(value), type(value).__name__)


def _string(value: object) -> str | None:
    return None if isinstance(value, str) else f"expected a string, got {kind(value)}"


def _non_empty_string(value: object) -> str | None:
    if not isinstance(value, str):
        return f"expected a string, got {kind(value)}"
    return None if value.strip() else "must not be empty"


def _e164(value: object) -> str | None:
    if not isinstance(value, str):
        return f"expected a string, got {kind(value)}"
    if _E164.fullmatch(value) is None:
        return f"{value!r} is not an E.164 phone number (like +14155550100)"
    return None


def _uuid(value: object) -> str | None:
    if not isinstance(value, str):
        return f"expected a string, got {kind(value)}"
    return None if _UUID.fullmatch(value) else f"{value!r} is not a UUID"


@functools.lru_cache(maxsize=1024)
def _is_time_zone(name: str) -> bool:
    # Cached: a campaign sends the same few zones thousands of times.
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        # ValueError: "", "../x", NUL bytes; OSError: a folder such as "America".
        return False
    return True


def _time_zone(value: object) -> str | None:
    if not isinstance(value, str):
        return f"expected a string, got {kind(value)}"
    return None if _is_time_zone(value) else f"{value!r} is not an IANA time zone"


def _key_value_list(value: object) -> str | None:
    if not isinstance(value, list):
        return f"expected an array of {{key, value}} objects, got {kind(value)}"
    for index, item in enumerate(value):
        if not (
            isinstance(item, dict)
            and item.keys() == {"key", "value"}
            and isinstance(item["key"], str)
            and isinstance(item["value"], str)
        ):
            return f"item {index} must be an object with exactly a string key and a string value"
    return None


def _string_map(value: object) -> str | None:
    if not isinstance(value, dict):
        return f"expected an object, got {kind(value)}"
    return None  # JSON object keys are always strings; values may be anything.


def _template(value: object) -> str | None:
    if not isinstance(value, dict):
        return f"expected an object, got {kind(value)}"
    unknown = value.keys() - {"content_sid", "variables"}
    if unknown:
        return f"unknown field {sorted(unknown)[0]!r}"
    if not isinstance(value.get("content_sid"), str):
        return "content_sid is required and must be a string"
    variables = value.get("variables")
    if variables is not None and not (
        isinstance(variables, dict) and all(isinstance(v, str) for v in variables.values())
    ):
        return "variables must be an object of strings"
    return None


def _channel(value: object) -> str | None:
    if value in ("whatsapp", "sms"):
        return None
    return f"must be 'whatsapp' or 'sms', got {value!r}"


# field -> (required, check)
CALL_FIELDS: Mapping[str, tuple[bool, Check]] = {
    "model_id": (True, _non_empty_string),
    "phone": (True, _e164),
    "name": (True, _string),
    "from_phone_number": (False, _e164),
    "custom_variables": (False, _key_value_list),
    "lead_email": (False, _string),
    "lead_timezone": (False, _time_zone),
    "prompt": (False, _string),
    "greeting": (False, _string),
}

CHAT_FIELDS: Mapping[str, tuple[bool, Check]] = {
    "agent_id": (True, _uuid),
    "channel": (True, _channel),
    "to_number": (True, _e164),
    "from_number": (True, _e164),
    "initial_message": (False, _string),
    "template": (False, _template),
    "custom_variables": (False, _string_map),
}


def problem_with(body: object, fields: Mapping[str, tuple[bool, Check]]) -> str | None:
    """What is wrong with a parsed request body, or None when it is valid."""
    if not isinstance(body, dict):
        return f"body: expected a JSON object, got {kind(body)}"
    for key in body:
        if key not in fields:
            return f"{key}: unknown field"
    for name, (required, check) in fields.items():
        if name not in body:
            if required:
                return f"{name}: field required"
            continue
        value = body[name]
        if value is None and not required:
            continue
        problem = check(value)
        if problem is not None:
            return f"{name}: {problem}"
    return None
