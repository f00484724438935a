"""The command line: parse, configure logging, call the library, map errors to exit codes.

Exit codes (../shared/interface.md): 0 nothing left · 75 rows remain for a later run,
or another run holds the lock · 1 an error the run could not get past · 2 bad input,
nothing sent · 130/143 stopped by SIGINT/SIGTERM after saving (Ctrl-C at any moment of a
command: one line) · 141 stdout closed by its reader (`| head`), quietly, as SIGPIPE would.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from dialer.errors import DialerError, SetupError

# Everything else is imported where a command needs it: pandas, numpy, httpx, aiohttp,
# rich and structlog take most of a second together, and `--version`, `--help` and
# `status` need few of them.
if TYPE_CHECKING:
    from rich.console import Console
    from structlog.typing import FilteringBoundLogger

    from dialer.config import Campaign
    from dialer.run import CallFigures, CampaignStatus, RunResult

F = TypeVar("F", bound=Callable[..., Any])
STATUSES = ("pending", "deferred", "sent", "failed", "invalid", "duplicate", "suppressed", "unknown")
KEY_VARIABLE = "SYNTHFLOW_API_KEY"


@cache
def _out() -> Console:
    """The console on stdout, made on first use."""
    from rich.console import Console

    class Stdout(Console):
        def on_broken_pipe(self) -> None:  # rich's own exits 1
            _broken_pipe()

    # Plain text: file names, headers and cell values may hold "[...]" or ":name:", which rich
    # would otherwise read as markup or emoji (and "[/]" would crash it); soft wrap keeps one
    # message on one line when stdout is a file or a pipe.
    return Stdout(highlight=False, markup=False, emoji=False, soft_wrap=True)


def _log() -> FilteringBoundLogger:
    import structlog

    logger: FilteringBoundLogger = structlog.get_logger("dialer")
    return logger


# -- logging ---------------------------------------------------------------------


@dataclass
class _Session:
    """How this command speaks: the log format, and the key no line may show."""

    fmt: str = "console"
    secret: str | None = None


_session = _Session()


def _scrub(text: str) -> str:
    secret = _session.secret
    return text.replace(secret, "[redacted]") if secret else text


class _StderrLogger:
    """Writes each rendered line to whatever sys.stderr is now (rich redirects it under a bar)."""

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    debug = info = warning = warn = error = critical = exception = fatal = msg


def _redact(secret: str | None) -> Callable[..., Any]:
    def processor(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
        if secret:
            for key, value in event.items():
                if isinstance(value, str) and secret in value:
                    event[key] = value.replace(secret, "[redacted]")
        return event

    return processor


def configure_logging(fmt: str, secret: str | None = None, verbose: bool = False) -> None:
    """Log lines to stderr: JSON objects (`fmt="json"`) or console lines; `secret` never shown."""
    import structlog

    _session.fmt = fmt
    _session.secret = secret
    structlog.contextvars.clear_contextvars()
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact(secret),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG if verbose else logging.INFO),
        logger_factory=lambda *_: _StderrLogger(),
        cache_logger_on_first_use=False,
    )


# -- errors -> exit codes ------------------------------------------------------------


def _fail(line: str, code: int, **fields: Any) -> NoReturn:
    """The one line a failed command leaves on stderr (a JSON object with --log-format json)."""
    line = _scrub(" ".join(line.split()))
    if _session.fmt == "json":
        context = click.get_current_context(silent=True)
        command = context.info_name if context and context.info_name else "dialer"
        _log().error(f"{command}.failed", error=line, exit_code=code, **fields)
    else:
        click.echo(f"dialer: {line}", err=True)
    sys.exit(code)


def _broken_pipe() -> NoReturn:
    """The reader of stdout went away (`dialer validate c.toml | head`): stop, quietly.

    What is left to print has nowhere to go. stdout is pointed at /dev/null so that the
    interpreter's last flush fails no more, and the exit status is a Unix tool's that
    SIGPIPE ended: 128 + 13.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a file (an in-process test runner)
        pass
    sys.exit(141)


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
        sys.stdout.flush()
    except DialerError as exc:
        _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except BrokenPipeError:
        _broken_pipe()
    except (SystemExit, click.exceptions.Exit, click.ClickException):
        raise
    except Exception as exc:
        fd, name = tempfile.mkstemp(prefix="dialer-crash-", suffix=".log")
        with os.fdopen(fd, "w") as handle:
            handle.write(_scrub(traceback.format_exc()))
        first = next(iter(str(exc).strip().splitlines()), "")[:200]
        _fail(
            f"internal error, a bug in the dialer ({type(exc).__name__}: {first});"
            f" the traceback is in {name}",
            1,
            traceback_file=name,
        )


