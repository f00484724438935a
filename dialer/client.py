"""The Synthflow API: request bodies, one POST per lead, answers sorted into kinds, look-ups.

Only this module knows about HTTP. Every answer becomes an `Answer` whose
`kind` tells the dispatcher what is safe to do next:

    accepted   2xx with an id                           -> `sent`
    refused    400/404/409/422 and other 4xx            -> `failed`, with the API's message
    auth       401/403                                  -> stop the whole run
    throttled  429                                      -> slow down, send again (not an attempt)
    retry      503/408, refused connection, connect timeout: never reached the API -> back off, retry
    unknown    500/502/504, read timeout, closed connection: may have been placed -> look it up

Every answer is untrusted text: its body may be anything (not JSON, JSON of any
shape, ids of odd types) and so may its headers. The readers below (`_json`, `_dig`,
`_an_id`, `retry_after_seconds`, `placed_call`) turn it into well-formed values or
"could not tell", so the dispatcher never sees an odd shape and never takes one for
"not placed".
"""

from __future__ import annotations

import email.utils
import json
import math
import re
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from datetime import UTC
from typing import Any, Literal
from urllib.parse import quote

import httpx

from dialer.columns import PLACEHOLDER, placeholder_column
from dialer.config import Campaign
from dialer.errors import SetupError
from dialer.model import CallOutcome, JournalRow

AnswerKind = Literal["accepted", "refused", "auth", "throttled", "retry", "unknown"]

CALLS = "/v2/calls"
# Longer advice is taken as this: one 429 must not stall a run for hours.
MAX_RETRY_AFTER = 300.0
CHATS = "/v2/chat/outbound"
# A look-up reads a phone's calls a page at a time, and at most this many pages: a lead's
# earlier calls (known to the journal, passed over) may fill a page; past them all it cannot
# tell, and the row stays `unknown` rather than be taken as not placed.
LOOKUP_PAGE = 20
LOOKUP_PAGES = 5


@dataclass(frozen=True, slots=True)
class Answer:
    kind: AnswerKind
    id: str = ""
    error: str = ""
    status: int | None = None
    retry_after: float | None = None
    # No contact with the API: no connection, or a timeout (a sign it may be down).
    no_contact: bool = False


class LookupError_(Exception):
    """A look-up could not be made or understood; the row stays `unknown`."""


class LookupRefused(LookupError_):
    """The look-up was answered 401/403: the key is refused, as a POST's would be."""


def fill_placeholders(text: str, lead: JournalRow) -> str:
    """Replace each {Column} by the lead's cell in that column (any column of the file), or
    {name}/{phone}/{email} by its mapped field when no column has that name.

    A placeholder that names neither is refused at load (columns.check_placeholders); one
    left over anyway becomes "", never literal text sent to a person.
    """
    cells = lead.cells or lead.variables
    fields = {"name": lead.name, "phone": lead.phone, "email": lead.email}

    def value(match: re.Match[str]) -> str:
        column = placeholder_column(match[1], cells)
        if column is not None:
            return cells[column]
        return fields.get(match[1].strip().casefold(), "")

    return PLACEHOLDER.sub(value, text)


def call_body(campaign: Campaign, lead: JournalRow, from_number: str) -> dict[str, Any]:
    """The body of POST /v2/calls: custom_variables is a list of {key, value}."""
    assert campaign.call is not None
    body: dict[str, Any] = {
        "model_id": campaign.call.model_id,
        "phone": lead.phone,
        "name": lead.name,
    }
    if from_number:
        body["from_phone_number"] = from_number
    if lead.variables:
        body["custom_variables"] = [{"key": k, "value": v} for k, v in lead.variables.items()]
    if lead.email:
        body["lead_email"] = lead.email
    # Only a single zone is unambiguous; the API takes the name exactly as written.
    if len(lead.timezones) == 1:
        body["lead_timezone"] = lead.timezones[0]
    # The dialer fills {Column} in prompt and greeting, as in every text it sends: Synthflow
    # would fill them only from custom_variables, and leave the name column's, say, as text.
    if campaign.call.prompt:
        body["prompt"] = fill_placeholders(campaign.call.prompt, lead)
    if campaign.call.greeting:
        body["greeting"] = fill_placeholders(campaign.call.greeting, lead)
    return body


