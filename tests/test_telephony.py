"""The sandbox's telephony over real HTTP: calls that live, end by time, and end as `fate()` says.

The sandboxes here run on a fake clock (SandboxOptions.clock): a test moves it
forward, and the next request ends every call due by then (writing its
`call.ended` line first), so nothing sleeps.
"""

from __future__ import annotations

import concurrent.futures
import random
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from dialer.sandbox import RunningSandbox, SandboxOptions, fate, read_events, read_record, spawn_process
from dialer.sandbox.command import simulate
from dialer.sandbox.fate import END_REASONS, OTHER_END_REASON
from dialer.sandbox.store import Store
from tests.conftest import MakeSandbox
from tests.test_sandbox import CALL, CHAT, KEY, MODEL, PHONE, call, client, list_calls

T0 = 1_800_000_000.0


class FakeClock:
    """A clock that stands still until a test moves it."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def get_call(http: httpx.Client, call_id: str) -> dict[str, Any]:
    response = http.get(f"/v2/calls/{call_id}")
    assert response.status_code == 200, response.text
    (found,) = response.json()["response"]["calls"]
    result: dict[str, Any] = found
    return result


def place(http: httpx.Client, **changes: Any) -> str:
    response = http.post("/v2/calls", json=call(**changes))
    assert response.status_code == 200, response.text
    call_id: str = response.json()["response"]["call_id"]
    return call_id


# -- fate --------------------------------------------------------------------------------


def test_fate_depends_only_on_seed_phone_and_ordinal() -> None:
    options = SandboxOptions(
        seed=5,
        call_seconds="10:300",
        outcomes="completed=0.5,no-answer=0.3,busy=0.2",
        collected=["interest=yes|no|maybe"],
    )
    fates = [fate(5, f"+1415555{n:04d}", ordinal, options) for n in range(50) for ordinal in (1, 2)]
    again = [fate(5, f"+1415555{n:04d}", ordinal, options) for n in range(50) for ordinal in (1, 2)]
    assert fates == again
    assert fates != [fate(6, f"+1415555{n:04d}", ordinal, options) for n in range(50) for ordinal in (1, 2)]
    assert {f.status for f in fates} == {"completed", "no-answer", "busy"}
    assert all(10 <= f.seconds <= 300 and round(f.seconds, 3) == f.seconds for f in fates)
    for f in fates:
        assert f.end_call_reason in END_REASONS[f.status]
        assert (f.collected is not None) == (f.status == "completed")
        if f.collected is not None:
            assert f.collected["interest"] in ("yes", "no", "maybe")
    # No seed counts as seed 0, so a sandbox without --seed is predictable too.
    assert fate(None, PHONE, 1, options) == fate(0, PHONE, 1, options)


def test_outcome_shares_are_kept_over_many_calls() -> None:
    options = SandboxOptions(outcomes={"completed": 0.6, "no-answer": 0.3, "busy": 0.1})
    counts = Counter(fate(1, f"+1212555{n:04d}", 1, options).status for n in range(10_000))
    assert abs(counts["completed"] / 10_000 - 0.6) < 0.03
    assert abs(counts["no-answer"] / 10_000 - 0.3) < 0.03
    assert abs(counts["busy"] / 10_000 - 0.1) < 0.02


# -- a call's life -------------------------------------------------------------------------


def test_a_call_rings_then_is_in_progress_then_ends_as_its_fate_says(sandbox: MakeSandbox) -> None:
    clock = FakeClock()
    options: dict[str, Any] = {
        "seed": 3,
        "call_seconds": "60:120",
        "collected": ["interest=yes|no"],
        "clock": clock,
    }
    running = sandbox(**options)
    expected = fate(3, PHONE, 1, SandboxOptions(**options))
    with client(running) as http:
        call_id = place(http)
        ringing = get_call(http, call_id)
        clock.now = T0 + expected.ring_seconds - 0.01
        still_ringing = get_call(http, call_id)["status"]
        clock.now = T0 + expected.ring_seconds
        talking = get_call(http, call_id)
        clock.now = T0 + expected.seconds - 0.001
        not_yet = get_call(http, call_id)["status"]
        clock.now = T0 + expected.seconds
        ended = get_call(http, call_id)

    assert ringing["status"] == still_ringing == "ringing"
    assert talking["status"] == not_yet == "in-progress"
    for live in (ringing, talking):
        assert live["duration"] == 0
        assert live["end_call_reason"] is None and live["recording_url"] is None
        assert live["collected_variables"] is None
    assert ended["status"] == "completed"
    assert ended["duration"] == expected.seconds
    assert ended["end_call_reason"] == expected.end_call_reason
    assert ended["collected_variables"] == expected.collected
    assert ended["recording_url"].endswith(f"{call_id}.mp3")
    assert ended["start_time"] == int(T0 * 1000)

    (line,) = read_events(running.record or Path())
    assert line == {
        "time": T0 + expected.seconds,
        "event": "call.ended",
        "call_id": call_id,
        "phone": PHONE,
        "status": "completed",
        "duration": expected.seconds,
    }


def test_an_unanswered_call_rings_all_its_life_and_has_no_recording(sandbox: MakeSandbox) -> None:
    clock = FakeClock()
    running = sandbox(call_seconds=40, outcomes="no-answer=1", clock=clock)
    with client(running) as http:
        call_id = place(http)
        clock.now = T0 + 39.9
        late = get_call(http, call_id)["status"]
        clock.now = T0 + 40
        ended = get_call(http, call_id)
    assert late == "ringing"
    assert ended["status"] == "no-answer" and ended["duration"] == 40
    assert ended["end_call_reason"] == "timeout"
    assert ended["recording_url"] is None and ended["collected_variables"] is None


def place_all(running: RunningSandbox, clock: FakeClock, plan: list[str], concurrency: int) -> None:
    """Place a call to each phone of `plan`, then move past every call's end."""

    moving = threading.Lock()

    def post(http: httpx.Client, phone: str) -> None:
        place(http, phone=phone)
        with moving:  # the clock only moves forward, even with threads racing
            clock.now += 0.25

    with client(running) as http:
        if concurrency == 1:
            for phone in plan:
                post(http, phone)
        else:
            # Each phone's calls stay in order (the ordinal is per phone); phones race.
            per_phone = Counter(plan)
            with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:

                def calls_to(p: str) -> None:
                    for _ in range(per_phone[p]):
                        post(http, p)

                list(pool.map(calls_to, per_phone))
        clock.now += 1000
        http.get("/v2/calls", params={"model_id": MODEL})  # any request ends what is due