def _campaign(path: str) -> Campaign:
    from dialer.config import load_campaign

    return load_campaign(Path(path))


def _api_key(campaign: Campaign) -> str | None:
    key = os.environ.get(KEY_VARIABLE, "").strip()
    if key:
        return _checked_key(key, KEY_VARIABLE)
    env_file = campaign.path.parent / ".env"
    if env_file.is_file():
        from dotenv import dotenv_values

        value = (dotenv_values(env_file).get(KEY_VARIABLE) or "").strip()
        if value:
            return _checked_key(value, f"{KEY_VARIABLE} in {env_file}")
    return None


def _checked_key(key: str, source: str) -> str:
    """The key, if an HTTP header can carry it; else one line that shows no part of it.

    httpx refuses such a header with a message that quotes it, and that message would
    become every row's error in the journal and the report.
    """
    if not key.isascii():
        what = "a non-ASCII character"
    elif not key.isprintable():
        what = "a control character"
    else:
        return key
    raise SetupError(
        f"{source} holds {what}, which an HTTP header cannot carry:"
        " check the key (a key file edited on another system, a pasted quote?)"
    )


def _checked_url(url: str) -> str:
    """--base-url, checked like [api].base_url: a typo is a bad command line, not 60 s of retries."""
    from dialer.config import Api

    try:
        return Api(base_url=url).base_url
    except ValueError:  # pydantic's ValidationError
        raise SetupError(
            f"--base-url {url!r}: must be an http(s) URL like https://api.synthflow.ai"
        ) from None


# Below these a rate says more about start-up and rounding than about the account.
RATE_MIN_REQUESTS = 10
RATE_MIN_SECONDS = 1.0


def _unknown_hint(campaign: Campaign, counts: dict[str, int]) -> str | None:
    """What a user can do about `unknown` rows: chats cannot be looked up, so only resending."""
    unknown = counts.get("unknown", 0)
    if not unknown:
        return None
    if campaign.mode == "chat":
        return (
            f"{unknown} unknown rows: no answer said whether the message went out; "
            f"`dialer run {campaign.path} --retry-unknown` sends them again (some may get it twice)"
        )
    return (
        f"{unknown} unknown rows: the next run looks them up; `--retry-unknown` calls them"
        " again without looking (some may ring twice)"
    )


def _when(moment: datetime | None) -> str:
    from dialer.run import iso

    return iso(moment) if moment else "never (no rows waiting for their hours)"


# -- commands --------------------------------------------------------------------------


class _Commands(click.Group):
    """The commands, with `simulate` imported only when it is asked for (it loads aiohttp),
    and Ctrl-C or a closed pipe anywhere ending the command as a Unix tool's would."""

    lazy = {"simulate": ("dialer.sandbox.command", "simulate")}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy:
            import importlib

            module, name = self.lazy[cmd_name]
            command: click.Command = getattr(importlib.import_module(module), name)
            return command
        return super().get_command(ctx, cmd_name)

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None, **extra: Any
    ) -> click.Context:
        # `dialer --help` and `--version` print while the command line is parsed.
        try:
            return super().make_context(info_name, args, parent, **extra)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except BrokenPipeError:
            _broken_pipe()

    def invoke(self, ctx: click.Context) -> Any:
        # click would print "Aborted!" and exit 1 for Ctrl-C, or exit 1 for EPIPE.
        try:
            try:
                return super().invoke(ctx)
            finally:
                sys.stdout.flush()  # a closed pipe shows here, not at the interpreter's exit
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except BrokenPipeError:
            _broken_pipe()


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dialer")
def main() -> None:
    """Dial a spreadsheet of leads with a Synthflow AI agent, politely and exactly once.

    \b
    Quick start:
      dialer validate campaigns/demo.toml       # what would be sent; sends nothing
      dialer run campaigns/demo.toml --sandbox  # dial against the built-in sandbox
      dialer status campaigns/demo.toml         # counts per status, what is due
      dialer report campaigns/demo.toml --out out/demo.xlsx

    The API key comes from SYNTHFLOW_API_KEY (or a .env beside the campaign file).
    """