def chat_body(campaign: Campaign, lead: JournalRow, from_number: str) -> dict[str, Any]:
    """The body of POST /v2/chat/outbound: custom_variables is a plain map."""
    chat = campaign.chat
    assert chat is not None
    body: dict[str, Any] = {
        "agent_id": chat.agent_id,
        "channel": chat.channel,
        "to_number": lead.phone,
        "from_number": from_number,
    }
    if chat.initial_message:
        body["initial_message"] = fill_placeholders(chat.initial_message, lead)
    if chat.template:
        # Twilio fills template variables literally, so the dialer fills {Column} here.
        body["template"] = {
            "content_sid": chat.template.content_sid,
            "variables": {
                key: fill_placeholders(value, lead) for key, value in chat.template.variables.items()
            },
        }
    variables = dict(lead.variables)
    if lead.name:
        variables.setdefault("name", lead.name)
    if variables:
        body["custom_variables"] = variables
    return body


_UNREADABLE: Any = object()


def _json(response: httpx.Response) -> Any:
    """The answer's JSON value, or `_UNREADABLE` (not JSON, not UTF-8, absurdly deep)."""
    try:
        return json.loads(response.content)
    except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return _UNREADABLE


def _dig(data: Any, *keys: str) -> Any:
    """data[k1][k2]..., or None as soon as a level is not an object."""
    for key in keys:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _an_id(value: Any) -> str | None:
    """An id as an API writes one: a short printable string, or an integer's digits."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text or len(text) > 200 or not text.isprintable():
        return None
    return text


def _one_line(value: Any, limit: int) -> str:
    return " ".join(str(value).split())[:limit]


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """A Retry-After header (delay-seconds or an HTTP date) as seconds from `now`, at most
    MAX_RETRY_AFTER; None when absent or not readable (negative, NaN, infinite, garbage)."""
    if value is None or not value.strip():
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:  # "-0000": HTTP dates are in GMT
            when = when.replace(tzinfo=UTC)
        seconds = max(0.0, when.timestamp() - now)
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, MAX_RETRY_AFTER)


def _retry_after(response: httpx.Response) -> float | None:
    return retry_after_seconds(response.headers.get("retry-after"), time.time())


def error_text(response: httpx.Response) -> str:
    """The API's own message, from any of the error shapes it is known to use, on one line."""
    data = _json(response)
    if data is _UNREADABLE:
        text = _one_line(response.text, 200)
        return f"HTTP {response.status_code}" + (f": {text}" if text else "")
    message: Any = None
    if isinstance(data, dict):
        detail = data.get("detail")
        if isinstance(detail, dict):
            message = detail.get("description") or detail.get("status")
        elif isinstance(detail, list):
            message = "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
        elif detail:
            message = detail
        else:
            message = data.get("message") or data.get("error")
    return f"HTTP {response.status_code}: {_one_line(message if message else data, 300)}"


def classify(response: httpx.Response, id_key: str) -> Answer:
    """Sort an HTTP answer into what the dispatcher may do next."""
    code = response.status_code
    if 200 <= code < 300:
        found = _an_id(_dig(_json(response), "response", id_key))
        if found:
            return Answer("accepted", id=found, status=code)
        # Accepted but unreadable: it was placed, so never send it again.
        return Answer("accepted", error=f"HTTP {code} without a readable {id_key}", status=code)
    if code in (401, 403):
        return Answer("auth", error=error_text(response), status=code)
    if code == 429:
        return Answer(
            "throttled", error=error_text(response), status=code, retry_after=_retry_after(response)
        )
    if code in (408, 503):
        return Answer("retry", error=error_text(response), status=code, retry_after=_retry_after(response))
    if 400 <= code < 500:
        return Answer("refused", error=error_text(response), status=code)
    return Answer("unknown", error=error_text(response), status=code)


def placed_call(data: Any, phone: str, known: Collection[str] = ()) -> str | None:
    """The call_id of a call to `phone` in a GET /v2/calls answer that is not one of `known`,
    or None if it lists none.

    `known`: the calls the journal already holds (the lead's earlier attempts): listed in
    the look-up's window too, they are not the call being looked for. Only a well-formed
    list without such a call means "not placed" (the row may be dialed again): any other
    shape raises LookupError_, and the row stays `unknown`.
    """
    calls = _dig(data, "response", "calls")
    if not isinstance(calls, list):
        raise LookupError_("look-up answer not understood (no list of calls)")
    doubt = ""
    for call in calls:
        to = call.get("phone_number_to", phone) if isinstance(call, dict) else None
        if not isinstance(to, str):
            doubt = "look-up answer not understood (a call that is not readable)"
            continue
        if to != phone:
            continue
        call_id = _an_id(call.get("call_id"))
        if not call_id:
            doubt = "look-up answer lists a call to this number without a readable call_id"
        elif call_id not in known:
            return call_id
    if doubt:
        raise LookupError_(doubt)
    return None


def _text(value: Any, limit: int = 500) -> str:
    """A short printable text from an untrusted value ('' for null, objects and lists)."""
    if value is None or isinstance(value, dict | list):
        return ""
    return "".join(ch for ch in _one_line(value, limit) if ch.isprintable())


