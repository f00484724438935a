"""Shared fixtures: real sandbox servers on loopback, each with a record file in tmp_path."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dialer.sandbox import RunningSandbox, SandboxOptions, read_record, start_in_thread

__all__ = ["read_record"]  # re-exported: `from tests.conftest import read_record` works too

MakeSandbox = Callable[..., RunningSandbox]


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[MakeSandbox]:
    """A factory `make(**SandboxOptions fields) -> RunningSandbox`, stopped at teardown.

    Each sandbox records to its own file in tmp_path unless `record=` is given;
    `running.record` is that path.
    """
    started: list[RunningSandbox] = []

    def make(**options: Any) -> RunningSandbox:
        options.setdefault("record", tmp_path / f"sandbox-{len(started)}.jsonl")
        running = start_in_thread(SandboxOptions(**options))
        started.append(running)
        return running

    yield make
    for running in started:
        running.stop()


def ended_at_once(handler: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A MockTransport handler for POSTs, made to answer the follower's polls too: every call
    it accepted shows `completed` on GET /v2/calls and GET /v2/calls/{id} (look-ups, which
    carry lead_phone_number, still go to `handler`)."""
    import json

    import httpx

    accepted: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        polled = request.method == "GET" and "lead_phone_number" not in request.url.params
        if not polled or not request.url.path.startswith("/v2/calls"):
            response: httpx.Response = handler(request)
            if request.method == "POST" and response.status_code == 200:
                call_id = json.loads(response.content or b"{}").get("response", {}).get("call_id")
                if isinstance(call_id, str):
                    accepted.append(call_id)
            return response
        wanted = request.url.path.rsplit("/", 1)[-1] if request.url.path != "/v2/calls" else None
        calls = [
            {"call_id": c, "status": "completed", "call_status": "completed", "duration": 1}
            for c in accepted
            if wanted is None or c == wanted
        ]
        body = {"status": "ok", "response": {"pagination": {"total_records": len(calls)}, "calls": calls}}
        return httpx.Response(200, json=body)

    return handle