def test_record_call_ended_lines_equal_what_fate_predicts_whatever_the_arrival_order(
    sandbox: MakeSandbox,
) -> None:
    options: dict[str, Any] = {
        "seed": 11,
        "call_seconds": "5:500",
        "outcomes": "completed=0.5,no-answer=0.2,busy=0.1,hangup_on_voicemail=0.1,left_voicemail=0.1",
        "collected": ["interest=yes|no", "callback=mon|tue|wed"],
    }
    phones = [f"+1646555{n:04d}" for n in range(30)]
    # Three calls per phone; phones interleaved differently, and 8 at a time in the second run.
    plans = [[p for p in phones for _ in range(3)], random.Random(1).sample(phones * 3, 90)]
    outcomes = []
    for concurrency, plan in zip((1, 8), plans, strict=True):
        clock = FakeClock()
        running = sandbox(clock=clock, **options)
        place_all(running, clock, plan, concurrency)
        record = read_record(running.record or Path(), events=True)
        posts = [r for r in record if r.get("method") == "POST"]
        started = {r["response"]["response"]["call_id"]: (r["body"]["phone"], r["time"]) for r in posts}
        ordinals: Counter[str] = Counter()
        predicted = {}
        for post_record in posts:  # in arrival order, so per-phone ordinals are as placed
            phone = post_record["body"]["phone"]
            ordinals[phone] += 1
            predicted[post_record["response"]["response"]["call_id"]] = fate(
                11, phone, ordinals[phone], SandboxOptions(**options)
            )
        ended = [r for r in record if r.get("event") == "call.ended"]
        assert len(ended) == 90
        for line in ended:
            expected = predicted[line["call_id"]]
            phone, began = started[line["call_id"]]
            assert (line["phone"], line["status"], line["duration"]) == (
                phone,
                expected.status,
                expected.seconds,
            )
            assert line["time"] == began + expected.seconds
        # Written in end-time order, and before the request that came after them.
        assert [r["time"] for r in ended] == sorted(r["time"] for r in ended)
        assert record[-1].get("method") == "GET"
        outcomes.append(
            sorted((started[r["call_id"]][0], predicted[r["call_id"]].status, r["duration"]) for r in ended)
        )
    assert outcomes[0] == outcomes[1]


