"""The sandbox as a client meets it: real HTTP on loopback, checked against its record file."""

from __future__ import annotations

import contextlib
import random
import ssl
import time
import uuid
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from dialer.sandbox import RunningSandbox, SandboxOptions, read_record, spawn_process
from dialer.sandbox.command import simulate
from dialer.sandbox.store import Store
from tests.conftest import MakeSandbox

KEY = "test-key"
MODEL = "1696372226173x164740052408336400"
AGENT = "2a886b7d-d52d-4f8b-8ea0-19d3edc79214"
PHONE = "+14155550100"
# One TLS context for every client: httpx would build (and load CAs into) one per client,
# which costs more than most of these tests. Loopback HTTP never uses it anyway.
TLS = ssl.create_default_context()
CALL: dict[str, Any] = {"model_id": MODEL, "phone": PHONE, "name": "David"}
CHAT: dict[str, Any] = {
    "agent_id": AGENT,
    "channel": "whatsapp",
    "to_number": PHONE,
    "from_number": "+15551234567",
}


def client(running: RunningSandbox, key: str = KEY, **kwargs: Any) -> httpx.Client:
    headers = {"Authorization": f"Bearer {key}"}
    return httpx.Client(base_url=running.url, headers=headers, verify=TLS, **kwargs)


def call(**changes: Any) -> dict[str, Any]:
    return {**CALL, **changes}


def chat(**changes: Any) -> dict[str, Any]:
    return {**CHAT, **changes}


def list_calls(http: httpx.Client, **params: Any) -> dict[str, Any]:
    response = http.get("/v2/calls", params={"model_id": MODEL, **params})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()["response"]
    return result


def record_of(running: RunningSandbox) -> list[dict[str, Any]]:
    assert running.record is not None
    return read_record(running.record)


# -- calls --------------------------------------------------------------------------------


def test_post_call_answers_an_id_that_get_call_finds(sandbox: MakeSandbox) -> None:
    with client(sandbox()) as http:
        full = call(
            from_phone_number="+16286666348",
            custom_variables=[{"key": "Company", "value": "Synthflow"}],
            lead_email="david@example.com",
            lead_timezone="America/New_York",
            prompt="You are a helpful sales assistant.",
            greeting="Hello, this is Sarah.",
        )
        placed = http.post("/v2/calls", json=full)
        assert placed.status_code == 200
        answer = placed.json()
        assert answer["status"] == "success" and answer["response"]["answer"] == "ok"
        call_id = answer["response"]["call_id"]

        got = http.get(f"/v2/calls/{call_id}").json()

    assert got["status"] == "ok"
    assert got["response"]["pagination"] == {"total_records": 1, "limit": 1, "offset": 0}
    (found,) = got["response"]["calls"]
    assert found["call_id"] == call_id
    assert found["model_id"] == MODEL
    assert found["phone_number_from"] == "+16286666348"
    assert found["phone_number_to"] == PHONE
    assert found["name"] == "David"
    assert found["status"] == "completed"
    assert isinstance(found["start_time"], int) and found["start_time"] > 1_600_000_000_000
    for field in ("end_call_reason", "transcript", "recording_url"):
        assert found[field]
    assert found["duration"] == 0  # by default a call ends as soon as it is placed
    assert found["collected_variables"] == {} and found["error_message"] is None


def test_call_ids_are_unique(sandbox: MakeSandbox) -> None:
    with client(sandbox()) as http:
        ids = {http.post("/v2/calls", json=CALL).json()["response"]["call_id"] for _ in range(20)}
    assert len(ids) == 20


def test_get_unknown_call_is_404(sandbox: MakeSandbox) -> None:
    with client(sandbox()) as http:
        response = http.get("/v2/calls/nope")
    assert response.status_code == 404
    assert "detail" in response.json()


