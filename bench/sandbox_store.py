"""(5) The sandbox's store at scale: a store filled with many calls (100k; 10k with
--quick) through its own API on a fake clock, then the cost of placing a call and
of the look-ups a dialer makes (a time-window poll, a phone look-up), in time and
in calls examined. A look-up must cost its page, not the store's size.
"""

from __future__ import annotations

import time

from bench.results import Context, Section
from dialer.sandbox import SandboxOptions
from dialer.sandbox.store import Store

T0 = 1_800_000_000.0
RATE = 100  # calls placed per second of the fake clock
QUERIES = 2000


class _Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def run(ctx: Context) -> Section:
    section = Section("5 sandbox")
    calls = 10_000 if ctx.quick else 100_000
    clock = _Clock()
    options = SandboxOptions(
        call_seconds="30:300", outcomes="completed=0.6,no-answer=0.3,busy=0.1", collected=["x=1|2"]
    )
    store = Store(options, clock=clock)
    phones = calls // 2
    began = time.perf_counter()
    for n in range(calls):
        clock.now = T0 + n / RATE
        store.add_call({"model_id": "agent", "phone": f"+1415{n % phones:07d}", "name": "x"})
    placing = (time.perf_counter() - began) / calls

    # A dialer's poll: the last five minutes of the agent's calls, a page of 100.
    window_ms = (int((clock.now - 300) * 1000), int(clock.now * 1000))
    store.touched = 0
    began = time.perf_counter()
    for _ in range(QUERIES):
        _, page = store.list_calls("agent", from_ms=window_ms[0], to_ms=window_ms[1], limit=100)
        [call.to_json(clock.now, "call_status") for call in page]  # what the endpoint encodes
    window = (time.perf_counter() - began) / QUERIES
    window_touched = store.touched / QUERIES

    store.touched = 0
    began = time.perf_counter()
    for n in range(QUERIES):
        store.list_calls("agent", phone=f"+1415{n % phones:07d}")
    by_phone = (time.perf_counter() - began) / QUERIES
    phone_touched = store.touched / QUERIES

    section.details = {
        "calls": calls,
        "live_at_end": store.live_calls,
        "place_us": placing * 1e6,
        "window_poll_us": window * 1e6,
        "window_poll_calls_examined": window_touched,
        "phone_look_up_us": by_phone * 1e6,
        "phone_look_up_calls_examined": phone_touched,
    }
    section.add(f"{calls:,} calls stored: place one", placing * 1e6, "µs")
    section.add("  time-window poll, page of 100 (as JSON dicts)", window * 1e6, "µs")
    section.add("  calls examined per poll", window_touched, "", "<= 100", window_touched <= 100)
    section.add("  phone look-up", by_phone * 1e6, "µs")
    return section