def _seconds(value: Any) -> float | None:
    """A duration as the API writes one (a number, or digits in a string); None when not one."""
    if isinstance(value, bool):
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _collected(value: Any, model_id: str) -> dict[str, str]:
    """`collected_variables`, seen as null, a flat map, or a map keyed by the agent's id."""
    if not isinstance(value, dict):
        return {}
    inner = value.get(model_id)
    if isinstance(inner, dict):
        value = inner
    elif len(value) == 1 and isinstance(next(iter(value.values())), dict):
        value = next(iter(value.values()))  # keyed by some other id of the agent's
    flat: dict[str, str] = {}
    for name, cell in value.items():
        key = _text(name, 100)
        if not key:
            continue
        if isinstance(cell, dict | list):
            flat[key] = json.dumps(cell, ensure_ascii=False)[:1000]
        elif isinstance(cell, bool):
            flat[key] = "true" if cell else "false"
        else:
            flat[key] = _text(cell, 1000)
    return flat


def read_call(item: Any, model_id: str) -> CallOutcome | None:
    """One call of a GET answer, or None when it has no readable call_id."""
    if not isinstance(item, dict):
        return None
    call_id = _an_id(item.get("call_id"))
    if call_id is None:
        return None
    # GET by id names it `status`, the list `call_status`.
    status = _text(item.get("status", item.get("call_status")), 50)
    return CallOutcome(
        call_id=call_id,
        status=status,
        duration=_seconds(item.get("duration")),
        end_reason=_text(item.get("end_call_reason"), 100),
        recording_url=_text(item.get("recording_url"), 2000),
        collected=_collected(item.get("collected_variables"), model_id),
    )


@dataclass(frozen=True, slots=True)
class CallPage:
    """One page of GET /v2/calls: the calls read, how many items it held, the total it claims."""

    calls: list[CallOutcome]
    items: int
    total: int | None


def calls_page(data: Any, model_id: str) -> CallPage:
    """A GET /v2/calls (or /v2/calls/{id}) answer; LookupError_ when it is not a list of calls."""
    items = _dig(data, "response", "calls")
    if not isinstance(items, list):
        raise LookupError_("calls answer not understood (no list of calls)")
    total = _dig(data, "response", "pagination", "total_records")
    calls = [call for call in (read_call(item, model_id) for item in items) if call is not None]
    readable_total = total if isinstance(total, int) and not isinstance(total, bool) and total >= 0 else None
    return CallPage(calls, len(items), readable_total)


def classify_exception(exc: httpx.HTTPError) -> Answer:
    """A request that got no HTTP answer: did it reach the API?"""
    # These fail before a byte of the request leaves: safe to send again.
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return Answer("retry", error=f"no connection: {type(exc).__name__} {exc}".strip(), no_contact=True)
    if isinstance(exc, httpx.LocalProtocolError):
        # httpx refused to send what it was given; its message quotes the offending header,
        # which may be the key. Nothing left: safe to send again, and nothing to quote.
        return Answer("retry", error="not sent: the request could not be encoded as HTTP")
    # Everything else may have been received and acted on.
    timed_out = isinstance(exc, httpx.TimeoutException)
    return Answer("unknown", error=f"no answer: {type(exc).__name__} {exc}".strip(), no_contact=timed_out)


