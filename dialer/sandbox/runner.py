"""Running a sandbox in the background: in a thread (tests) or a process (benchmarks)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from dialer.sandbox.options import SandboxOptions
from dialer.sandbox.server import LISTENING, run_until_stopped

_STARTUP_TIMEOUT = 30.0  # seconds; a cold `python -m` with aiohttp imports takes ~0.5 s


class RunningSandbox:
    """A sandbox serving in the background; `url` has no trailing slash.

    `record` is the record file, if any; `pid` the server's process id when it runs
    in a process of its own (for benchmarks that watch its CPU). Use it as a context
    manager, or call `stop()` (safe to call twice).
    """

    def __init__(
        self,
        url: str,
        stop: Callable[[], None],
        record: Path | None = None,
        pid: int | None = None,
    ) -> None:
        self.url = url
        self.record = record
        self.pid = pid
        self._stop = stop
        self._stopped = False

    def stop(self) -> None:
        """Stop serving and wait until the server is gone."""
        if not self._stopped:
            self._stopped = True
            self._stop()

    def __enter__(self) -> RunningSandbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"RunningSandbox({self.url!r})"


def start_in_thread(options: SandboxOptions) -> RunningSandbox:
    """Serve on an event loop of its own in a daemon thread; returns once listening.

    Raises what starting raised, e.g. OSError when the port is taken.
    """
    started: concurrent.futures.Future[tuple[str, asyncio.AbstractEventLoop, asyncio.Event]]
    started = concurrent.futures.Future()

    def on_listening(url: str, stop: asyncio.Event) -> None:
        started.set_result((url, asyncio.get_running_loop(), stop))

    def run() -> None:
        try:
            asyncio.run(run_until_stopped(options, on_listening))
        except BaseException as exc:  # report a failed start to the waiting caller
            if not started.done():
                started.set_exception(exc)
            else:
                raise

    thread = threading.Thread(target=run, name="dialer-sandbox", daemon=True)
    thread.start()
    url, loop, stop_event = started.result(timeout=_STARTUP_TIMEOUT)

    def stop() -> None:
        loop.call_soon_threadsafe(stop_event.set)
        thread.join(timeout=10)

    return RunningSandbox(url, stop, options.record)


def command_line(options: SandboxOptions) -> list[str]:
    """The `simulate` flags that reproduce `options`, except the API key (see spawn_process).

    A process has its own clock: `options.clock` does not cross.
    """
    argv = ["--host", options.host, "--port", str(options.port)]
    if options.record is not None:
        argv += ["--record", str(options.record)]
    if options.rate_limit is not None:
        argv += ["--rate-limit", str(options.rate_limit)]
    if options.retry_after is not None:
        argv += ["--retry-after", repr(options.retry_after)]
    if options.fail_rate:
        argv += ["--fail-rate", repr(options.fail_rate)]
    if options.drop_rate:
        argv += ["--drop-rate", repr(options.drop_rate)]
    if options.latency_ms:
        argv += ["--latency-ms", repr(options.latency_ms)]
    if options.seed is not None:
        argv += ["--seed", str(options.seed)]
    argv += _telephony_flags(options)
    return argv


def _telephony_flags(options: SandboxOptions) -> list[str]:
    low, high = options.call_seconds
    argv = ["--call-seconds", f"{low!r}:{high!r}"]
    argv += ["--outcomes", ",".join(f"{status}={share!r}" for status, share in options.outcomes)]
    if options.max_live_calls is not None:
        argv += ["--max-live-calls", str(options.max_live_calls)]
    for name, values in options.collected:
        argv += ["--collected", f"{name}={'|'.join(values)}"]
    argv += ["--collected-shape", options.collected_shape]
    argv += ["--start-time-shape", options.start_time_shape]
    if options.chat_seconds is not None:
        argv += ["--chat-seconds", f"{options.chat_seconds[0]!r}:{options.chat_seconds[1]!r}"]
    return argv


def spawn_process(options: SandboxOptions) -> RunningSandbox:
    """Serve from a `python -m dialer.sandbox` subprocess (its own core); returns once listening.

    `stop()` sends SIGTERM and waits for the process to exit.
    """
    env = dict(os.environ)
    # The key goes through the environment, not argv, so `ps` does not show it; and a
    # SANDBOX_API_KEY inherited from the caller must not apply when none was asked for.
    env.pop("SANDBOX_API_KEY", None)
    if options.api_key:
        env["SANDBOX_API_KEY"] = options.api_key
    process = subprocess.Popen(
        [sys.executable, "-m", "dialer.sandbox", *command_line(options)],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    assert process.stdout is not None  # for mypy: stdout=PIPE was asked for

    def stop() -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()

    # readline() blocks with no timeout of its own: read in a helper thread.
    lines: queue.Queue[str] = queue.Queue()
    reader = process.stdout
    threading.Thread(target=lambda: lines.put(reader.readline()), daemon=True).start()
    try:
        line = lines.get(timeout=_STARTUP_TIMEOUT)
    except queue.Empty:
        line = ""
    if not line.startswith(LISTENING):
        stop()
        raise RuntimeError(
            f"the sandbox process did not start (exit code {process.returncode}, "
            f"first line {line!r}); its stderr says why"
        )
    return RunningSandbox(line[len(LISTENING) :].strip(), stop, options.record, process.pid)
