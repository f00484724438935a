"""A Synthflow-compatible HTTP server on loopback, for the demo, the tests and the benchmarks.

Where things are:

    options.py     SandboxOptions: how it listens, which faults it injects
    server.py      the aiohttp handlers, fault switches and `serve()`
    validation.py  request-body checks (the 400s)
    fate.py        what each call will do: `fate(seed, phone, ordinal, options)`
    store.py       placed calls and chats, indexed for the GET endpoints; calls end by time
    record.py      the `--record` file: writing it, and `read_record()`
    runner.py      running it in a background thread or a subprocess
    command.py     the `dialer simulate` click command

    with start_in_thread(SandboxOptions(api_key="k")) as sandbox:
        httpx.post(f"{sandbox.url}/v2/calls", headers={"Authorization": "Bearer k"}, json=...)
"""

from dialer.sandbox.fate import Fate, fate
from dialer.sandbox.options import SandboxOptions
from dialer.sandbox.record import read_events, read_record
from dialer.sandbox.runner import RunningSandbox, spawn_process, start_in_thread
from dialer.sandbox.server import serve

__all__ = [
    "Fate",
    "RunningSandbox",
    "SandboxOptions",
    "fate",
    "read_events",
    "read_record",
    "serve",
    "spawn_process",
    "start_in_thread",
]