def test_list_calls_filters_by_phone_and_agent_newest_first(sandbox: MakeSandbox) -> None:
    with client(sandbox()) as http:
        mine = [http.post("/v2/calls", json=CALL).json()["response"]["call_id"] for _ in range(3)]
        http.post("/v2/calls", json=call(phone="+14155550199"))
        http.post("/v2/calls", json=call(model_id="another-agent"))

        # httpx encodes "+" as %2B in params, as the docs ask.
        by_phone = list_calls(http, lead_phone_number=PHONE)
        by_agent = list_calls(http)
        paged = list_calls(http, lead_phone_number=PHONE, limit=2, offset=1)

    assert [c["call_id"] for c in by_phone["calls"]] == mine[::-1]
    assert by_phone["pagination"] == {"total_records": 3, "limit": 20, "offset": 0}
    assert by_agent["pagination"]["total_records"] == 4
    assert {c["model_id"] for c in by_agent["calls"]} == {MODEL}
    assert [c["call_id"] for c in paged["calls"]] == mine[::-1][1:3]
    assert paged["pagination"] == {"total_records": 3, "limit": 2, "offset": 1}


def test_list_calls_with_a_bare_plus_matches_nothing(sandbox: MakeSandbox) -> None:
    # A "+" left unencoded in a query string means a space: the reason for the docs' %2B.
    with client(sandbox()) as http:
        http.post("/v2/calls", json=CALL)
        response = http.get(f"/v2/calls?model_id={MODEL}&lead_phone_number={PHONE}")
    assert response.json()["response"]["calls"] == []


def test_list_calls_dates_are_inclusive_milliseconds(sandbox: MakeSandbox) -> None:
    with client(sandbox()) as http:
        for _ in range(3):
            http.post("/v2/calls", json=CALL)
        calls = list_calls(http)["calls"]
        start = calls[1]["start_time"]
        exact = list_calls(http, from_date=start, to_date=start)["calls"]
        later = list_calls(http, from_date=start + 10**9)["calls"]
        earlier = list_calls(http, to_date=start - 10**9)["calls"]

    assert calls[1]["call_id"] in {c["call_id"] for c in exact}
    assert {c["start_time"] for c in exact} == {start}
    assert later == [] and earlier == []


@pytest.mark.parametrize(
    ("query", "named"),
    [
        pytest.param({}, "model_id", id="no-model-id"),
        pytest.param({"model_id": MODEL, "limit": "ten"}, "limit", id="limit-not-int"),
        pytest.param({"model_id": MODEL, "limit": "0"}, "limit", id="limit-zero"),
        pytest.param({"model_id": MODEL, "offset": "-1"}, "offset", id="negative-offset"),
        pytest.param({"model_id": MODEL, "from_date": "yesterday"}, "from_date", id="bad-date"),
    ],
)
def test_list_calls_rejects_bad_queries(sandbox: MakeSandbox, query: dict[str, str], named: str) -> None:
    with client(sandbox()) as http:
        response = http.get("/v2/calls", params=query)
    assert response.status_code == 400
    assert response.json()["detail"].startswith(f"{named}:")


def test_store_pages_match_a_brute_force_scan() -> None:
    # The bisection and slicing of the indexes, against the obvious filter-and-sort.
    rng = random.Random(3)
    store = Store()
    phones = [f"+1415555{n:04d}" for n in range(5)]
    for n in range(300):
        body = {"model_id": rng.choice("ab"), "phone": rng.choice(phones), "name": "x"}
        store.add_call(body, 1_700_000_000 + n * 0.01)
    everything = list(store.calls.values())
    for _ in range(200):
        model, phone = rng.choice("ab"), rng.choice([None, *phones])
        low, high = sorted(
            rng.choices([None, *range(1_700_000_000_000, 1_700_000_003_000)], k=2),
            key=lambda v: -1 if v is None else v,
        )
        limit, offset = rng.randint(1, 30), rng.randint(0, 100)
        expected = [
            c
            for c in reversed(everything)
            if c.model_id == model
            and (phone is None or c.phone_to == phone)
            and (low is None or c.created_ms >= low)
            and (high is None or c.created_ms <= high)
        ]
        total, page = store.list_calls(model, phone, low, high, limit=limit, offset=offset)
        assert (total, page) == (len(expected), expected[offset : offset + limit])


# -- chats --------------------------------------------------------------------------------


