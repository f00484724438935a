"""A look-up after a crash finds this request's call, never an earlier call of the lead.

A redial's request is committed (`unknown`) and the dialer dies before its POST. The look-up
asks for the phone's calls since the intent, with a minute of slack for clock skew: the
lead's previous call, placed seconds before, is in that window. Taken for the redial's call,
it would mark the redial placed though it never left, and the lead would lose a call. A call
the journal holds for one of the lead's earlier requests is not this request's.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from dialer import store as j
from dialer.client import LOOKUP_PAGE, LOOKUP_PAGES, LookupError_, SynthflowClient
from dialer.columns import ColumnMap
from dialer.config import load_campaign
from dialer.model import Lead, Status
from dialer.sandbox import SandboxOptions, fate
from dialer.store import Journal
from tests.conftest import MakeSandbox
from tests.stores import Store
from tests.test_redial import KEY, START, posts_per_phone, report, run_at, write_campaign

PHONE = "+14155550000"  # write_campaign's first lead
OTHER = "+14155550001"
THIRD = "+14155550002"


def _crash_before_the_post(campaign: Path) -> None:
    """What a kill -9 between a redial's committed intent and its POST leaves: the row
    `unknown`, its intent in the journal, no request sent."""
    loaded = load_campaign(campaign)
    journal = Journal(loaded.journal_path, loaded.name)
    try:
        (row,) = journal.rows_with_status({Status.DEFERRED})

        async def commit() -> None:
            writer = journal.writer()
            await writer.commit(j.intent(row.id, "", None))
            await writer.close()

        asyncio.run(commit())
        after = journal.row(row.id)
        assert after.status == Status.UNKNOWN and after.call_id  # the first call's id still there
        assert after.intent_at is not None
    finally:
        journal.close()


def test_a_redial_killed_before_its_post_is_not_taken_for_the_call_before_it(
    tmp_path: Path, sandbox: MakeSandbox
) -> None:
    options: dict[str, Any] = dict(api_key=KEY, seed=3, outcomes="no-answer=1")
    api = sandbox(**options)
    assert api.record is not None
    campaign = write_campaign(tmp_path, 1, url=api.url, redial='no-answer = "90s"\nmax_calls = 2')
    assert fate(3, PHONE, 1, SandboxOptions(**options)).status == "no-answer"

    run_at(campaign, api.url, START)
    assert posts_per_phone(api.record) == {PHONE: 1}
    (first,) = report(tmp_path)
    assert first["dialer_status"] == "deferred", first
    _crash_before_the_post(campaign)  # the first call is seconds old: inside the slack

    # The next cron run settles the row: the first call is the journal's, so the redial
    # was not placed; it is made now, once.
    run_at(campaign, api.url, START + timedelta(minutes=2))
    assert posts_per_phone(api.record) == {PHONE: 2}
    (final,) = report(tmp_path)
    assert final["dialer_status"] == "sent" and final["dialer_calls"] == "2", final
    assert final["dialer_id"] != first["dialer_id"]
    # Nothing more: max_calls = 2 is spent.
    run_at(campaign, api.url, START + timedelta(minutes=10))
    assert posts_per_phone(api.record) == {PHONE: 2}


def test_a_redial_whose_post_did_leave_is_found_beside_the_call_before_it(
    tmp_path: Path, sandbox: MakeSandbox
) -> None:
    """The never-twice side: the redial's call was placed but its answer lost. The look-up
    lists both calls; the new one is this request's, and no third call is made."""
    options: dict[str, Any] = dict(api_key=KEY, seed=3, outcomes="no-answer=1")
    api = sandbox(**options)
    assert api.record is not None
    campaign = write_campaign(tmp_path, 1, url=api.url, redial='no-answer = "90s"\nmax_calls = 3')
    run_at(campaign, api.url, START)
    (first,) = report(tmp_path)
    _crash_before_the_post(campaign)
    # The POST the dead dialer had sent: the sandbox placed it, the dialer never read the answer.
    with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {KEY}"}) as http:
        body = {"model_id": "model-redial", "phone": PHONE, "name": "Lead 0"}
        placed = http.post("/v2/calls", json=body).json()["response"]["call_id"]
    assert placed != first["dialer_id"]

    run_at(campaign, api.url, START + timedelta(minutes=2))
    assert posts_per_phone(api.record) == {PHONE: 2}  # no blind re-send
    (settled,) = report(tmp_path)
    assert settled["dialer_id"] == placed, settled


# -- the look-up itself, over a mock transport -------------------------------------------------


def _listing(calls: list[dict[str, Any]]) -> httpx.Response:
    return httpx.Response(200, json={"status": "ok", "response": {"calls": calls}})