def _log_option(func: F) -> F:
    return click.option(
        "--log-format",
        type=click.Choice(["console", "json"]),
        default="console",
        show_default=True,
        help="json: one JSON object per line on stderr.",
    )(func)


@main.command()
@click.argument("campaign_file", type=click.Path(dir_okay=False))
@click.option("--base-url", help="API base URL (overrides [api].base_url).")
@click.option(
    "--sandbox", is_flag=True, help="Start the built-in sandbox on a free loopback port and use it."
)
@click.option("--leads", type=click.Path(dir_okay=False), help="Leads file (overrides `leads`).")
@click.option("--report", type=click.Path(dir_okay=False), help="Report file (overrides `report`).")
@click.option("--limit", type=click.IntRange(min=0), help="Dial at most N rows this run.")
@click.option("--retry-failed", is_flag=True, help="Dial `failed` rows again.")
@click.option(
    "--retry-unknown", is_flag=True, help="Send `unknown` rows again, accepting that some may ring twice."
)
@click.option(
    "--no-wait",
    is_flag=True,
    help="Do not wait for live calls to end: a later run, status or report collects them (exit 75).",
)
@click.option(
    "--new-journal",
    is_flag=True,
    help="Start a new journal even though the report shows calls placed (they may be called again).",
)
@_log_option
@click.option("-v", "--verbose", is_flag=True, help="Log every row, sent ones too.")
def run(
    campaign_file: str,
    base_url: str | None,
    sandbox: bool,
    leads: str | None,
    report: str | None,
    limit: int | None,
    retry_failed: bool,
    retry_unknown: bool,
    no_wait: bool,
    new_journal: bool,
    log_format: str,
    verbose: bool,
) -> None:
    """Import the leads (first run) and dial every row that is due.

    A second run continues where the first stopped: rows already settled are
    never sent again. In call mode it follows every call to its end and waits
    for the last one (unless --no-wait). Exit 0 when nothing is left, 75 while
    rows or live calls remain for a later run (cron), 1 on an error such as a
    refused key or stop_when_failed, 2 on bad input.

    \b
    Examples:
      dialer run campaigns/demo.toml --sandbox
      SYNTHFLOW_API_KEY=sk-... dialer run spring.toml --limit 500
      dialer run spring.toml --retry-failed --log-format json
    """
    configure_logging(log_format, verbose=verbose)
    with _errors():
        import structlog

        from dialer.progress import Bar, LogProgress
        from dialer.run import RunOptions, run_campaign

        campaign = _campaign(campaign_file)
        structlog.contextvars.bind_contextvars(campaign=campaign.name)
        if base_url is not None:
            base_url = _checked_url(base_url)
        running = None
        key = _api_key(campaign)
        if sandbox:
            from dialer.sandbox import SandboxOptions, spawn_process

            key = secrets.token_hex(16)
            running = spawn_process(SandboxOptions(api_key=key))
            base_url = running.url
        if not key:
            raise SetupError(
                f"{KEY_VARIABLE} is not set: export {KEY_VARIABLE}=<your key>, or put"
                f" {KEY_VARIABLE}=<your key> in {campaign.path.parent / '.env'}"
                " (or use --sandbox to try it out)"
            )
        configure_logging(log_format, secret=key, verbose=verbose)
        structlog.contextvars.bind_contextvars(campaign=campaign.name)
        out = _out()
        bar = Bar(out) if log_format == "console" and out.is_terminal else LogProgress()
        options = RunOptions(
            api_key=key,
            base_url=base_url,
            leads=Path(leads) if leads else None,
            report=Path(report) if report else None,
            limit=limit,
            retry_failed=retry_failed,
            retry_unknown=retry_unknown,
            new_journal=new_journal,
            progress=bar,
            handle_signals=True,
            no_wait=no_wait,
        )
        began = time.monotonic()
        try:
            result = run_campaign(campaign, options)
        finally:
            if isinstance(bar, Bar):
                bar.stop()
            if running is not None:
                running.stop()
        took = time.monotonic() - began
        if not isinstance(bar, Bar):
            _log().info(
                "run.finished",
                exit_code=result.exit_code,
                seconds=round(took, 2),
                requests=result.stats.requests,
                rate=round(result.stats.rate, 2),
                this_run=dict(result.stats.outcomes),
                statuses=result.counts,
            )
        _summary(campaign, result, took)
        sys.exit(result.exit_code)