def test_calls_end_by_time_with_nobody_asking(sandbox: MakeSandbox) -> None:
    # The real clock: the sandbox's own timer must end the call and write its line.
    running = sandbox(call_seconds=0.05)
    with client(running) as http:
        place(http)
    deadline = time.monotonic() + 10
    while not read_events(running.record or Path()) and time.monotonic() < deadline:
        time.sleep(0.01)  # waiting for an event, not measuring time
    (post,) = read_record(running.record or Path())
    (ended,) = read_events(running.record or Path())
    assert ended["time"] == post["time"] + 0.05
    assert ended["call_id"] == post["response"]["response"]["call_id"]


# -- the live-call limit -------------------------------------------------------------------


def live_at_every_moment(record: list[dict[str, Any]]) -> list[int]:
    """Live calls after each line: accepted call POSTs count up, call.ended lines down."""
    live, counts = 0, []
    for line in record:
        if line.get("method") == "POST" and line["path"] == "/v2/calls" and line["status"] == 200:
            live += 1
        elif line.get("event") == "call.ended":
            live -= 1
        counts.append(live)
    return counts


def test_a_post_at_the_live_limit_is_429_and_places_nothing(sandbox: MakeSandbox) -> None:
    clock = FakeClock()
    running = sandbox(max_live_calls=2, call_seconds=30, clock=clock)
    with client(running) as http:
        first = [place(http, phone=f"+1415555010{n}") for n in range(2)]
        refused = http.post("/v2/calls", json=call(phone="+14155550109"))
        chat = http.post("/v2/chat/outbound", json=CHAT)  # chats have no live-call limit
        listed = list_calls(http)
        clock.now = T0 + 29.999
        still = http.post("/v2/calls", json=call(phone="+14155550109")).status_code
        clock.now = T0 + 30
        again = http.post("/v2/calls", json=call(phone="+14155550109"))

    assert refused.status_code == 429
    assert refused.json() == {"detail": "Concurrency limit exceeded"}
    assert chat.status_code == 200
    assert listed["pagination"]["total_records"] == 2
    assert {c["call_id"] for c in listed["calls"]} == set(first)
    assert still == 429 and again.status_code == 200
    record = read_record(running.record or Path(), events=True)
    assert max(live_at_every_moment(record)) == 2
    refused_line = next(r for r in record if r.get("status") == 429)
    assert refused_line["body"]["phone"] == "+14155550109"


def test_a_dropped_post_places_a_call_that_lives(sandbox: MakeSandbox) -> None:
    clock = FakeClock()
    running = sandbox(max_live_calls=1, call_seconds=60, drop_rate=1.0, clock=clock)
    with client(running) as http:
        with pytest.raises(httpx.RemoteProtocolError):
            http.post("/v2/calls", json=CALL)
        (live,) = list_calls(http, lead_phone_number=PHONE)["calls"]
        refused = http.post("/v2/calls", json=call(phone="+14155550111"))
    assert live["call_status"] == "ringing"
    assert refused.status_code == 429


def test_concurrency_refusals_do_not_count_against_the_rate_limit(sandbox: MakeSandbox) -> None:
    running = sandbox(max_live_calls=1, rate_limit=2, call_seconds=60, clock=FakeClock())
    with client(running) as http:
        codes = [http.post("/v2/calls", json=CALL).status_code for _ in range(4)]
    assert codes == [200, 429, 429, 429]
    assert {r["response"]["detail"] for r in read_record(running.record or Path()) if r["status"] == 429} == {
        "Concurrency limit exceeded"
    }


