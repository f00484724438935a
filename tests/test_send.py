"""send.py: the send slot and the connection lane are `async with` blocks that always release."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from dialer.bookkeeping import Progress, Run, utc_now
from dialer.client import SynthflowClient
from dialer.columns import ColumnMap
from dialer.config import Campaign, load_campaign
from dialer.model import Lead, Status
from dialer.numbers import NumberPool
from dialer.pacing import Pacer
from dialer.send import Sender
from dialer.store import Journal, JournalWriter
from tests.test_pacing import run as on_virtual_time

ALL_DAY = '[hours]\nstart = "00:00"\nend = "24:00"\ndays = ["mon","tue","wed","thu","fri","sat","sun"]\n'


class Boom(Exception):
    """Not an httpx error: the client lets it through, as it would an internal bug."""


def _setup(tmp_path: Path, rows: int) -> tuple[Journal, Campaign]:
    path = tmp_path / "c.toml"
    path.write_text(
        'name = "t"\nleads = "leads.csv"\nmode = "call"\n[call]\nmodel_id = "m"\n'
        "[limits]\nrate_per_second = 1\nconcurrency = 1\nmax_attempts = 1\n" + ALL_DAY
    )
    campaign = load_campaign(path)
    journal = Journal(campaign.journal_path, "t")
    leads = [
        Lead(
            row=i + 2,
            values=(f"L{i}", f"+1212555{i:04d}"),
            status=Status.PENDING,
            error="",
            phone=f"+1212555{i:04d}",
            name=f"L{i}",
            timezones=("America/New_York",),
        )
        for i in range(rows)
    ]
    columns = ColumnMap(phone="Phone", name=("Name",), timezone=None, email=None, variables=())
    journal.import_leads(["Name", "Phone"], columns, leads, {"size": 1, "mtime_ns": 1, "sha256": "a"})
    return journal, campaign


def test_a_request_that_raises_gives_back_its_slot_and_its_lane(tmp_path: Path) -> None:
    journal, campaign = _setup(tmp_path, 2)
    posts: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        posts.append(request.url.path)
        if len(posts) == 1:
            raise Boom("the first request blows up")
        return httpx.Response(200, json={"status": "ok", "response": {"call_id": "c-2"}})

    async def go(clock: Callable[[], float]) -> None:
        # Commits stay in the loop: a commit handed to a thread leaves the virtual loop idle,
        # and idle virtual time jumps ahead (a loaded machine made the wait below time out).
        run = Run(journal, JournalWriter(journal.path, slow_commit=float("inf")), Progress())
        client = SynthflowClient(
            "http://sandbox.test", "k", connections=1, transport=httpx.MockTransport(answer)
        )
        # One lane, and a window of one request per second (on the virtual clock of
        # test_pacing, so no second passes): a slot or a lane not given back would leave
        # the second row waiting for ever.
        pacer = Pacer(1.0, clock=clock)
        sender = Sender(run, campaign, client, pacer, NumberPool(campaign.numbers, {}), utc_now, {})
        first, second = list(journal.rows_with_status({Status.PENDING}))
        with pytest.raises(Boom):
            await sender.dial(first)
        assert (await asyncio.wait_for(sender.dial(second), timeout=5)) is not None
        await run.writer.close()
        await client.aclose()

    on_virtual_time(go)
    assert len(posts) == 2
    assert journal.row(2).status == Status.SENT