def _find(handler: Callable[[httpx.Request], httpx.Response], known: frozenset[str]) -> str | None:
    async def go() -> str | None:
        client = SynthflowClient("http://api.test", "k", transport=httpx.MockTransport(handler))
        try:
            return await client.find_call("m", PHONE, since=1_700_000_000.0, known=known)
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_a_known_call_is_passed_over_and_an_unknown_one_found() -> None:
    listed = [{"call_id": "old-2", "phone_number_to": PHONE}, {"call_id": "old-1", "phone_number_to": PHONE}]
    assert _find(lambda _: _listing(listed), frozenset({"old-1", "old-2"})) is None
    assert _find(lambda _: _listing(listed), frozenset({"old-2"})) == "old-1"
    assert _find(lambda _: _listing(listed), frozenset()) == "old-2"  # nothing known: the first
    newer = [{"call_id": "new", "phone_number_to": PHONE}, *listed]
    assert _find(lambda _: _listing(newer), frozenset({"old-1", "old-2"})) == "new"


def _paged(
    calls: list[dict[str, Any]], asked: list[dict[str, str]]
) -> Callable[[httpx.Request], httpx.Response]:
    """An API that pages a phone's calls by limit and offset, oldest first (the docs give no order)."""

    def handle(request: httpx.Request) -> httpx.Response:
        params = dict(request.url.params)
        asked.append(params)
        offset, limit = int(params.get("offset", "0")), int(params["limit"])
        return _listing(calls[offset : offset + limit])

    return handle


def test_a_call_past_a_full_page_of_known_calls_is_found_on_the_next_page() -> None:
    older = [{"call_id": f"old-{n}", "phone_number_to": PHONE} for n in range(LOOKUP_PAGE)]
    asked: list[dict[str, str]] = []
    found = _find(
        _paged([*older, {"call_id": "new", "phone_number_to": PHONE}], asked),
        frozenset(c["call_id"] for c in older),
    )
    assert found == "new"
    assert [a.get("offset", "0") for a in asked] == ["0", str(LOOKUP_PAGE)]
    # Nothing new past the known ones: not found, after the short page that ends the list.
    asked.clear()
    assert _find(_paged(older, asked), frozenset(c["call_id"] for c in older)) is None
    assert len(asked) == 2


def test_more_known_calls_than_the_look_up_reads_leave_the_row_unknown() -> None:
    """Past LOOKUP_PAGES full pages the look-up cannot tell: the row stays `unknown` (a later
    run looks again), it is never taken as not placed and dialed blindly."""
    older = [{"call_id": f"old-{n}", "phone_number_to": PHONE} for n in range(LOOKUP_PAGE * LOOKUP_PAGES)]
    asked: list[dict[str, str]] = []
    with pytest.raises(LookupError_, match="cannot tell"):
        _find(_paged(older, asked), frozenset(c["call_id"] for c in older))
    assert len(asked) == LOOKUP_PAGES


def test_the_journal_gives_the_calls_of_the_lead_s_earlier_requests(store: Store) -> None:
    """On both stores: the lead's calls placed before its latest request, not another lead's,
    and never the latest request's own: a row `unknown` whose call the journal holds (as a
    hand-edited or half-migrated journal may) keeps that call findable."""
    journal = store.open()
    columns = ColumnMap(phone="Phone", name=("Name",), timezone=None, email=None, variables=())
    leads = [
        Lead(row=n + 2, values=(name, phone), status=Status.PENDING, phone=phone, name=name)
        for n, (name, phone) in enumerate([("A", PHONE), ("B", OTHER), ("C", THIRD)])
    ]
    journal.import_leads(["Name", "Phone"], columns, leads, {"size": 1, "mtime_ns": 1, "sha256": "a"})
    a, b, c = (row.id for row in journal.rows_with_status({Status.PENDING}))

    async def calls() -> None:
        writer = journal.writer()
        for at, row_id, call_id in (
            (100.0, a, "a-1"),
            (150.0, b, "b-1"),
            (200.0, a, "a-2"),
            (250.0, c, "c-1"),
        ):
            await writer.commit(j.intent(row_id, "", None, at=at))
            await writer.commit(j.outcome(row_id, Status.SENT, call_id=call_id) + j.calls.placed(row_id, 0.0))
        await writer.commit(j.intent(a, "", None, at=300.0))  # a's third request, its answer lost
        await writer.commit(j.outcome(c, Status.UNKNOWN))  # c's call is its latest request's
        await writer.close()

    asyncio.run(calls())
    assert journal.row(a).status == journal.row(c).status == Status.UNKNOWN
    assert journal.earlier_call_ids(a) == {"a-1", "a-2"}
    assert journal.earlier_call_ids(b) == set()  # b-1 is its latest request's call
    assert journal.earlier_call_ids(c) == set()


def test_the_look_up_asks_for_its_own_page_size() -> None:
    """A short page ends the look-up: it must be short by the look-up's `limit`, never by an
    API default the docs may change."""
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=json.dumps({"response": {"calls": []}}).encode())

    assert _find(handle, frozenset()) is None
    assert seen[0].url.params["limit"] == str(LOOKUP_PAGE)
