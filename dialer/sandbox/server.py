"""The HTTP side of the sandbox: aiohttp handlers, fault switches, `serve()`.

Every request ends in `Sandbox._reply`, which records it, waits out the
latency, then answers or drops the connection. Everything a POST decides (auth,
rate limit, fail, validation, placing, drop) happens on arrival with no `await`
in between, so concurrent requests cannot slip past the rate limit together and
a client that gives up during the latency has still placed its call.

Calls end by time: a timer wakes at the next call's end and ends every call due
(writing its `call.ended` line), and every request first ends the calls due by
its arrival, so what it sees, and the live-call count a POST is held to, agree
with the record's times. All times come from `options.clock`.
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import signal
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from dialer.sandbox.options import SandboxOptions
from dialer.sandbox.record import Recorder
from dialer.sandbox.store import Call, Store
from dialer.sandbox.validation import CALL_FIELDS, CHAT_FIELDS, Check, problem_with

LISTENING = "dialer sandbox listening on "

_JSON_HEADERS = {"Content-Type": "application/json"}
# Unparseable bodies are recorded as null; this marks them apart from a JSON `null` body.
_NOT_JSON = object()


def _encode(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _detail(message: str) -> bytes:
    return _encode({"detail": message})


# Answers that never change, encoded once.
_NO_TOKEN = _detail("Missing or malformed Authorization header: expected 'Bearer <token>'")
_BAD_TOKEN = _detail("Invalid API key")
_UNAVAILABLE = _detail("Service temporarily unavailable, please retry")
_BODY_NOT_JSON = _detail("body: not valid JSON")
_NOT_FOUND = _detail("Not Found")
_CONCURRENCY = _detail("Concurrency limit exceeded")
# The longest the end-of-call timer sleeps: a clock that jumps (a test's fake one) is
# noticed within this long even when no request comes.
_MAX_SLEEP = 1.0


def _parse(raw: bytes) -> Any:
    """The parsed JSON of a body, or `_NOT_JSON`."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # ValueError covers bad JSON and bad UTF-8
        return _NOT_JSON


class _BadQuery(Exception):
    """A query parameter is missing or malformed; the message is the 400's detail."""


def _optional_int(query: Mapping[str, str], name: str, minimum: int) -> int | None:
    text = query.get(name)
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        raise _BadQuery(f"{name}: expected an integer, got {text!r}") from None
    if value < minimum:
        raise _BadQuery(f"{name}: must be at least {minimum}, got {value}")
    return value


def _int(query: Mapping[str, str], name: str, minimum: int, default: int) -> int:
    value = _optional_int(query, name, minimum)
    return default if value is None else value


_Handler = Callable[["Sandbox", web.Request, float], Awaitable[web.StreamResponse]]


def _key_checked(
    handler: _Handler,
) -> Callable[[Sandbox, web.Request], Awaitable[web.StreamResponse]]:
    """A GET endpoint: note when the request arrived, answer 401 before anything else."""

    @functools.wraps(handler)
    async def checked(self: Sandbox, request: web.Request) -> web.StreamResponse:
        now = self._arrive()
        denied = self._denied(request)
        if denied is not None:
            return await self._reply(request, now, None, 401, denied)
        return await handler(self, request, now)

    return checked