def test_post_chat_answers_a_conversation_id_that_get_chat_finds(sandbox: MakeSandbox) -> None:
    with client(sandbox()) as http:
        body = chat(
            initial_message="Hi!",
            template={"content_sid": "HX123", "variables": {"1": "David"}},
            custom_variables={"Company": "Acme", "seats": 3},
        )
        placed = http.post("/v2/chat/outbound", json=body)
        assert placed.status_code == 200
        assert placed.json()["status"] == "ok"
        chat_id = placed.json()["response"]["conversation_id"]
        got = http.get(f"/v2/chat/{chat_id}")

    assert uuid.UUID(chat_id).version == 4
    assert got.status_code == 200
    found = got.json()["response"]
    assert found["chat_id"] == chat_id and found["chat_status"] == "ongoing"
    assert isinstance(found["start_timestamp"], int)


def test_get_unknown_chat_is_404(sandbox: MakeSandbox) -> None:
    with client(sandbox()) as http:
        assert http.get(f"/v2/chat/{uuid.uuid4()}").status_code == 404


def test_list_chats_pages_newest_first_with_a_cursor(sandbox: MakeSandbox) -> None:
    other_agent = str(uuid.uuid4())
    with client(sandbox()) as http:
        ids = [
            http.post("/v2/chat/outbound", json=CHAT).json()["response"]["conversation_id"] for _ in range(5)
        ]
        http.post("/v2/chat/outbound", json=chat(agent_id=other_agent))
        pages = []
        params: dict[str, Any] = {"agent_id": AGENT, "limit": 2}
        while True:
            page = http.get("/v2/chat", params=params).json()["response"]
            pages.append(page)
            if not page["has_more"]:
                break
            params["cursor"] = page["next_cursor"]
        everyone = http.get("/v2/chat").json()["response"]

    assert [[c["chat_id"] for c in page["chats"]] for page in pages] == [
        ids[4:2:-1],
        ids[2:0:-1],
        ids[0:1],
    ]
    assert [page["has_more"] for page in pages] == [True, True, False]
    assert pages[-1]["next_cursor"] is None
    assert len(everyone["chats"]) == 6 and everyone["has_more"] is False


# -- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "named"),
    [
        pytest.param({"model_id": MODEL, "name": "David"}, "phone", id="missing-phone"),
        pytest.param({"phone": PHONE, "name": "David"}, "model_id", id="missing-model-id"),
        pytest.param({"model_id": MODEL, "phone": PHONE}, "name", id="missing-name"),
        pytest.param(call(model_id=""), "model_id", id="empty-model-id"),
        pytest.param(call(phone="4155550100"), "phone", id="phone-not-e164"),
        pytest.param(call(phone=14155550100), "phone", id="phone-a-number"),
        pytest.param(call(phone=None), "phone", id="phone-null"),
        pytest.param(call(name=7), "name", id="name-a-number"),
        pytest.param(call(from_phone_number="+0123"), "from_phone_number", id="bad-caller-id"),
        pytest.param(call(custom_variables={"a": "b"}), "custom_variables", id="vars-a-map"),
        pytest.param(call(custom_variables=[{"key": "a", "value": 1}]), "custom_variables", id="var-number"),
        pytest.param(
            call(custom_variables=[{"key": "a", "value": "b", "x": "y"}]),
            "custom_variables",
            id="var-extra-key",
        ),
        pytest.param(call(lead_timezone="Mars/Olympus"), "lead_timezone", id="unknown-zone"),
        pytest.param(call(lead_timezone="America"), "lead_timezone", id="zone-folder"),
        pytest.param(call(lead_email=["a@b.c"]), "lead_email", id="email-a-list"),
        pytest.param(call(prompt=True), "prompt", id="prompt-a-boolean"),
        pytest.param(call(greting="Hi"), "greting", id="unknown-key"),
        pytest.param([CALL], "body", id="an-array"),
    ],
)
def test_post_call_rejects_bad_bodies_naming_the_field(sandbox: MakeSandbox, body: Any, named: str) -> None:
    running = sandbox()
    with client(running) as http:
        response = http.post("/v2/calls", json=body)
        placed = list_calls(http)["calls"]
    assert response.status_code == 400
    assert response.json()["detail"].startswith(f"{named}:")
    assert placed == []


