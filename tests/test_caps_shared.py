"""`[numbers] daily_cap` shared by every run of a campaign and every campaign of an account.

The witness is the sandbox's record: the POSTs that carry the caller id. The stores
are real: a throwaway PostgreSQL (tests/pg.py) and the account's SQLite file.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from dialer.config import Numbers, load_campaign
from dialer.errors import JournalError
from dialer.numbers import NumberPool, PoolExhausted
from dialer.run import CampaignStatus, RunOptions, campaign_status, run_campaign
from dialer.store.callerdays import FileDays, PgDays, shared_days
from tests.conftest import posts, write_leads
from tests.test_campaign import ALL_DAY, KEY, numbered_leads
from tests.test_postgres import _finish, _start

CALLER = "+12125550100"  # New York: the leads are 212 numbers, so "local" picks it
# Today 16:00 UTC: 11:00 or 12:00 in New York, the caller id's day today's date (a store
# drops the rows of days long past).
NOON = datetime.now(UTC).replace(hour=16, minute=0, second=0, microsecond=0)
DAY = NOON.date().isoformat()


def capped(cap: int) -> Numbers:
    return Numbers(pool=[CALLER], strategy="local", daily_cap=cap)


def take_all(pool: NumberPool, times: int) -> list[str | None]:
    """`times` leads through pool.take, PoolExhausted as None."""

    async def one() -> str | None:
        try:
            return await pool.take("+12125550199", ("America/New_York",), NOON)
        except PoolExhausted:
            return None

    async def all_of() -> list[str | None]:
        return [await one() for _ in range(times)]

    return asyncio.run(all_of())


# -- the pool against a shared store ----------------------------------------------------


def test_two_pools_on_one_account_file_take_at_most_the_cap_together(tmp_path: Path) -> None:
    account = tmp_path / "acme.sqlite"
    first = NumberPool(capped(3), {}, shared=FileDays(account))
    second = NumberPool(capped(3), {}, shared=FileDays(account))
    assert take_all(first, 2) == [CALLER, CALLER]
    # The second pool's view starts from the file, not from nothing.
    assert take_all(second, 3) == [CALLER, None, None]
    assert take_all(first, 1) == [None]  # its view said 2; the file says 3


def test_each_campaign_checks_its_own_cap_against_the_calls_of_both(tmp_path: Path) -> None:
    account = tmp_path / "acme.sqlite"
    strict = NumberPool(capped(3), {}, shared=FileDays(account))
    loose = NumberPool(capped(5), {}, shared=FileDays(account))
    assert take_all(loose, 3) == [CALLER] * 3
    assert take_all(strict, 1) == [None]  # 3 calls today already, whoever made them
    assert take_all(loose, 3) == [CALLER, CALLER, None]


def test_a_call_given_back_is_counted_no_more_and_the_journal_seeds_the_count(tmp_path: Path) -> None:
    account = tmp_path / "acme.sqlite"
    # The journal's own count (calls this campaign made before sharing) is the floor.
    pool = NumberPool(capped(3), {(CALLER, DAY): 2}, shared=FileDays(account))
    assert take_all(pool, 2) == [CALLER, None]
    pool.release(CALLER, NOON)  # its request never left
    other = NumberPool(capped(3), {}, shared=FileDays(account))
    assert take_all(other, 2) == [CALLER, None]


def test_a_pool_at_its_cap_reads_the_shared_counts_again_now_and_then(tmp_path: Path) -> None:
    account = tmp_path / "acme.sqlite"
    first = NumberPool(capped(2), {}, shared=FileDays(account))
    second = NumberPool(capped(2), {}, shared=FileDays(account))
    assert take_all(first, 2) == [CALLER, CALLER]
    assert take_all(second, 1) == [None]
    first.release(CALLER, NOON)
    assert take_all(second, 1) == [None]  # read a moment ago: not yet again

    async def later() -> str | None:
        return await second.take("+12125550199", (), NOON.replace(minute=1))

    assert asyncio.run(later()) == CALLER


def test_many_pools_racing_on_postgresql_take_exactly_the_cap(pg_url: str) -> None:
    async def race() -> list[str | None]:
        stores = [PgDays(pg_url, "dialer_t", "account:acme") for _ in range(3)]
        pools = [NumberPool(capped(10), {}, shared=store) for store in stores]

        async def one(pool: NumberPool) -> str | None:
            try:
                return await pool.take("+12125550199", (), NOON)
            except PoolExhausted:
                return None

        try:
            return await asyncio.gather(*(one(pools[i % 3]) for i in range(40)))
        finally:
            for store in stores:
                await store.close()

    taken = asyncio.run(race())
    assert taken.count(CALLER) == 10


def test_which_campaigns_share_counts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIALER_ACCOUNTS_DIR", str(tmp_path / "accounts"))

    def config(lines: str) -> Any:
        toml = tmp_path / "c.toml"
        toml.write_text(f'name = "c"\nleads = "leads.csv"\nmode = "call"\n{lines}[call]\nmodel_id = "m"\n')
        return load_campaign(toml)

    account = '[account]\nname = "acme"\n'
    url = 'journal = "postgresql://u@localhost/d"\n'
    assert shared_days(config(url + account)) is None  # no [numbers] pool: nothing to count
    pool = f'[numbers]\npool = ["{CALLER}"]\n'
    assert shared_days(config(pool)) is None  # SQLite, alone: its journal counts, as ever
    in_file = shared_days(config(account + pool))
    assert isinstance(in_file, FileDays)
    asyncio.run(in_file.close())
    assert (tmp_path / "accounts" / "acme.sqlite").exists()
    campaign_wide = shared_days(config(url + pool))
    account_wide = shared_days(config(url + account + pool))
    assert isinstance(campaign_wide, PgDays) and campaign_wide.scope.startswith("campaign:dialer_c")
    assert isinstance(account_wide, PgDays) and account_wide.scope == "account:acme"


def test_an_account_file_that_cannot_be_opened_is_one_line_naming_it(tmp_path: Path) -> None:
    blocker = tmp_path / "accounts"
    blocker.write_text("a file where the folder should be")
    with pytest.raises(JournalError, match=r"accounts/acme.sqlite: cannot open the account's file"):
        FileDays(blocker / "acme.sqlite")


# -- whole runs -----------------------------------------------------------------------

RUN = f"""mode = "call"
[call]
model_id = "m-1"
[numbers]
pool = ["{CALLER}"]
daily_cap = {{cap}}
[limits]
rate_per_second = {{rate}}
concurrency = 2
settle_after_seconds = 1
claim_lease_seconds = 3
{ALL_DAY}"""


def _campaign(tmp_path: Path, name: str, body: str, journal: str | None = None) -> Path:
    toml = tmp_path / f"{name}.toml"
    where = f'journal = "{journal}"\n' if journal else ""
    toml.write_text(f'name = "{name}"\nleads = "leads.csv"\n{where}{body}')
    return toml


def _from_caller(record: Path | None) -> int:
    return Counter(p["body"].get("from_phone_number") for p in posts(record) if p["status"] == 200)[CALLER]


def test_three_runs_of_one_postgresql_campaign_place_at_most_the_cap(
    tmp_path: Path, sandbox_process: Any, pg_url: str
) -> None:
    server = sandbox_process()
    write_leads(tmp_path / "leads.csv", numbered_leads(40))
    toml = _campaign(tmp_path, "t", RUN.format(cap=5, rate=20), pg_url)
    results = [_finish(run) for run in [_start(toml, server.url) for _ in range(3)]]
    assert _from_caller(server.record) == 5, [out[-1500:] for _, out in results]
    assert len(posts(server.record)) == 5
    found = campaign_status(load_campaign(toml))
    assert found is not None and found.counts == {"sent": 5, "deferred": 35}
    assert {code for code, _ in results} <= {0, 75}


def test_two_postgresql_campaigns_of_one_account_share_a_caller_ids_cap(
    tmp_path: Path, sandbox_process: Any, pg_url: str
) -> None:
    server = sandbox_process()
    write_leads(tmp_path / "leads.csv", numbered_leads(30))
    account = '[account]\nname = "acme"\n'
    tomls = [
        _campaign(tmp_path, n, RUN.format(cap=6, rate=20) + account, pg_url) for n in ("spring", "autumn")
    ]
    results = [_finish(run) for run in [_start(toml, server.url) for toml in tomls]]
    assert _from_caller(server.record) == 6, [out[-1500:] for _, out in results]
    found = [campaign_status(load_campaign(toml)) for toml in tomls]
    assert sum(f.counts.get("sent", 0) for f in found if f is not None) == 6
    # `status` reads the shared count: each campaign's caller id is capped, whichever made the calls.
    assert all(f is not None and f.caps_reset is not None for f in found)

    async def asked_inside_a_loop() -> CampaignStatus | None:
        # A caller already running an event loop (a page built in one, a test's browser):
        # reading the shared counts must not call asyncio.run inside it.
        return campaign_status(load_campaign(tomls[0]))

    inside = asyncio.run(asked_inside_a_loop())
    assert inside is not None and inside.caps_reset == found[0].caps_reset  # type: ignore[union-attr]


def test_two_sqlite_campaigns_of_one_account_share_a_caller_ids_cap_through_its_file(
    tmp_path: Path, sandbox: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DIALER_ACCOUNTS_DIR", str(tmp_path / "accounts"))
    server = sandbox(api_key=KEY)
    write_leads(tmp_path / "leads.csv", numbered_leads(10))
    account = '[account]\nname = "acme"\n'
    strict = load_campaign(_campaign(tmp_path, "strict", RUN.format(cap=3, rate=50) + account))
    loose = load_campaign(_campaign(tmp_path, "loose", RUN.format(cap=5, rate=50) + account))
    options = RunOptions(api_key=KEY, base_url=server.url)
    assert run_campaign(strict, options).counts == {"sent": 3, "deferred": 7}
    assert run_campaign(loose, options).counts == {"sent": 2, "deferred": 8}  # 3 + 2: its cap of 5
    assert run_campaign(strict, options).counts == {"sent": 3, "deferred": 7}  # nothing more
    assert _from_caller(server.record) == 5
    # Without [account], a SQLite campaign counts its own calls only, as before.
    alone = load_campaign(_campaign(tmp_path, "alone", RUN.format(cap=3, rate=50)))
    assert run_campaign(alone, options).counts == {"sent": 3, "deferred": 7}


# -- a crash between the count and the POST -------------------------------------------

TAKE_THEN_DIE = """
import asyncio, os, signal, sys
from dialer.store.callerdays import PgDays

