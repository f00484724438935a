"""The API client: bodies field for field, every answer sorted into the right kind."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from dialer.client import (
    CALLS,
    CHATS,
    SynthflowClient,
    call_body,
    chat_body,
    classify,
    classify_exception,
    error_text,
)
from dialer.config import load_campaign
from dialer.model import JournalRow


def _row(**changes: Any) -> JournalRow:
    fields: dict[str, Any] = dict(
        id=1,
        position=2,
        phone="+14155550132",
        name="Maria Hernández",
        email="m@example.com",
        timezones=("America/Los_Angeles",),
        variables={"Company": "Bayview", "Deal Size": "1500"},
        status="pending",
        attempts=0,
        intent_at=None,
        from_number="",
        call_id="",
        error="",
    )
    fields.update(changes)
    return JournalRow(**fields)


def _campaign(tmp_path: Path, text: str) -> Any:
    path = tmp_path / "c.toml"
    path.write_text('name = "t"\nleads = "leads.csv"\n' + text)
    return load_campaign(path)


def test_call_body_matches_the_documented_fields(tmp_path: Path) -> None:
    campaign = _campaign(
        tmp_path,
        'mode = "call"\n[call]\nmodel_id = "m-1"\nprompt = "Sell to {Company}."\ngreeting = "Hi"\n',
    )
    body = call_body(campaign, _row(), "+14155550100")
    assert body == {
        "model_id": "m-1",
        "phone": "+14155550132",
        "name": "Maria Hernández",
        "from_phone_number": "+14155550100",
        "custom_variables": [
            {"key": "Company", "value": "Bayview"},
            {"key": "Deal Size", "value": "1500"},
        ],
        "lead_email": "m@example.com",
        "lead_timezone": "America/Los_Angeles",
        "prompt": "Sell to {Company}.",
        "greeting": "Hi",
    }


def test_call_body_leaves_out_what_is_unknown(tmp_path: Path) -> None:
    campaign = _campaign(tmp_path, 'mode = "call"\n[call]\nmodel_id = "m-1"\n')
    row = _row(email="", variables={}, timezones=("America/New_York", "America/Chicago"))
    assert call_body(campaign, row, "") == {
        "model_id": "m-1",
        "phone": "+14155550132",
        "name": "Maria Hernández",
    }


def test_chat_body_uses_a_map_and_fills_the_template(tmp_path: Path) -> None:
    campaign = _campaign(
        tmp_path,
        'mode = "chat"\n[chat]\nagent_id = "2a886b7d-d52d-4f8b-8ea0-19d3edc79214"\n'
        'channel = "whatsapp"\ntemplate = { content_sid = "HX1", variables = { "1" = "{name}",'
        ' "2" = "{company}" } }\n[numbers]\npool = ["+14155550100"]\n',
    )
    body = chat_body(campaign, _row(), "+14155550100")
    assert body == {
        "agent_id": "2a886b7d-d52d-4f8b-8ea0-19d3edc79214",
        "channel": "whatsapp",
        "to_number": "+14155550132",
        "from_number": "+14155550100",
        "template": {"content_sid": "HX1", "variables": {"1": "Maria Hernández", "2": "Bayview"}},
        "custom_variables": {"Company": "Bayview", "Deal Size": "1500", "name": "Maria Hernández"},
    }


def _response(
    status: int, body: Any = None, headers: dict[str, str] | None = None, text: str | None = None
) -> httpx.Response:
    if text is not None:
        return httpx.Response(status, text=text, headers=headers)
    return httpx.Response(status, json=body, headers=headers)


@pytest.mark.parametrize(
    ("status", "body", "headers", "kind"),
    [
        pytest.param(
            200,
            {"status": "success", "response": {"answer": "ok", "call_id": "c1"}},
            None,
            "accepted",
            id="200",
        ),
        pytest.param(400, {"detail": "phone is required"}, None, "refused", id="400"),
        pytest.param(404, {"detail": "model not found"}, None, "refused", id="404"),
        pytest.param(422, {"detail": [{"msg": "bad"}]}, None, "refused", id="422"),
        pytest.param(401, {"detail": "bad key"}, None, "auth", id="401"),
        pytest.param(403, {"detail": "forbidden"}, None, "auth", id="403"),
        pytest.param(429, {"detail": "Rate limit exceeded"}, None, "throttled", id="429"),
        pytest.param(503, {"detail": "busy"}, {"Retry-After": "3"}, "retry", id="503"),
        pytest.param(500, {"detail": "boom"}, None, "unknown", id="500"),
        pytest.param(502, None, None, "unknown", id="502"),
        pytest.param(504, None, None, "unknown", id="504"),
    ],
)
def test_every_answer_has_a_kind(status: int, body: Any, headers: dict[str, str] | None, kind: str) -> None:
    answer = classify(_response(status, body, headers), "call_id")
    assert answer.kind == kind
    if kind == "accepted":
        assert answer.id == "c1"
    if status == 503:
        assert answer.retry_after == 3.0


def test_429_retry_after_is_read() -> None:
    answer = classify(_response(429, {"detail": "x"}, {"Retry-After": "2.5"}), "call_id")
    assert (answer.kind, answer.retry_after) == ("throttled", 2.5)
    assert classify(_response(429, {"detail": "x"}), "call_id").retry_after is None


@pytest.mark.parametrize(
    ("body", "text", "expected"),
    [
        ({"detail": "phone is invalid"}, None, "HTTP 400: phone is invalid"),
        (
            {"detail": {"status": "error", "description": "agent not found", "request_id": "r"}},
            None,
            "HTTP 400: agent not found",
        ),
        ({"error": "bad_request", "message": "name missing"}, None, "HTTP 400: name missing"),
        (None, "<html>Bad Gateway</html>", "HTTP 400: <html>Bad Gateway</html>"),
    ],
)
def test_error_text_reads_every_known_shape(body: Any, text: str | None, expected: str) -> None:
    assert error_text(_response(400, body, text=text)) == expected


def test_connection_errors_are_sorted_by_whether_the_request_left() -> None:
    request = httpx.Request("POST", "http://x/v2/calls")
    assert classify_exception(httpx.ConnectError("refused", request=request)).kind == "retry"
    assert classify_exception(httpx.ConnectTimeout("slow", request=request)).kind == "retry"
    assert classify_exception(httpx.ReadTimeout("late", request=request)).kind == "unknown"
    assert classify_exception(httpx.RemoteProtocolError("closed", request=request)).kind == "unknown"


def test_post_and_lookup_over_a_mock_transport() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "POST":
            return httpx.Response(200, json={"status": "ok", "response": {"conversation_id": "v"}})
        return httpx.Response(
            200,
            json={
                "status": "ok",
                "response": {
                    "pagination": {"total_records": 1, "limit": 5, "offset": 0},
                    "calls": [{"call_id": "c9", "phone_number_to": "+14155550132"}],
                },
            },
        )

    async def go() -> tuple[str, str | None]:
        client = SynthflowClient("http://api.test", "secret-key", transport=httpx.MockTransport(handler))
        try:
            answer = await client.post(CHATS, {"a": 1})
            found = await client.find_call("m", "+14155550132", since=1_700_000_000.0)
            return answer.id, found
        finally:
            await client.aclose()

    assert asyncio.run(go()) == ("v", "c9")
    assert seen[0].headers["authorization"] == "Bearer secret-key"
    assert json.loads(seen[0].content) == {"a": 1}
    lookup = seen[1].url
    assert lookup.path == CALLS
    assert b"lead_phone_number=%2B14155550132" in lookup.query
    assert lookup.params["from_date"] == str((1_700_000_000 - 60) * 1000)