def test_post_call_accepts_null_for_optional_fields(sandbox: MakeSandbox) -> None:
    with client(sandbox()) as http:
        response = http.post("/v2/calls", json=call(prompt=None, custom_variables=None))
    assert response.status_code == 200


def test_post_call_rejects_a_body_that_is_not_json(sandbox: MakeSandbox) -> None:
    running = sandbox()
    with client(running) as http:
        response = http.post("/v2/calls", content=b"{not json")
    assert response.status_code == 400
    assert response.json() == {"detail": "body: not valid JSON"}
    assert record_of(running)[0]["body"] is None


@pytest.mark.parametrize(
    ("body", "named"),
    [
        pytest.param(
            chat(custom_variables=[{"key": "a", "value": "b"}]), "custom_variables", id="vars-a-list"
        ),
        pytest.param(chat(agent_id="agent-7"), "agent_id", id="agent-not-uuid"),
        pytest.param(chat(channel="email"), "channel", id="unknown-channel"),
        pytest.param({k: v for k, v in CHAT.items() if k != "to_number"}, "to_number", id="missing-to"),
        pytest.param(chat(from_number="555-1234"), "from_number", id="from-not-e164"),
        pytest.param(chat(initial_message=1), "initial_message", id="message-a-number"),
        pytest.param(chat(template={"variables": {}}), "template", id="template-no-sid"),
        pytest.param(
            chat(template={"content_sid": "HX1", "variables": {"1": 2}}), "template", id="template-var-number"
        ),
        pytest.param(
            chat(template={"content_sid": "HX1", "lang": "en"}), "template", id="template-unknown-key"
        ),
        pytest.param(chat(model_id=MODEL), "model_id", id="unknown-key"),
    ],
)
def test_post_chat_rejects_bad_bodies_naming_the_field(sandbox: MakeSandbox, body: Any, named: str) -> None:
    with client(sandbox()) as http:
        response = http.post("/v2/chat/outbound", json=body)
        listed = http.get("/v2/chat").json()["response"]["chats"]
    assert response.status_code == 400
    assert response.json()["detail"].startswith(f"{named}:")
    assert listed == []


# -- authentication -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-header"),
        pytest.param({"Authorization": "Bearer"}, id="no-token"),
        pytest.param({"Authorization": f"Basic {KEY}"}, id="not-bearer"),
        pytest.param({"Authorization": "Bearer wrong"}, id="wrong-key"),
    ],
)
def test_requests_without_the_key_are_401_and_place_nothing(
    sandbox: MakeSandbox, headers: dict[str, str]
) -> None:
    running = sandbox(api_key=KEY)
    with httpx.Client(base_url=running.url, headers=headers, verify=TLS) as anonymous:
        posted = anonymous.post("/v2/calls", json=CALL)
        got = anonymous.get("/v2/calls", params={"model_id": MODEL})
    assert (posted.status_code, got.status_code) == (401, 401)
    assert "detail" in posted.json()
    with client(running) as http:
        assert list_calls(http)["calls"] == []
    assert [r["status"] for r in record_of(running)] == [401, 401, 200]


def test_any_token_is_accepted_when_no_key_is_set(sandbox: MakeSandbox) -> None:
    with client(sandbox(), key="whatever") as http:
        assert http.post("/v2/calls", json=CALL).status_code == 200


# -- fault switches -----------------------------------------------------------------------


def accepted_in_second_before(records: list[dict[str, Any]], index: int) -> int:
    """POSTs accepted (placed, dropped or not) before records[index], less than 1 s before it."""
    moment = records[index]["time"]
    return sum(
        1 for r in records[:index] if r["method"] == "POST" and r["status"] == 200 and r["time"] > moment - 1
    )