def test_a_stuck_call_stays_in_progress_and_live_for_ever(sandbox: MakeSandbox) -> None:
    clock = FakeClock()
    running = sandbox(outcomes="stuck=1", call_seconds=20, max_live_calls=1, clock=clock)
    with client(running) as http:
        call_id = place(http)
        clock.now = T0 + 10**7
        stuck = get_call(http, call_id)
        refused = http.post("/v2/calls", json=call(phone="+14155550111")).status_code
    assert stuck["status"] == "in-progress" and stuck["end_call_reason"] is None
    assert refused == 429
    assert read_events(running.record or Path()) == []


def test_a_status_the_dialer_does_not_know_is_served_as_given(sandbox: MakeSandbox) -> None:
    clock = FakeClock()
    running = sandbox(outcomes="completed=0.5,voicemail-detected=0.5", seed=2, clock=clock)
    with client(running) as http:
        ids = [place(http, phone=f"+1415555{n:04d}") for n in range(20)]
        clock.now += 1
        statuses = {get_call(http, i)["status"]: get_call(http, i) for i in ids}
    assert set(statuses) == {"completed", "voicemail-detected"}
    assert statuses["voicemail-detected"]["end_call_reason"] == OTHER_END_REASON
    assert {e["status"] for e in read_events(running.record or Path())} == set(statuses)


# -- the list endpoint -----------------------------------------------------------------------


def test_the_list_names_the_status_call_status_and_filters_by_it(sandbox: MakeSandbox) -> None:
    clock = FakeClock()
    running = sandbox(call_seconds="100", outcomes="completed=0.5,busy=0.5", seed=4, clock=clock)
    with client(running) as http:
        for n in range(10):
            place(http, phone=f"+1415555{n:04d}")
            clock.now += 1
        live = list_calls(http, limit=50)
        ringing = list_calls(http, call_status="ringing")
        clock.now = T0 + 200
        done = list_calls(http, limit=50)
        busy = list_calls(http, call_status="busy", limit=3)
        window = list_calls(http, from_date=int((T0 + 2) * 1000), to_date=int((T0 + 4) * 1000))

    assert all("status" not in c and c["call_status"] in ("ringing", "in-progress") for c in live["calls"])
    assert ringing["pagination"]["total_records"] == sum(c["call_status"] == "ringing" for c in live["calls"])
    expected = {
        f"+1415555{n:04d}": fate(
            4, f"+1415555{n:04d}", 1, SandboxOptions(outcomes="completed=0.5,busy=0.5", call_seconds=100)
        )
        for n in range(10)
    }
    assert {c["phone_number_to"]: c["call_status"] for c in done["calls"]} == {
        phone: f.status for phone, f in expected.items()
    }
    n_busy = sum(f.status == "busy" for f in expected.values())
    assert busy["pagination"] == {"total_records": n_busy, "limit": 3, "offset": 0}
    assert all(c["call_status"] == "busy" for c in busy["calls"])
    assert [c["phone_number_to"] for c in window["calls"]] == ["+14155550004", "+14155550003", "+14155550002"]


# -- shapes seen on the real API --------------------------------------------------------------


def test_collected_variables_nested_under_the_agent_id(sandbox: MakeSandbox) -> None:
    running = sandbox(collected=["interest=yes"], collected_shape="nested")
    with client(running) as http:
        found = get_call(http, place(http))
    assert found["collected_variables"] == {MODEL: {"interest": "yes"}}


def test_start_time_as_a_string(sandbox: MakeSandbox) -> None:
    running = sandbox(start_time_shape="string")
    with client(running) as http:
        found = get_call(http, place(http))
        (listed,) = list_calls(http)["calls"]
    assert isinstance(found["start_time"], str) and int(found["start_time"]) > 1_600_000_000_000
    assert listed["start_time"] == found["start_time"]


def test_mixed_shapes_vary_per_call_as_fate_says(sandbox: MakeSandbox) -> None:
    options: dict[str, Any] = {
        "seed": 9,
        "collected": ["x=1|2"],
        "collected_shape": "mixed",
        "start_time_shape": "mixed",
    }
    running = sandbox(**options)
    with client(running) as http:
        found = [get_call(http, place(http, phone=f"+1415555{n:04d}")) for n in range(30)]
    nested = [isinstance(c["collected_variables"].get(MODEL), dict) for c in found]
    strings = [isinstance(c["start_time"], str) for c in found]
    fates = [fate(9, f"+1415555{n:04d}", 1, SandboxOptions(**options)) for n in range(30)]
    assert nested == [f.nested_collected for f in fates] and any(nested) and not all(nested)
    assert strings == [f.string_start_time for f in fates] and any(strings) and not all(strings)