ORDINALS = {1: "first call", 2: "second", 3: "third"}


def _by_attempt(figures: CallFigures) -> str:
    """ "first call 40% of 100, second 25% of 60, third 20% of 45" """
    shown = []
    for attempt, (_completed, ended) in sorted(figures.by_attempt.items()):
        rate = figures.pick_up_rate_of(attempt)
        name = ORDINALS.get(attempt, f"call {attempt}")
        shown.append(f"{name} {'-' if rate is None else f'{rate:.0%}'} of {ended}")
    return ", ".join(shown)


def _call_lines(
    out: Console,
    figures: CallFigures | None,
    polls: int | None = None,
    most_live: int = 0,
    limit: int | None = None,
) -> None:
    """How the calls ended: per final status, the pick-up rate, those still live."""
    if figures is None:
        return  # chats: no calls to follow
    ended = ", ".join(f"{status} {n}" for status, n in figures.by_status.most_common())
    out.print(f"calls ended: {ended or 'none yet'}")
    rate = figures.pick_up_rate
    line = f"pick-up rate: {'-' if rate is None else f'{rate:.0%}'}; live calls: {figures.live}"
    if figures.timed_out:
        line += f"; never ended (given up): {figures.timed_out}"
    out.print(line)
    if len(figures.by_attempt) > 1:  # [redial]: how each call of a lead fared
        out.print(f"pick-up rate by attempt: {_by_attempt(figures)}")
    if figures.redials_waiting and figures.next_redial is not None:
        soonest = datetime.fromtimestamp(figures.next_redial, UTC)
        out.print(f"redials waiting: {figures.redials_waiting}, the next due {_when(soonest)}")
    if polls is not None:
        ceiling = f" (max_live_calls {limit})" if limit else ""
        out.print(f"most calls live at once: {most_live}{ceiling}; {polls} GET requests to follow them")


def _summary(campaign: Campaign, result: RunResult, took: float) -> None:
    """The human summary on stdout: rows per status, requests per caller id, time and rate."""
    from rich.table import Table

    out = _out()
    stats = result.stats
    table = Table(title=f"campaign {campaign.name}", show_edge=False)
    table.add_column("status")
    table.add_column("rows", justify="right")
    table.add_column("this run", justify="right")
    for status in STATUSES:
        if result.counts.get(status) or stats.outcomes.get(status):
            table.add_row(status, str(result.counts.get(status, 0)), str(stats.outcomes.get(status, 0)))
    out.print(table, soft_wrap=False)
    if stats.by_number:
        numbers = Table(show_edge=False)
        numbers.add_column("caller id")
        numbers.add_column("requests this run", justify="right")
        for number, n in stats.by_number.most_common():
            numbers.add_row(number, str(n))
        out.print(numbers, soft_wrap=False)
    limit = f"limit {campaign.limits.rate_per_second:g}/s"
    if stats.requests >= RATE_MIN_REQUESTS and stats.elapsed >= RATE_MIN_SECONDS:
        rate = f"achieved {stats.rate:.1f}/s ({limit})"
    else:
        rate = f"too few to measure a rate ({limit})"
    out.print(
        f"time taken {took:.1f}s (dialing {stats.elapsed:.1f}s); {stats.requests} requests,"
        f" {rate}; {stats.throttled} answered 429; {stats.lookups} look-ups"
    )
    _call_lines(out, result.calls, stats.polls, stats.most_live, campaign.limits.max_live_calls)
    if result.imported and not result.imported.first_import:
        imp = result.imported
        out.print(
            f"leads file changed: {imp.added} new rows added, {imp.matched} matched to earlier"
            f" rows, {imp.removed} rows no longer in the file (kept in the journal)"
        )
    if result.counts.get("deferred") or result.counts.get("pending"):
        # Pending rows with no hours to wait for (left by --limit or a stop) are due now.
        due_now = result.counts.get("pending") and result.next_due is None
        out.print(f"next rows due: {'now' if due_now else _when(result.next_due)}")
    hint = _unknown_hint(campaign, result.counts)
    if hint:
        out.print(hint)
    if stats.stopped_by:
        out.print(f"stopped by {stats.stopped_by}; state saved, run again to continue")
    out.print(f"report: {result.report}")


