"""The sandbox's settings: one frozen dataclass, checked when it is built."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class SandboxOptions:
    """How a sandbox listens, and which faults it injects.

    `rate_limit` N: more than N accepted POSTs in any 1-second window answer 429
    (with `Retry-After: retry_after` when that is set). `fail_rate`: the share of
    POSTs answering 503 before doing anything. `drop_rate`: the share of POSTs that
    place the call, then close the connection without an answer. `latency_ms`
    delays every answer. `seed` makes the fail/drop choices repeatable.
    `accept_body` / `lookup_body`: odd answers, for testing a client that must not
    trust them. An accepted POST still places its call, then answers 200 with
    `accept_body` as written; GET /v2/calls (the list) answers 200 with `lookup_body`.
    """

    host: str = "127.0.0.1"
    port: int = 0
    api_key: str | None = None
    record: Path | None = None
    rate_limit: int | None = None
    retry_after: float | None = None
    fail_rate: float = 0.0
    drop_rate: float = 0.0
    latency_ms: float = 0.0
    seed: int | None = None
    accept_body: str | None = None
    lookup_body: str | None = None

    def __post_init__(self) -> None:
        # Fail here, not on the first request, so a bad setting never half-starts a server.
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {self.port}")
        if self.rate_limit is not None and self.rate_limit < 1:
            raise ValueError(f"rate_limit must be at least 1, got {self.rate_limit}")
        if self.retry_after is not None and self.retry_after < 0:
            raise ValueError(f"retry_after must not be negative, got {self.retry_after}")
        for name in ("fail_rate", "drop_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        if self.latency_ms < 0:
            raise ValueError(f"latency_ms must not be negative, got {self.latency_ms}")