def test_rate_limit_holds_in_every_one_second_window(sandbox: MakeSandbox) -> None:
    running = sandbox(rate_limit=3)
    with client(running) as http:
        answers = [http.post("/v2/calls", json=CALL) for _ in range(12)]
    limited = [a for a in answers if a.status_code == 429]
    assert limited, "12 quick POSTs against a limit of 3 a second must meet a 429"
    assert limited[0].json() == {"detail": "Rate limit exceeded. Your rate limit per minute is 180"}
    assert "Retry-After" not in limited[0].headers

    records = record_of(running)
    # Exactly the rule, read off the arrival times: a POST is refused when, and only
    # when, N were accepted in the second before it.
    for index, r in enumerate(records):
        before = accepted_in_second_before(records, index)
        assert (r["status"] == 429) == (before >= 3), r


def test_rate_limit_sends_retry_after_when_asked(sandbox: MakeSandbox) -> None:
    with client(sandbox(rate_limit=1, retry_after=2.5)) as http:
        answers = [http.post("/v2/calls", json=CALL) for _ in range(3)]
    assert [a.headers.get("Retry-After") for a in answers if a.status_code == 429][0] == "2.5"


def test_rejected_posts_do_not_count_against_the_rate_limit(sandbox: MakeSandbox) -> None:
    running = sandbox(rate_limit=2)
    with client(running) as http:
        invalid = [http.post("/v2/calls", json={"phone": PHONE}) for _ in range(2)]
        valid = [http.post("/v2/calls", json=CALL) for _ in range(2)]
    assert [a.status_code for a in invalid + valid] == [400, 400, 200, 200]


def test_fail_rate_answers_503_and_places_nothing(sandbox: MakeSandbox) -> None:
    running = sandbox(fail_rate=1.0)
    with client(running) as http:
        answers = [
            http.post(path, json=body) for path, body in [("/v2/calls", CALL), ("/v2/chat/outbound", CHAT)]
        ]
        calls = list_calls(http)["calls"]
        chats = http.get("/v2/chat").json()["response"]["chats"]
    assert [a.status_code for a in answers] == [503, 503]
    assert "detail" in answers[0].json()
    assert calls == [] and chats == []


def test_fail_rate_comes_before_validation(sandbox: MakeSandbox) -> None:
    with client(sandbox(fail_rate=1.0)) as http:
        assert http.post("/v2/calls", json={"bogus": 1}).status_code == 503


def test_a_dropped_post_closes_the_connection_but_places_the_call(sandbox: MakeSandbox) -> None:
    running = sandbox(drop_rate=1.0)
    with client(running) as http:
        # Warm a keep-alive connection first: a drop must also work on a reused one.
        http.get("/v2/calls", params={"model_id": MODEL})
        with pytest.raises(httpx.RemoteProtocolError):
            http.post("/v2/calls", json=CALL)
        found = list_calls(http, lead_phone_number=PHONE)["calls"]
        with pytest.raises(httpx.RemoteProtocolError):
            http.post("/v2/chat/outbound", json=CHAT)
        chats = http.get("/v2/chat").json()["response"]["chats"]

    (dropped_call, dropped_chat) = [r for r in record_of(running) if r["method"] == "POST"]
    assert dropped_call["dropped"] is True and dropped_call["status"] == 200
    assert [c["call_id"] for c in found] == [dropped_call["response"]["response"]["call_id"]]
    assert [c["chat_id"] for c in chats] == [dropped_chat["response"]["response"]["conversation_id"]]


def test_latency_delays_answers_but_the_call_is_placed_on_arrival(sandbox: MakeSandbox) -> None:
    running = sandbox(latency_ms=300)
    with client(running, timeout=0.05) as impatient, pytest.raises(httpx.ReadTimeout):
        impatient.post("/v2/calls", json=CALL)
    # The record line is written on arrival, before the delay: it is there already.
    assert [r["status"] for r in record_of(running)] == [200]
    with client(running) as http:
        began = time.monotonic()
        found = list_calls(http, lead_phone_number=PHONE)["calls"]
        took = time.monotonic() - began
    assert len(found) == 1
    assert took >= 0.3


