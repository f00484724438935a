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
    MAX_RETRY_AFTER,
    LookupError_,
    SynthflowClient,
    call_body,
    chat_body,
    classify,
    classify_exception,
    error_text,
    retry_after_seconds,
)
from dialer.config import load_campaign
from dialer.errors import SetupError
from dialer.model import JournalRow
from tests.conftest import read_record


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
        "prompt": "Sell to Bayview.",  # the dialer fills {Column} in every text it sends
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


# -- answers are untrusted text ----------------------------------------------------------


def _lookup(body: bytes, phone: str = "+14155550132") -> str | None:
    """find_call against an API that answers GET /v2/calls 200 with `body`, as it is."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"content-type": "application/json"})

    async def go() -> str | None:
        client = SynthflowClient("http://api.test", "k", transport=httpx.MockTransport(handler))
        try:
            return await client.find_call("m", phone, since=1_700_000_000.0)
        finally:
            await client.aclose()

    return asyncio.run(go())


def _calls(*calls: Any) -> bytes:
    return json.dumps({"status": "ok", "response": {"calls": list(calls)}}).encode()


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"response":{"calls":null}}', id="calls-null"),
        pytest.param(b'"abc"', id="a-string"),
        pytest.param(b"[1]", id="a-list"),
        pytest.param(b'{"response": []}', id="response-a-list"),
        pytest.param(b'{"response": {"calls": {"call_id": "c1"}}}', id="calls-an-object"),
        pytest.param(b"{}", id="empty-object"),
        pytest.param(b"null", id="null"),
        pytest.param(b"<html>Bad Gateway</html>", id="not-json"),
        pytest.param(b"", id="empty"),
        pytest.param(b'{"response":{"calls":["\xff\xfe"]}}', id="not-utf8"),
        pytest.param(b"[" * 100_000, id="absurdly-deep"),
        pytest.param(_calls(1, "x", None), id="calls-not-objects"),
        pytest.param(_calls({"phone_number_to": "+14155550132"}), id="call-id-missing"),
        pytest.param(_calls({"phone_number_to": "+14155550132", "call_id": None}), id="call-id-null"),
        pytest.param(_calls({"phone_number_to": "+14155550132", "call_id": {"a": 1}}), id="call-id-object"),
        pytest.param(_calls({"phone_number_to": "+14155550132", "call_id": 1.5}), id="call-id-float"),
        pytest.param(_calls({"phone_number_to": "+14155550132", "call_id": ""}), id="call-id-empty"),
        pytest.param(_calls({"phone_number_to": 14155550132, "call_id": "c1"}), id="phone-a-number"),
    ],
)
def test_a_lookup_answer_of_an_odd_shape_cannot_decide(body: bytes) -> None:
    # Never "not placed" (which would dial again) and never an internal error.
    with pytest.raises(LookupError_):
        _lookup(body)


@pytest.mark.parametrize(
    ("body", "found"),
    [
        pytest.param(_calls(), None, id="none-listed"),
        pytest.param(_calls({"phone_number_to": "+19995550100", "call_id": "c0"}), None, id="another-number"),
        pytest.param(_calls({"phone_number_to": "+14155550132", "call_id": 12345}), "12345", id="numeric-id"),
        pytest.param(_calls({"call_id": "c7"}), "c7", id="no-phone-field"),
        # One unreadable entry does not hide a readable call to the number.
        pytest.param(_calls(7, {"phone_number_to": "+14155550132", "call_id": "c8"}), "c8", id="beside-junk"),
    ],
)
def test_a_lookup_answer_that_is_well_formed_decides(body: bytes, found: str | None) -> None:
    assert _lookup(body) == found


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"response":{"call_id":{"a":1}}}', id="id-an-object"),
        pytest.param(b'{"response":{"call_id":["c1"]}}', id="id-a-list"),
        pytest.param(b'{"response":{"call_id":true}}', id="id-a-bool"),
        pytest.param(b'{"response":{"call_id":"a\\nb"}}', id="id-with-a-newline"),
        pytest.param(b'{"response":{"call_id":""}}', id="id-empty"),
        pytest.param(b'{"response":[]}', id="response-a-list"),
        pytest.param(b'{"status":"ok"}', id="no-id"),
        pytest.param(b'"abc"', id="a-string"),
        pytest.param(b"[1]", id="a-list"),
        pytest.param(b"\xff\xfe not json", id="not-json"),
    ],
)
def test_a_200_without_a_readable_id_is_accepted_without_one(body: bytes) -> None:
    # The API said it placed the call: never send it again, but keep no junk as its id.
    answer = classify(httpx.Response(200, content=body), "call_id")
    assert (answer.kind, answer.id) == ("accepted", "")
    assert answer.error == "HTTP 200 without a readable call_id"


def test_a_numeric_id_is_kept_as_its_digits() -> None:
    answer = classify(httpx.Response(200, json={"response": {"call_id": 42}}), "call_id")
    assert (answer.kind, answer.id) == ("accepted", "42")


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        pytest.param("3", 3.0, id="seconds"),
        pytest.param(" 2.5 ", 2.5, id="fraction"),
        pytest.param("abc", None, id="garbage"),
        pytest.param("Mon, 99 Foo 20xx", None, id="a-broken-date"),
        pytest.param("-5", None, id="negative"),
        pytest.param("nan", None, id="nan"),
        pytest.param("inf", None, id="infinite"),
        pytest.param("1e400", None, id="overflows-to-infinite"),
        pytest.param("99999999", MAX_RETRY_AFTER, id="huge"),
        pytest.param("Wed, 21 Oct 2015 07:28:00 GMT", 0.0, id="a-past-date"),
        pytest.param("Tue, 14 Nov 2023 22:13:30 GMT", 10.0, id="a-date-10s-ahead"),
        pytest.param("Tue, 14 Nov 2023 22:13:30 -0000", 10.0, id="a-date-without-zone"),
        pytest.param("Fri, 31 Dec 9999 23:59:59 GMT", MAX_RETRY_AFTER, id="a-far-date"),
        pytest.param("", None, id="empty"),
    ],
)
def test_retry_after_is_read_whatever_it_holds(header: str, seconds: float | None) -> None:
    now = 1_700_000_000.0  # Tue, 14 Nov 2023 22:13:20 GMT
    assert retry_after_seconds(header, now) == (pytest.approx(seconds) if seconds is not None else None)


@pytest.mark.parametrize("header", ["abc", "-1", "nan", "1e400", "Mon, 99 Foo"])
def test_an_odd_retry_after_on_a_429_or_503_is_no_advice(header: str) -> None:
    for status in (429, 503):
        answer = classify(_response(status, {"detail": "x"}, {"Retry-After": header}), "call_id")
        assert answer.kind in ("throttled", "retry")
        assert answer.retry_after is None


def test_an_error_body_of_any_shape_is_one_line_of_text() -> None:
    assert error_text(_response(500, ["a", {"b": 1}])) == "HTTP 500: ['a', {'b': 1}]"
    assert error_text(_response(400, {"detail": {"description": 7}})) == "HTTP 400: 7"
    assert error_text(httpx.Response(502, content=b"bad\r\ngateway\x00")) == "HTTP 502: bad gateway\x00"
    assert error_text(httpx.Response(500, content=b"[" * 100_000)).startswith("HTTP 500: [[[")


def test_an_answer_that_echoes_the_key_has_it_cut_out() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"detail": f"bad header {request.headers['authorization']}"})

    async def go() -> str:
        client = SynthflowClient("http://api.test", "sk-echo-1", transport=httpx.MockTransport(handler))
        try:
            return (await client.post(CALLS, {})).error
        finally:
            await client.aclose()

    error = asyncio.run(go())
    assert "sk-echo-1" not in error
    assert error == "HTTP 400: bad header Bearer [redacted]"


@pytest.mark.parametrize("key", ["sk-cr-1234\r", "sk-\x7f-1234", "sk-clé-1234", "sk-\n-1234"])
def test_a_key_http_cannot_carry_is_refused_before_anything_is_sent(key: str) -> None:
    with pytest.raises(SetupError) as refused:
        SynthflowClient("http://api.test", key)
    assert "1234" not in str(refused.value)


def test_a_request_httpx_cannot_send_is_never_quoted(sandbox: Any) -> None:
    # h11 refuses a header with a CR, and its message quotes the header (here, a key).
    server = sandbox()

    async def go() -> str:
        client = SynthflowClient(server.url, "sk-cr-1234")
        for lane in client._lanes:
            lane.headers["X-Echo"] = "sk-cr-1234\r"
        try:
            return (await client.post(CALLS, {})).error
        finally:
            await client.aclose()

    error = asyncio.run(go())
    assert "sk-cr" not in error and "1234" not in error

    assert read_record(server.record) == []  # nothing reached the API


# -- calls read back: untrusted answers to the follower's polls ---------------------------

from dialer.client import calls_page, read_call  # noqa: E402


@pytest.mark.parametrize(
    ("collected", "expected"),
    [
        pytest.param({"interest": "yes", "age": 41}, {"interest": "yes", "age": "41"}, id="flat"),
        pytest.param({"model-1": {"interest": "no"}}, {"interest": "no"}, id="keyed-by-the-agent"),
        pytest.param({"other-id": {"interest": "no"}}, {"interest": "no"}, id="keyed-by-another-id"),
        pytest.param(None, {}, id="null"),
        pytest.param("yes", {}, id="not-a-map"),
        pytest.param({"ok": True, "list": [1, 2]}, {"ok": "true", "list": "[1, 2]"}, id="odd-values"),
    ],
)
def test_collected_variables_are_read_flat_or_keyed_by_the_agent(
    collected: Any, expected: dict[str, str]
) -> None:
    call = read_call({"call_id": "c1", "status": "completed", "collected_variables": collected}, "model-1")
    assert call is not None and call.collected == expected


def test_a_listing_names_the_status_call_status_and_odd_items_are_skipped() -> None:
    page = calls_page(
        {
            "response": {
                "pagination": {"total_records": "many"},
                "calls": [
                    {
                        "call_id": "c1",
                        "call_status": "busy",
                        "duration": "12.5",
                        "end_call_reason": "user_canceled",
                    },
                    {"call_id": {"id": 1}, "call_status": "completed"},
                    "junk",
                    {"call_id": 7, "status": "no-answer", "duration": float("nan"), "recording_url": None},
                ],
            }
        },
        "m",
    )
    assert page.items == 4 and page.total is None
    assert [(c.call_id, c.status, c.duration, c.end_reason) for c in page.calls] == [
        ("c1", "busy", 12.5, "user_canceled"),
        ("7", "no-answer", None, ""),
    ]
    with pytest.raises(LookupError_):
        calls_page({"response": {"calls": "none"}}, "m")