# -- chats ----------------------------------------------------------------------------------


def test_a_chat_is_ongoing_then_completed_after_its_seconds(sandbox: MakeSandbox) -> None:
    clock = FakeClock()
    with client(sandbox(chat_seconds=30, clock=clock)) as http:
        chat_id = http.post("/v2/chat/outbound", json=CHAT).json()["response"]["conversation_id"]
        before = http.get(f"/v2/chat/{chat_id}").json()["response"]["chat_status"]
        clock.now = T0 + 30
        after = http.get(f"/v2/chat/{chat_id}").json()["response"]["chat_status"]
        listed = http.get("/v2/chat").json()["response"]["chats"][0]["chat_status"]
    assert (before, after, listed) == ("ongoing", "completed", "completed")


def test_a_chat_is_ongoing_for_ever_by_default(sandbox: MakeSandbox) -> None:
    clock = FakeClock()
    with client(sandbox(clock=clock)) as http:
        chat_id = http.post("/v2/chat/outbound", json=CHAT).json()["response"]["conversation_id"]
        clock.now = T0 + 10**7
        assert http.get(f"/v2/chat/{chat_id}").json()["response"]["chat_status"] == "ongoing"


# -- the store at 100k calls --------------------------------------------------------------------


def test_store_list_look_ups_touch_their_page_not_100k_calls() -> None:
    clock = FakeClock()
    ended: list[float] = []
    store = Store(
        SandboxOptions(call_seconds="10:600", outcomes="completed=0.7,no-answer=0.3"),
        clock=clock,
        on_ended=lambda _, end: ended.append(end),
    )
    for n in range(100_000):
        clock.now = T0 + n * 0.01  # 100 calls a second for 1000 s
        store.add_call({"model_id": "ab"[n % 2], "phone": f"+1415{n % 50_000:07d}", "name": "x"})
    assert store.live_calls < 100_000  # calls ended as time went by
    assert ended == sorted(ended)

    store.touched = 0
    window = (int((T0 + 500) * 1000), int((T0 + 560) * 1000))
    total, page = store.list_calls("a", from_ms=window[0], to_ms=window[1], limit=50, offset=100)
    assert total == 3001 and len(page) == 50  # 50 a second for 60 s, both ends included
    assert store.touched == 50
    assert all(window[0] <= c.created_ms <= window[1] for c in page)

    store.touched = 0
    total, page = store.list_calls("a", phone="+14150000002")
    assert (total, [c.phone_to for c in page]) == (2, ["+14150000002"] * 2)
    assert store.touched == 2


def test_store_ends_a_call_at_its_end_time_and_frees_its_slot() -> None:
    clock = FakeClock()
    store = Store(SandboxOptions(call_seconds=30), clock=clock)
    placed = store.add_call(dict(CALL))
    assert store.live_calls == 1 and placed.ends_at == T0 + 30
    clock.now = T0 + 29.999
    assert store.advance() == 0 and store.live_calls == 1
    clock.now = T0 + 30
    assert store.advance() == 1 and store.live_calls == 0
    assert placed.status_at(clock.now) == "completed"


# -- the command line ---------------------------------------------------------------------------