def test_the_seed_makes_fail_and_drop_choices_repeatable(sandbox: MakeSandbox) -> None:
    def outcomes(seed: int) -> list[tuple[int, bool]]:
        running = sandbox(fail_rate=0.3, drop_rate=0.3, seed=seed)
        with client(running) as http:
            for _ in range(30):
                with contextlib.suppress(httpx.RemoteProtocolError):
                    http.post("/v2/calls", json=CALL)
        return [(r["status"], r["dropped"]) for r in record_of(running)]

    first = outcomes(seed=7)
    assert {status for status, _ in first} == {200, 503}
    assert any(dropped for _, dropped in first)
    assert outcomes(seed=7) == first
    assert outcomes(seed=8) != first


# -- the record file ----------------------------------------------------------------------


def test_record_has_one_json_line_per_request(sandbox: MakeSandbox) -> None:
    running = sandbox()
    with client(running) as http:
        before = time.time()
        http.post("/v2/calls", json=CALL)
        http.get("/v2/calls", params={"model_id": MODEL, "lead_phone_number": PHONE})
        http.delete("/v2/calls")
        after = time.time()
    assert running.record is not None
    text = running.record.read_text()
    # Three requests, and the call's end (at once, by default) between the POST and the GET.
    assert text.endswith("\n") and text.count("\n") == 4
    ended = read_record(running.record, events=True)[1]
    assert ended["event"] == "call.ended" and ended["status"] == "completed"

    post, get, other = read_record(running.record)
    for line in (post, get, other):
        assert set(line) == {"time", "method", "path", "query", "body", "status", "response", "dropped"}
        assert before <= line["time"] <= after
        assert line["dropped"] is False
    assert (post["method"], post["path"], post["query"]) == ("POST", "/v2/calls", {})
    assert post["body"] == CALL and post["status"] == 200
    assert post["response"]["response"]["answer"] == "ok"
    assert get["query"] == {"model_id": MODEL, "lead_phone_number": PHONE}
    assert get["body"] is None
    assert get["response"]["response"]["calls"][0]["phone_number_to"] == PHONE
    assert (other["method"], other["status"], other["response"]) == ("DELETE", 404, {"detail": "Not Found"})


def test_rejected_posts_are_recorded_with_their_body(sandbox: MakeSandbox) -> None:
    running = sandbox(api_key=KEY, fail_rate=1.0)
    with client(running, key="wrong") as anonymous:
        anonymous.post("/v2/calls", json=call(name="First"))
    with client(running) as http:
        http.post("/v2/calls", json=call(name="Second"))
    assert [(r["status"], r["body"]["name"]) for r in record_of(running)] == [
        (401, "First"),
        (503, "Second"),
    ]


# -- options, command line, subprocess ------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"fail_rate": 1.5}, id="fail-rate-over-1"),
        pytest.param({"drop_rate": -0.1}, id="negative-drop-rate"),
        pytest.param({"rate_limit": 0}, id="zero-rate-limit"),
        pytest.param({"latency_ms": -1}, id="negative-latency"),
        pytest.param({"port": 70000}, id="port-out-of-range"),
    ],
)
def test_options_are_checked_when_built(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(options))):
        SandboxOptions(**options)


def test_simulate_help_documents_every_flag() -> None:
    result = CliRunner().invoke(simulate, ["--help"])
    assert result.exit_code == 0
    for flag in (
        "--host",
        "--port",
        "--api-key",
        "--record",
        "--rate-limit",
        "--retry-after",
        "--fail-rate",
        "--drop-rate",
        "--latency-ms",
        "--seed",
        "Example",
    ):
        assert flag in result.output


def test_simulate_refuses_a_rate_out_of_range() -> None:
    result = CliRunner().invoke(simulate, ["--drop-rate", "2"])
    assert result.exit_code == 2
    assert "--drop-rate" in result.output


def test_spawn_process_serves_until_stopped(tmp_path: Any) -> None:
    record = tmp_path / "process.jsonl"
    with spawn_process(SandboxOptions(api_key=KEY, record=record)) as running:
        assert running.pid is not None
        with client(running) as http:
            assert http.post("/v2/calls", json=CALL).status_code == 200
        with client(running, key="wrong") as http:
            assert http.post("/v2/calls", json=CALL).status_code == 401
    with pytest.raises(httpx.ConnectError):
        httpx.get(running.url)
    assert [r["status"] for r in read_record(record)] == [200, 401]