@main.command()
@click.argument("campaign_file", type=click.Path(dir_okay=False))
@click.option("--leads", type=click.Path(dir_okay=False), help="Leads file (overrides `leads`).")
@_log_option
def validate(campaign_file: str, leads: str | None, log_format: str) -> None:
    """Read and map every row; print counts, the column mapping, example bodies. Sends nothing.

    Prints which column feeds which field, the rows per outcome (pending, invalid,
    duplicate, suppressed) with the reasons and the first rows not dialed, how many
    are due now and when the rest become due, and three request bodies exactly as
    `run` would send them. No request is made and no journal is written.

    \b
    Examples:
      dialer validate campaigns/demo.toml
      dialer validate spring.toml --leads leads-v2.xlsx
    """
    configure_logging(log_format)
    with _errors():
        from dialer.run import validate_campaign

        out = _out()
        campaign = _campaign(campaign_file)
        found = validate_campaign(campaign, leads=Path(leads) if leads else None)
        out.print(f"leads: {found.path}")
        out.print("columns:")
        for fieldname, column in found.columns.describe():
            out.print(f"  {fieldname:<10} {column}")
        out.print("rows:")
        for status in STATUSES:
            if found.counts.get(status):
                out.print(f"  {status:<10} {found.counts[status]}")
        if found.reasons:
            out.print("not dialed, by reason:")
            for reason, n in found.reasons.most_common():
                out.print(f"  {n:>7}  {reason}")
            out.print("first rows not dialed:")
            for row, status, error in found.problems:
                out.print(f"  row {row}: {status}: {error}")
        for country, n in found.foreign.most_common():
            rows = f"{n} row" + ("s" if n != 1 else "")
            out.print(
                f'caller ids: no number of [numbers] pool is in {country}: strategy "local" will call '
                f"its {rows} from another country's number"
            )
        for law, n in sorted(found.laws.items(), key=lambda item: item[0].states):
            out.print(law.validate_line(n))
        out.print(
            f"due now: {found.due_now}; next due: "
            f"{_when(found.next_due) if found.next_due else 'all due now'}"
        )
        endpoint = "POST /v2/calls" if campaign.mode == "call" else "POST /v2/chat/outbound"
        out.print(f"example request bodies ({endpoint}):")
        for body in found.examples:
            click.echo(json.dumps(body, indent=2, ensure_ascii=False))


def _status_notes(out: Console, campaign: Campaign, found: CampaignStatus) -> None:
    """status's last lines: unknown rows, capped and rested caller ids, live calls not polled."""
    hint = _unknown_hint(campaign, found.counts)
    if hint:
        out.print(hint)
    if found.caps_reset:
        out.print(f"caller ids at their daily cap dial again from: {_when(found.caps_reset)}")
    for number, why in sorted(found.rested.items()):
        out.print(f"caller id {number} rested: {why}")
    if found.note:
        out.print(found.note)