class Sandbox:
    """The state of one sandbox server and its request handlers."""

    def __init__(self, options: SandboxOptions) -> None:
        self._recorder = Recorder(options.record) if options.record is not None else None
        self._clock = options.clock
        self.store = Store(options, clock=options.clock, on_ended=self._ended)
        self._max_live = options.max_live_calls
        self._wake: asyncio.TimerHandle | None = None
        self._wake_at = 0.0
        self._api_key = options.api_key or None
        self._delay = options.latency_ms / 1000
        self._rng = random.Random(options.seed)
        self._fail_rate = options.fail_rate
        self._drop_rate = options.drop_rate
        self._rate_limit = options.rate_limit
        self._accept_body = options.accept_body
        self._lookup_body = options.lookup_body
        # Arrival times of the accepted POSTs of the last second, oldest first.
        self._accepted: deque[float] = deque()
        per_minute = 60 * (options.rate_limit or 0)
        self._limited = _detail(f"Rate limit exceeded. Your rate limit per minute is {per_minute}")
        self._limited_headers = dict(_JSON_HEADERS)
        if options.retry_after is not None:
            self._limited_headers["Retry-After"] = f"{options.retry_after:g}"

    def routes(self) -> list[web.RouteDef]:
        """The endpoints, then a catch-all so unknown paths are answered in JSON and recorded."""
        return [
            web.post("/v2/calls", self.post_call),
            web.get("/v2/calls", self.list_calls),
            web.get("/v2/calls/{call_id}", self.get_call),
            web.post("/v2/chat/outbound", self.post_chat),
            web.get("/v2/chat", self.list_chats),
            web.get("/v2/chat/{chat_id}", self.get_chat),
            web.route("*", "/{tail:.*}", self.not_found),
        ]

    def close(self) -> None:
        """Stop ending calls and close the record file."""
        if self._wake is not None:
            self._wake.cancel()
            self._wake = None
        if self._recorder is not None:
            self._recorder.close()

    # -- POST ------------------------------------------------------------------------------

    async def post_call(self, request: web.Request) -> web.StreamResponse:
        """POST /v2/calls: place a voice call."""
        return await self._post(request, CALL_FIELDS, self._place_call, live_limited=True)

    async def post_chat(self, request: web.Request) -> web.StreamResponse:
        """POST /v2/chat/outbound: open a WhatsApp or SMS conversation."""
        return await self._post(request, CHAT_FIELDS, self._place_chat)

    def _place_call(self, body: dict[str, Any], now: float) -> bytes:
        call = self.store.add_call(body, now)
        ends_at = call.ends_at
        if ends_at is not None:
            self._wake_by(ends_at)
        return b'{"status":"success","response":{"answer":"ok","call_id":"%s"}}' % call.call_id.encode()

    def _place_chat(self, body: dict[str, Any], now: float) -> bytes:
        chat_id = self.store.add_chat(body, now).chat_id
        return b'{"status":"ok","response":{"conversation_id":"%s"}}' % chat_id.encode()

    async def _post(
        self,
        request: web.Request,
        fields: Mapping[str, tuple[bool, Check]],
        place: Callable[[dict[str, Any], float], bytes],
        *,
        live_limited: bool = False,
    ) -> web.StreamResponse:
        # Read the body first: it is the only await before the decision (see module doc).
        raw = await request.read()
        now = self._arrive()
        denied = self._denied(request)
        if denied is not None:
            return await self._reply(request, now, self._for_record(raw), 401, denied)
        if self._rate_limit is not None and self._over_rate_limit(now):
            return await self._reply(
                request, now, self._for_record(raw), 429, self._limited, self._limited_headers
            )
        if self._fail_rate and self._rng.random() < self._fail_rate:
            return await self._reply(request, now, self._for_record(raw), 503, _UNAVAILABLE)
        body = _parse(raw)
        if body is _NOT_JSON:
            return await self._reply(request, now, None, 400, _BODY_NOT_JSON)
        problem = problem_with(body, fields)
        if problem is not None:
            return await self._reply(request, now, body, 400, _detail(problem))
        if live_limited and self._max_live is not None and self.store.live_calls >= self._max_live:
            return await self._reply(request, now, body, 429, _CONCURRENCY)
        payload = place(body, now)
        if self._rate_limit is not None:
            self._accepted.append(now)  # a dropped one counts too: it was placed
        dropped = bool(self._drop_rate) and self._rng.random() < self._drop_rate
        if self._accept_body is not None:
            odd = self._accept_body
            return await self._reply(
                request, now, body, 200, odd.encode(), dropped=dropped, recorded=_encode(odd)
            )
        return await self._reply(request, now, body, 200, payload, dropped=dropped)

    def _over_rate_limit(self, now: float) -> bool:
        # Sliding window over arrival times, so the record's `time`s prove the bound:
        # at most N accepted POSTs with times in any (t - 1, t].
        window = self._accepted
        while window and window[0] <= now - 1.0:
            window.popleft()
        return len(window) >= (self._rate_limit or 0)

    def _for_record(self, raw: bytes) -> Any:
        # Rejected POSTs are not parsed unless there is a record to put them in.
        if self._recorder is None:
            return None
        body = _parse(raw)
        return None if body is _NOT_JSON else body

    # -- GET -------------------------------------------------------------------------------

    @_key_checked
    async def get_call(self, request: web.Request, now: float) -> web.StreamResponse:
        """GET /v2/calls/{call_id}: one call, in the list shape the API uses."""
        call = self.store.get_call(request.match_info["call_id"], now)
        if call is None:
            return await self._reply(request, now, None, 404, _detail("Call not found"))
        payload = _encode(
            {
                "status": "ok",
                "response": {
                    "pagination": {"total_records": 1, "limit": 1, "offset": 0},
                    "calls": [call.to_json(now)],
                },
            }
        )
        return await self._reply(request, now, None, 200, payload)

    @_key_checked
    async def list_calls(self, request: web.Request, now: float) -> web.StreamResponse:
        """GET /v2/calls: an agent's calls, newest first, filtered by phone and dates."""
        query = request.query
        try:
            model_id = query.get("model_id")
            if not model_id:
                raise _BadQuery("model_id: query parameter required")
            limit = _int(query, "limit", 1, default=20)
            offset = _int(query, "offset", 0, default=0)
            total, calls = self.store.list_calls(
                model_id,
                # aiohttp has already turned %2B back into "+"; a bare "+" became a space.
                phone=query.get("lead_phone_number"),
                from_ms=_optional_int(query, "from_date", 0),
                to_ms=_optional_int(query, "to_date", 0),
                call_status=query.get("call_status"),
                limit=limit,
                offset=offset,
                now=now,
            )
        except _BadQuery as exc:
            return await self._reply(request, now, None, 400, _detail(str(exc)))
        if self._lookup_body is not None:
            odd = self._lookup_body
            return await self._reply(request, now, None, 200, odd.encode(), recorded=_encode(odd))
        payload = _encode(
            {
                "status": "ok",
                "response": {
                    "pagination": {"total_records": total, "limit": limit, "offset": offset},
                    "calls": [call.to_json(now, status_key="call_status") for call in calls],
                },
            }
        )
        return await self._reply(request, now, None, 200, payload)

    @_key_checked
    async def list_chats(self, request: web.Request, now: float) -> web.StreamResponse:
        """GET /v2/chat: chats newest first, a page at a time; the cursor is opaque."""
        query = request.query
        try:
            limit = _int(query, "limit", 1, default=20)
            cursor = _optional_int(query, "cursor", 0)
        except _BadQuery as exc:
            return await self._reply(request, now, None, 400, _detail(str(exc)))
        chats, has_more = self.store.list_chats(query.get("agent_id"), limit, cursor)
        payload = _encode(
            {
                "status": "ok",
                "response": {
                    "chats": [chat.to_json(now) for chat in chats],
                    "has_more": has_more,
                    "next_cursor": str(chats[-1].seq) if has_more else None,
                },
            }
        )
        return await self._reply(request, now, None, 200, payload)

    @_key_checked
    async def get_chat(self, request: web.Request, now: float) -> web.StreamResponse:
        """GET /v2/chat/{chat_id}: one chat."""
        chat = self.store.chats.get(request.match_info["chat_id"])
        if chat is None:
            return await self._reply(request, now, None, 404, _detail("Chat not found"))
        payload = _encode({"status": "ok", "response": chat.to_json(now)})
        return await self._reply(request, now, None, 200, payload)

    async def not_found(self, request: web.Request) -> web.StreamResponse:
        """Any other method or path: 404, in JSON like the rest."""
        return await self._reply(request, self._arrive(), None, 404, _NOT_FOUND)

    # -- calls ending ----------------------------------------------------------------------

    def _arrive(self) -> float:
        """The time a request arrived, once every call due by then has ended."""
        now = self._clock()
        self.store.advance(now)
        return now

    def _ended(self, call: Call, end: float) -> None:
        # Called by the store for each call it ends, in end-time order.
        if self._recorder is not None:
            self._recorder.write_event(
                time=end,
                event="call.ended",
                call_id=call.call_id,
                phone=call.phone_to,
                status=call.fate.status,
                duration=call.fate.seconds,
            )

    def _wake_by(self, end: float) -> None:
        """Make sure the timer wakes by `end` (epoch seconds by the clock)."""
        if self._wake is not None and self._wake_at <= end:
            return
        if self._wake is not None:
            self._wake.cancel()
        delay = min(max(end - self._clock(), 0.0), _MAX_SLEEP)
        self._wake_at = self._clock() + delay
        self._wake = asyncio.get_running_loop().call_later(delay, self._tick)

    def _tick(self) -> None:
        self._wake = None
        self.store.advance(self._clock())
        next_end = self.store.next_end()
        if next_end is not None:
            self._wake_by(next_end)

    # -- shared ----------------------------------------------------------------------------

    def _denied(self, request: web.Request) -> bytes | None:
        """The 401 body when the Bearer token is missing or wrong, else None."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return _NO_TOKEN
        if self._api_key is not None and token != self._api_key:
            return _BAD_TOKEN
        return None

    async def _reply(
        self,
        request: web.Request,
        now: float,
        body: Any,
        status: int,
        payload: bytes,
        headers: Mapping[str, str] = _JSON_HEADERS,
        *,
        dropped: bool = False,
        recorded: bytes | None = None,
    ) -> web.StreamResponse:
        """Record the request, wait out the latency, then answer (or drop the connection).

        `recorded`: what the record holds as the answer when `payload` may not be JSON.
        """
        if self._recorder is not None:
            self._recorder.write(
                time=now,
                method=request.method,
                path=request.path,
                query=dict(request.query),
                body=body,
                status=status,
                response=payload if recorded is None else recorded,
                dropped=dropped,
            )
        if self._delay:
            await asyncio.sleep(self._delay)
        if dropped:
            return _drop_connection(request)
        return web.Response(status=status, body=payload, headers=headers)


def _drop_connection(request: web.Request) -> web.StreamResponse:
    """Close the connection so the client gets no status line at all."""
    # aiohttp has no "answer nothing" API. Closing the transport (a FIN, not a reset)
    # makes aiohttp's attempt to write the response below fail with a connection
    # error, which it takes for a client that went away: it writes nothing and logs
    # nothing. The client sees "server disconnected without sending a response".
    request.protocol.force_close()
    if request.transport is not None:
        request.transport.close()
    return web.Response(status=200)


def build_app(options: SandboxOptions) -> web.Application:
    """The aiohttp application of one sandbox (its record file is closed on cleanup)."""
    sandbox = Sandbox(options)
    app = web.Application()
    app.add_routes(sandbox.routes())

    async def close(_: web.Application) -> None:
        sandbox.close()

    app.on_cleanup.append(close)
    return app


async def start_site(options: SandboxOptions) -> tuple[web.AppRunner, str]:
    """Start listening; returns the runner (to clean up) and the base URL with the real port."""
    # No access log: per-request logging would cost more than the request itself.
    # A short shutdown grace: requests still sleeping out a latency are cut off.
    runner = web.AppRunner(build_app(options), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, options.host, options.port, backlog=1024)
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    port = runner.addresses[0][1]
    host = f"[{options.host}]" if ":" in options.host else options.host
    return runner, f"http://{host}:{port}"


async def run_until_stopped(
    options: SandboxOptions, on_listening: Callable[[str, asyncio.Event], None]
) -> None:
    """Serve until the event handed to `on_listening(url, stop)` is set, then clean up."""
    runner, url = await start_site(options)
    try:
        stop = asyncio.Event()
        on_listening(url, stop)
        await stop.wait()
    finally:
        await runner.cleanup()


def serve(options: SandboxOptions) -> None:
    """Serve in the foreground until SIGINT or SIGTERM (call from the main thread).

    Prints one line, `dialer sandbox listening on http://HOST:PORT`, once bound
    (port 0 picks a free port; the line shows the real one).
    """

    def on_listening(url: str, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        print(f"{LISTENING}{url}", flush=True)

    asyncio.run(run_until_stopped(options, on_listening))
