"""`dialer simulate`: the sandbox as a command."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click

from dialer.sandbox.options import (
    COLLECTED_SHAPES,
    START_TIME_SHAPES,
    SandboxOptions,
    parse_collected,
    parse_outcomes,
    parse_seconds,
)
from dialer.sandbox.server import serve


@click.command("simulate")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8787,
    show_default=True,
    help="Port to listen on; 0 picks a free one.",
)
@click.option(
    "--api-key",
    envvar="SANDBOX_API_KEY",
    metavar="KEY",
    help="Accept only this Bearer token (default: any non-empty one). Env: SANDBOX_API_KEY.",
)
@click.option(
    "--record",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE",
    help="Append one JSON line per request to FILE, flushed at once.",
)
@click.option(
    "--rate-limit",
    type=click.IntRange(min=1),
    metavar="N",
    help="Answer 429 to POSTs beyond N accepted in any 1-second window.",
)
@click.option(
    "--retry-after",
    type=click.FloatRange(min=0),
    metavar="S",
    help="Send 'Retry-After: S' with each 429 (default: no header, like Synthflow).",
)
@click.option(
    "--fail-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    metavar="F",
    help="Share of POSTs answering 503 without placing anything.",
)
@click.option(
    "--drop-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    metavar="F",
    help="Share of POSTs that place the call, then close the connection unanswered.",
)
@click.option(
    "--latency-ms",
    type=click.FloatRange(min=0),
    default=0.0,
    metavar="MS",
    help="Delay every answer by MS milliseconds (the call is placed on arrival).",
)
@click.option(
    "--seed",
    type=int,
    metavar="N",
    help="Seed the fail/drop choices and every call's fate (none: fail/drop vary, fates use 0).",
)
@click.option(
    "--call-seconds",
    default="0",
    show_default=True,
    metavar="MIN[:MAX]",
    help="Each accepted call stays live a time drawn uniformly in [MIN, MAX] seconds "
    "(ringing for its first quarter, then in-progress; unanswered ones ring throughout); "
    "0: it ends at once.",
)
@click.option(
    "--outcomes",
    default="completed=1",
    show_default=True,
    metavar="STATUS=SHARE,...",
    help="Final statuses and their shares (adding up to 1), e.g. "
    "completed=0.6,no-answer=0.25,busy=0.05,hangup_on_voicemail=0.1. Any status name "
    "is served as given (to test one the dialer does not know); 'stuck' never ends "
    "(in-progress for ever, live for ever).",
)
@click.option(
    "--max-live-calls",
    type=click.IntRange(min=1),
    metavar="N",
    help="A call POST while N calls are live answers 429 "
    '{"detail": "Concurrency limit exceeded"} and places nothing.',
)
@click.option(
    "--collected",
    multiple=True,
    metavar="NAME=V1|V2|...",
    help="Repeatable: each completed call's collected_variables holds NAME with one of the values.",
)
@click.option(
    "--collected-shape",
    type=click.Choice(COLLECTED_SHAPES),
    default="flat",
    show_default=True,
    help="collected_variables as a flat map, keyed by the agent's id (nested), or either per call (mixed).",
)
@click.option(
    "--start-time-shape",
    type=click.Choice(START_TIME_SHAPES),
    default="ms",
    show_default=True,
    help="start_time as a number of ms, a string of digits, or either per call (mixed).",
)
@click.option(
    "--chat-seconds",
    metavar="MIN[:MAX]",
    help="Each chat shows chat_status 'ongoing' for a time drawn in [MIN, MAX] seconds, "
    "then 'completed' (default: ongoing for ever).",
)
@click.option(
    "--accept-body",
    metavar="TEXT",
    help="Answer accepted POSTs (the call is placed) with TEXT as the 200 body, to test odd answers.",
)
@click.option(
    "--lookup-body",
    metavar="TEXT",
    help="Answer GET /v2/calls (the list) with TEXT as the 200 body, to test odd answers.",
)
def simulate(
    host: str,
    port: int,
    api_key: str | None,
    record: Path | None,
    rate_limit: int | None,
    retry_after: float | None,
    fail_rate: float,
    drop_rate: float,
    latency_ms: float,
    seed: int | None,
    call_seconds: str,
    outcomes: str,
    max_live_calls: int | None,
    collected: tuple[str, ...],
    collected_shape: str,
    start_time_shape: str,
    chat_seconds: str | None,
    accept_body: str | None,
    lookup_body: str | None,
) -> None:
    """Serve a Synthflow-compatible API on loopback, for demos and tests.

    It speaks POST /v2/calls, POST /v2/chat/outbound, GET /v2/calls[/ID] and
    GET /v2/chat[/ID], validates bodies and the Bearer key like the real API,
    and can inject rate limits, failures, dropped answers and latency. It
    places no real call: each call lives for --call-seconds, shows ringing
    then in-progress, and ends by time with one of --outcomes (a
    `call.ended` line in the record). Each call's fate depends only on
    --seed, its phone and how many calls that phone had before, so a test
    can predict it (dialer.sandbox.fate). Stop it with Ctrl-C.

    Example: a sandbox that allows 5 calls a second and loses one answer in ten:

    \b
        dialer simulate --port 8787 --rate-limit 5 --drop-rate 0.1 \\
            --record out/sandbox.jsonl
        dialer run campaign.toml --base-url http://127.0.0.1:8787

    Calls of 30 s to 5 min, a quarter unanswered, 5 live at most:

    \b
        dialer simulate --call-seconds 30:300 --max-live-calls 5 \\
            --outcomes completed=0.75,no-answer=0.25 --collected 'interest=yes|no'
    """
    options = SandboxOptions(
        host=host,
        port=port,
        api_key=api_key or None,
        record=record,
        rate_limit=rate_limit,
        retry_after=retry_after,
        fail_rate=fail_rate,
        drop_rate=drop_rate,
        latency_ms=latency_ms,
        seed=seed,
        call_seconds=_parsed("--call-seconds", parse_seconds, call_seconds),
        outcomes=_parsed("--outcomes", parse_outcomes, outcomes),
        max_live_calls=max_live_calls,
        collected=_parsed("--collected", parse_collected, collected),
        collected_shape=collected_shape,
        start_time_shape=start_time_shape,
        chat_seconds=None if chat_seconds is None else _parsed("--chat-seconds", parse_seconds, chat_seconds),
        accept_body=accept_body,
        lookup_body=lookup_body,
    )
    try:
        serve(options)
    except OSError as exc:  # the port is taken, the record file cannot be opened, ...
        raise click.ClickException(f"the sandbox could not start: {exc}") from exc


def _parsed(flag: str, parse: Callable[[Any], Any], value: Any) -> Any:
    """`parse(value)`, or one line naming the flag and exit 2 (a user's mistake, no traceback)."""
    try:
        return parse(value)
    except ValueError as exc:
        _usage_error(f"{flag}: {exc}")


def _usage_error(message: str) -> NoReturn:
    click.echo(f"dialer simulate: {message}", err=True)
    sys.exit(2)