@main.command()
@click.argument("campaign_file", type=click.Path(dir_okay=False))
@click.option("--base-url", help="API base URL (overrides [api].base_url).")
@_log_option
def status(campaign_file: str, base_url: str | None, log_format: str) -> None:
    """Counts per dialer_status and per call status, the pick-up rate, the live calls, what
    is due now and when the rest is due.

    With an API key, the calls still live in the journal are polled first (one batched
    GET; never a POST), so calls that ended since show their outcome. The leads file is
    not read.

    \b
    Example:
      dialer status campaigns/demo.toml
    """
    configure_logging(log_format)
    with _errors():
        from dialer.run import Collect, campaign_status, journal_label

        out = _out()
        campaign = _campaign(campaign_file)
        collect = Collect(_api_key(campaign), _checked_url(base_url) if base_url else None)
        found = campaign_status(campaign, collect=collect)
        if found is None:
            out.print(f"{campaign.name}: not started (no journal at {journal_label(campaign)})")
            return
        out.print(f"campaign {campaign.name} ({journal_label(campaign)})")
        if not found.counts and not found.removed:
            out.print("no rows yet: the first `dialer run` imports the leads file")
            return
        for status_name in STATUSES:
            if found.counts.get(status_name):
                out.print(f"  {status_name:<10} {found.counts[status_name]}")
        out.print(f"  total      {sum(found.counts.values())}")
        if found.removed:
            out.print(f"  ({found.removed} rows in the journal are no longer in the leads file)")
        if campaign.mode == "call" and found.calls is not None and found.calls.placed:
            _call_lines(out, found.calls)
        out.print(f"due now: {found.due_now}")
        out.print(f"next due: {'now' if found.due_now else _when(found.next_due)}")
        _status_notes(out, campaign, found)


@main.command()
@click.argument("campaign_file", type=click.Path(dir_okay=False))
@click.option(
    "--out",
    "out_path",
    type=click.Path(dir_okay=False),
    help="Where to write (default: the campaign's report). .xlsx writes Excel; .html the campaign page.",
)
@click.option("--base-url", help="API base URL (overrides [api].base_url).")
@_log_option
def report(campaign_file: str, out_path: str | None, base_url: str | None, log_format: str) -> None:
    """Write the per-row report again from the journal (CSV, or XLSX for a .xlsx name),
    or the campaign page for a .html name: figures and charts in one self-contained file.

    With an API key, the calls still live are polled first (never a POST), so the report
    has the outcomes of calls that ended since the run.

    \b
    Examples:
      dialer report campaigns/demo.toml
      dialer report campaigns/demo.toml --out out/demo.xlsx
      dialer report campaigns/demo.toml --out out/demo.report.html
    """
    configure_logging(log_format)
    with _errors():
        from dialer.run import Collect, report_campaign

        campaign = _campaign(campaign_file)
        target = Path(out_path) if out_path else campaign.report_path
        collect = Collect(_api_key(campaign), _checked_url(base_url) if base_url else None)
        rows = report_campaign(campaign, target, collect)
        _out().print(f"report: {target} ({rows} rows)")


@main.command()
@click.argument("campaign_file", type=click.Path(dir_okay=False))
@click.option("--to", "url", required=True, help="The PostgreSQL database: postgresql://user@host/db")
@_log_option
def migrate(campaign_file: str, url: str, log_format: str) -> None:
    """Copy the campaign's SQLite journal into PostgreSQL, every row with its history.

    Then set `journal = "<the URL>"` in the campaign file: the next run continues
    there (rows sent are never sent again). The password may come from the URL,
    PGPASSWORD or ~/.pgpass; it is never printed.

    \b
    Example:
      dialer migrate spring.toml --to postgresql://dialer@db.internal/dialer
    """
    configure_logging(log_format)
    with _errors():
        from dialer.run import migrate_campaign, redact_url

        campaign = _campaign(campaign_file)
        moved = migrate_campaign(campaign, url)
        counts = ", ".join(f"{n} {status}" for status, n in sorted(moved.counts.items()))
        _out().print(f"{campaign.name}: {moved.rows} rows copied to {moved.target} ({counts})")
        _out().print(
            f'next: set journal = "{redact_url(url)}" in {campaign_file} (the password as you keep it)'
        )


__all__ = ["main"]
