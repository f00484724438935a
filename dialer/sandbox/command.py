"""`dialer simulate`: the sandbox as a command."""

from __future__ import annotations

from pathlib import Path

import click

from dialer.sandbox.options import SandboxOptions
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
@click.option("--seed", type=int, metavar="N", help="Seed the fail/drop choices.")
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
    accept_body: str | None,
    lookup_body: str | None,
) -> None:
    """Serve a Synthflow-compatible API on loopback, for demos and tests.

    It speaks POST /v2/calls, POST /v2/chat/outbound, GET /v2/calls[/ID] and
    GET /v2/chat[/ID], validates bodies and the Bearer key like the real API,
    and can inject rate limits, failures, dropped answers and latency. It
    places no real call. Stop it with Ctrl-C.

    Example: a sandbox that allows 5 calls a second and loses one answer in ten:

    \b
        dialer simulate --port 8787 --rate-limit 5 --drop-rate 0.1 \\
            --record out/sandbox.jsonl
        dialer run campaign.toml --base-url http://127.0.0.1:8787
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
        accept_body=accept_body,
        lookup_body=lookup_body,
    )
    try:
        serve(options)
    except OSError as exc:  # the port is taken, the record file cannot be opened, ...
        raise click.ClickException(f"the sandbox could not start: {exc}") from exc