class SynthflowClient:
    """The run's HTTP clients: a lane (its own connection) per worker, and one for look-ups.

    Why lanes and not one shared pool: httpcore hands a freshly idle connection to
    every request that enters the pool before the first of them starts on it; all
    but one then fail over and queue again. Group commits release several workers
    in the same tick, so a shared pool spent more time reassigning than sending
    (measured: 2 reassignments per request, the dialer at 0.4 of a bare loop).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 30.0,
        connections: int = 10,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not (api_key.isascii() and api_key.isprintable()):
            # httpx would refuse the header with a message quoting it: the key in every row's error.
            raise SetupError("the API key holds a character an HTTP header cannot carry")
        # One TLS context for all lanes: loading the CA bundle takes ~20 ms each time.
        tls = httpx.create_ssl_context() if base_url.startswith("https:") else False

        def client(size: int) -> httpx.AsyncClient:
            return httpx.AsyncClient(
                verify=tls,
                base_url=base_url,
                headers={"Authorization": f"Bearer {api_key}"},
                timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
                limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
                transport=transport,
            )

        self._key = api_key
        self._lanes = [client(1) for _ in range(connections)]
        self._http = client(4)  # look-ups

    async def post(
        self,
        path: str,
        body: dict[str, Any],
        on_sent: Callable[[], None] | None = None,
        lane: int = 0,
    ) -> Answer:
        """POST one lead on connection `lane`; `on_sent` is called once its last byte is written."""
        id_key = "call_id" if path == CALLS else "conversation_id"
        extensions: dict[str, Any] = {}
        if on_sent is not None:

            async def trace(event: str, _: dict[str, Any]) -> None:
                if event == "http11.send_request_body.complete":
                    on_sent()

            extensions["trace"] = trace
        try:
            http = self._lanes[lane % len(self._lanes)]
            response = await http.post(path, json=body, extensions=extensions)
        except httpx.HTTPError as exc:
            return self._scrubbed(classify_exception(exc))
        return self._scrubbed(classify(response, id_key))

    def _scrubbed(self, answer: Answer) -> Answer:
        """The answer with the key cut out of its error: an API may echo what it was sent."""
        if self._key and self._key in answer.error:
            return replace(answer, error=answer.error.replace(self._key, "[redacted]"))
        return answer

    async def find_call(
        self, model_id: str, phone: str, since: float, known: Collection[str] = ()
    ) -> str | None:
        """The call_id of a call to `phone` placed since epoch `since` and not one of `known`
        (calls the journal holds already), or None if there is none.

        The window starts a minute early for clock skew, so a redial's look-up lists the
        lead's call before it too: that one is in `known`. Read a page at a time until a page
        comes back short; LookupError_ when LOOKUP_PAGES full pages hold nothing new.
        """
        params: dict[str, str | int] = {
            "model_id": model_id,
            "lead_phone_number": phone,
            # A minute of slack for clock skew between this machine and the API.
            "from_date": max(0, int((since - 60) * 1000)),
            "limit": LOOKUP_PAGE,
        }
        for page in range(LOOKUP_PAGES):
            if page:
                params["offset"] = page * LOOKUP_PAGE
            data = await self._look_up_page(params)
            found = placed_call(data, phone, known)
            listed = _dig(data, "response", "calls")  # a list: placed_call checked it
            if found or len(listed) < LOOKUP_PAGE:
                return found
        raise LookupError_(
            f"look-up lists over {LOOKUP_PAGE * LOOKUP_PAGES} calls to this number, all earlier"
            " ones: cannot tell whether the last request placed one"
        )

    async def _look_up_page(self, params: dict[str, str | int]) -> Any:
        """One page of a look-up: the answer's JSON (untrusted); LookupRefused on 401/403."""
        try:
            response = await self._http.get(CALLS, params=params)
        except httpx.HTTPError as exc:
            raise LookupError_(f"look-up failed: {type(exc).__name__}") from None
        if response.status_code in (401, 403):
            raise LookupRefused(self._scrubbed(Answer("auth", error=error_text(response))).error)
        if response.status_code != 200:
            failed = Answer("unknown", error=f"look-up failed: {error_text(response)}")
            raise LookupError_(self._scrubbed(failed).error)
        return _json(response)

    async def _get(self, path: str, params: dict[str, str | int] | None = None) -> Any | None:
        """A GET's JSON (untrusted), None for a 404; LookupRefused on 401/403, LookupError_ else."""
        try:
            response = await self._http.get(path, params=params)
        except httpx.HTTPError as exc:
            raise LookupError_(f"poll failed: {type(exc).__name__}") from None
        if response.status_code in (401, 403):
            raise LookupRefused(self._scrubbed(Answer("auth", error=error_text(response))).error)
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise LookupError_(
                self._scrubbed(Answer("unknown", error=f"poll failed: {error_text(response)}")).error
            )
        return _json(response)

    async def list_calls(self, model_id: str, from_ms: int, to_ms: int, limit: int, offset: int) -> CallPage:
        """One page (newest first) of the agent's calls placed between two moments (ms)."""
        params: dict[str, str | int] = {
            "model_id": model_id,
            "from_date": max(0, from_ms),
            "to_date": max(0, to_ms),
            "limit": limit,
            "offset": offset,
        }
        data = await self._get(CALLS, params)
        if data is None:
            raise LookupError_("poll failed: HTTP 404 on the calls list")
        return calls_page(data, model_id)

    async def get_call(self, call_id: str, model_id: str) -> CallOutcome | None:
        """One call by id; None when the API does not know it (404, or not in its answer)."""
        data = await self._get(f"{CALLS}/{quote(call_id, safe='')}")
        if data is None:
            return None
        return next((call for call in calls_page(data, model_id).calls if call.call_id == call_id), None)

    async def get_chat_status(self, chat_id: str) -> str | None:
        """A chat's `chat_status` as GET /v2/chat/{id} gives it; None when unknown or unreadable."""
        data = await self._get(f"/v2/chat/{quote(chat_id, safe='')}")
        return _text(_dig(data, "response", "chat_status"), 50) or None

    async def aclose(self) -> None:
        for http in (*self._lanes, self._http):
            await http.aclose()
