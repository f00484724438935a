"""The Synthflow API: request bodies, one POST per lead, answers sorted into kinds, look-ups.

Only this module knows about HTTP. Every answer becomes an `Answer` whose
`kind` tells the dispatcher what is safe to do next:

    accepted   2xx with an id                           -> `sent`
    refused    400/404/409/422 and other 4xx            -> `failed`, with the API's message
    auth       401/403                                  -> stop the whole run
    throttled  429                                      -> slow down, send again (not an attempt)
    retry      503/408, refused connection, connect timeout: never reached the API -> back off, retry
    unknown    500/502/504, read timeout, closed connection: may have been placed -> look it up
"""

from __future__ import annotations

import email.utils
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from dialer.config import Campaign
from dialer.model import JournalRow

AnswerKind = Literal["accepted", "refused", "auth", "throttled", "retry", "unknown"]

CALLS = "/v2/calls"
CHATS = "/v2/chat/outbound"
_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")


@dataclass(frozen=True, slots=True)
class Answer:
    kind: AnswerKind
    id: str = ""
    error: str = ""
    status: int | None = None
    retry_after: float | None = None


class LookupError_(Exception):
    """A look-up could not be made or understood; the row stays `unknown`."""


class LookupRefused(LookupError_):
    """The look-up was answered 401/403: the key is refused, as a POST's would be."""


def fill_placeholders(text: str, lead: JournalRow) -> str:
    """Replace {Column} (a custom variable) or {name}/{phone}/{email} in a template value."""
    fields = {"name": lead.name, "phone": lead.phone, "email": lead.email}

    def value(match: re.Match[str]) -> str:
        key = match[1]
        if key in lead.variables:
            return lead.variables[key]
        lowered = key.lower()
        for variable, cell in lead.variables.items():
            if variable.lower() == lowered:
                return cell
        return fields.get(lowered, match[0])

    return _PLACEHOLDER.sub(value, text)


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
    # Synthflow fills {variables} in prompt and greeting itself from custom_variables.
    if campaign.call.prompt:
        body["prompt"] = campaign.call.prompt
    if campaign.call.greeting:
        body["greeting"] = campaign.call.greeting
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
        body["initial_message"] = chat.initial_message
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


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    parsed = email.utils.parsedate_to_datetime(value) if value else None
    if parsed is None:
        return None
    return max(0.0, parsed.timestamp() - time.time())


def error_text(response: httpx.Response) -> str:
    """The API's own message, from any of the error shapes it is known to use."""
    try:
        data = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        text = response.text.strip().replace("\n", " ")
        return f"HTTP {response.status_code}" + (f": {text[:200]}" if text else "")
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
    text = str(message if message else data).replace("\n", " ")
    return f"HTTP {response.status_code}: {text[:300]}"


def classify(response: httpx.Response, id_key: str) -> Answer:
    """Sort an HTTP answer into what the dispatcher may do next."""
    code = response.status_code
    if 200 <= code < 300:
        try:
            data = response.json()
            found = data.get("response", {}).get(id_key) if isinstance(data, dict) else None
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            found = None
        if found:
            return Answer("accepted", id=str(found), status=code)
        # Accepted but unreadable: it was placed, so never send it again.
        return Answer("accepted", error=f"HTTP {code} without {id_key}", status=code)
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


def classify_exception(exc: httpx.HTTPError) -> Answer:
    """A request that got no HTTP answer: did it reach the API?"""
    # These fail before a byte of the request leaves: safe to send again.
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return Answer("retry", error=f"no connection: {type(exc).__name__} {exc}".strip())
    # Everything else may have been received and acted on.
    return Answer("unknown", error=f"no answer: {type(exc).__name__} {exc}".strip())


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
            return classify_exception(exc)
        return classify(response, id_key)

    async def find_call(self, model_id: str, phone: str, since: float) -> str | None:
        """The call_id of a call to `phone` placed since epoch `since`, or None if there is none."""
        params: dict[str, str | int] = {
            "model_id": model_id,
            "lead_phone_number": phone,
            # A minute of slack for clock skew between this machine and the API.
            "from_date": max(0, int((since - 60) * 1000)),
            "limit": 5,
        }
        try:
            response = await self._http.get(CALLS, params=params)
        except httpx.HTTPError as exc:
            raise LookupError_(f"look-up failed: {type(exc).__name__}") from None
        if response.status_code in (401, 403):
            raise LookupRefused(error_text(response))
        if response.status_code != 200:
            raise LookupError_(f"look-up failed: {error_text(response)}")
        try:
            calls = response.json()["response"]["calls"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise LookupError_("look-up answer not understood") from None
        for call in calls:
            if call.get("phone_number_to", phone) == phone and call.get("call_id"):
                return str(call["call_id"])
        return None

    async def aclose(self) -> None:
        for http in (*self._lanes, self._http):
            await http.aclose()