def test_simulate_help_documents_the_telephony_flags() -> None:
    result = CliRunner().invoke(simulate, ["--help"])
    assert result.exit_code == 0
    for flag in (
        "--call-seconds",
        "--outcomes",
        "--max-live-calls",
        "--collected",
        "--collected-shape",
        "--start-time-shape",
        "--chat-seconds",
        "stuck",
    ):
        assert flag in result.output


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        pytest.param(["--call-seconds", "60:30"], "--call-seconds", id="max-below-min"),
        pytest.param(["--call-seconds", "soon"], "--call-seconds", id="not-a-number"),
        pytest.param(["--call-seconds", "1:2:3"], "--call-seconds", id="three-parts"),
        pytest.param(["--call-seconds", "-1"], "--call-seconds", id="negative"),
        pytest.param(["--outcomes", "completed=0.5"], "--outcomes", id="shares-not-1"),
        pytest.param(["--outcomes", "completed"], "--outcomes", id="no-share"),
        pytest.param(["--outcomes", "ringing=1"], "--outcomes", id="a-live-status"),
        pytest.param(["--outcomes", "Completed=1"], "--outcomes", id="not-a-status-name"),
        pytest.param(["--outcomes", "busy=0.5,busy=0.5"], "--outcomes", id="twice"),
        pytest.param(["--collected", "interest"], "--collected", id="no-values"),
        pytest.param(["--collected", "interest=yes||no"], "--collected", id="empty-value"),
        pytest.param(["--chat-seconds", "x"], "--chat-seconds", id="chat-seconds"),
    ],
)
def test_simulate_refuses_bad_telephony_values_in_one_line(argv: list[str], named: str) -> None:
    result = CliRunner().invoke(simulate, argv)
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert line.startswith(f"dialer simulate: {named}: ")


def test_simulate_refuses_a_live_limit_below_one() -> None:
    result = CliRunner().invoke(simulate, ["--max-live-calls", "0"])
    assert result.exit_code == 2 and "--max-live-calls" in result.output


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"call_seconds": (5, 1)}, id="call_seconds"),
        pytest.param({"outcomes": {"completed": 2}}, id="outcomes"),
        pytest.param({"collected": {"a b": ["x"]}}, id="collected"),
        pytest.param({"max_live_calls": 0}, id="max_live_calls"),
        pytest.param({"collected_shape": "deep"}, id="collected_shape"),
        pytest.param({"start_time_shape": "iso"}, id="start_time_shape"),
    ],
)
def test_telephony_options_are_checked_when_built(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(options))):
        SandboxOptions(**options)


def test_a_sandbox_process_takes_the_telephony_flags(tmp_path: Path) -> None:
    options = SandboxOptions(
        api_key=KEY,
        record=tmp_path / "process.jsonl",
        call_seconds="500:600",
        outcomes="completed=0.5,stuck=0.5",
        max_live_calls=1,
        collected={"interest": ["yes", "no"]},
        collected_shape="nested",
        start_time_shape="string",
        chat_seconds="1:2",
        seed=3,
    )
    with spawn_process(options) as running, client(running) as http:
        call_id = place(http)
        refused = http.post("/v2/calls", json=call(phone="+14155550111")).status_code
        found = get_call(http, call_id)
    assert refused == 429
    assert found["status"] == "ringing" and isinstance(found["start_time"], str)
    assert [r["status"] for r in read_record(options.record or Path())] == [200, 429, 200]
    assert read_events(options.record or Path()) == []  # its calls live for minutes


def status_of(call: Any, now: float) -> str:
    """What a call shows at `now`, worked out from its fate alone."""
    f = call.fate
    if f.ends and call.started + f.seconds <= now:
        return str(f.status)
    return "ringing" if now < call.started + f.ring_seconds else "in-progress"


def test_store_status_filter_matches_a_brute_force_scan_as_time_passes() -> None:
    rng = random.Random(5)
    clock = FakeClock()
    store = Store(
        SandboxOptions(call_seconds="0:8", outcomes="completed=0.5,busy=0.3,stuck=0.2"), clock=clock
    )
    phones = [f"+1415555{n:04d}" for n in range(6)]
    for _ in range(300):
        clock.now += rng.random() * 0.1
        store.add_call({"model_id": rng.choice("ab"), "phone": rng.choice(phones), "name": "x"})
    everything = list(store.calls.values())
    for _ in range(200):
        clock.now += rng.random() * 0.2  # calls keep ending between queries
        model, phone = rng.choice("ab"), rng.choice([None, *phones])
        wanted = rng.choice(["ringing", "in-progress", "completed", "busy"])
        limit, offset = rng.randint(1, 30), rng.randint(0, 40)
        expected = [
            c
            for c in reversed(everything)
            if c.model_id == model
            and (phone is None or c.phone_to == phone)
            and status_of(c, clock.now) == wanted
        ]
        total, page = store.list_calls(model, phone, call_status=wanted, limit=limit, offset=offset)
        assert (total, page) == (len(expected), expected[offset : offset + limit])