async def main() -> None:
    store = PgDays(sys.argv[1], "dialer_t", sys.argv[2])
    for _ in range(int(sys.argv[3])):
        assert await store.take(sys.argv[4], sys.argv[5], 5) is not None
    os.kill(os.getpid(), signal.SIGKILL)  # before any intent, any POST, any close

asyncio.run(main())
"""


def test_counts_taken_by_a_run_killed_before_its_posts_stay_taken(
    tmp_path: Path, sandbox: Any, pg_url: str
) -> None:
    server = sandbox(api_key=KEY)
    write_leads(tmp_path / "leads.csv", numbered_leads(10))
    toml = _campaign(tmp_path, "t", RUN.format(cap=5, rate=50), pg_url)
    config = load_campaign(toml)
    store = shared_days(config)
    assert isinstance(store, PgDays)
    from dialer.bookkeeping import utc_now

    pool = NumberPool(config.numbers, {})
    day = pool.day_of(CALLER, utc_now())
    died = subprocess.run(
        [sys.executable, "-c", TAKE_THEN_DIE, pg_url, store.scope, "2", CALLER, day],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert died.returncode == -signal.SIGKILL, died.stderr
    result = run_campaign(config, RunOptions(api_key=KEY, base_url=server.url))
    assert result.counts == {"sent": 3, "deferred": 7}  # a count too many per lost call: never too few
    assert _from_caller(server.record) == 3


def test_a_run_killed_mid_run_never_lets_the_campaign_pass_the_cap(
    tmp_path: Path, sandbox_process: Any, pg_url: str
) -> None:
    server = sandbox_process(latency_ms=300)
    write_leads(tmp_path / "leads.csv", numbered_leads(40))
    toml = _campaign(tmp_path, "t", RUN.format(cap=6, rate=4), pg_url)
    victim, said = _start(toml, server.url, "-v")  # its log names every row it sent
    survivor = _start(toml, server.url)
    deadline = time.monotonic() + 60
    # Killed once it has placed two calls of its own (and likely taken the count of a third).
    while said.read_text().count('"lead.sent"') < 2 and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # waiting on another process's progress, not timing the code under test
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_at = time.monotonic()
    _finish(survivor)
    # The survivor may finish before the dead run's lease (claim_lease_seconds = 3) runs out,
    # leaving its `unknown` row held; a later run takes it only once the lease has lapsed.
    time.sleep(max(0.0, killed_at + 3.5 - time.monotonic()))  # a real lease on the server's clock
    _finish(_start(toml, server.url))  # after the dead run's lease: its rows come back
    assert 1 <= _from_caller(server.record) <= 6
    found = campaign_status(load_campaign(toml))
    assert found is not None and found.counts.get("sent", 0) <= 6
    assert set(found.counts) <= {"sent", "deferred"}
