"""The harness itself: a real server answers, each test's database starts empty."""

from __future__ import annotations

import psycopg

from tests.pg import PgServer


def test_the_throwaway_server_answers_over_tcp_with_a_password(pg_server: PgServer, pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        version = conn.execute("SHOW server_version_num").fetchone()
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
    assert version is not None and int(version[0]) >= 150000
    assert tables == (0,)


def test_without_the_password_the_server_refuses(pg_server: PgServer) -> None:
    try:
        psycopg.connect(pg_server.url(password=False), connect_timeout=5).close()
    except psycopg.OperationalError as exc:
        assert "password" in str(exc)
    else:
        raise AssertionError("connected without a password")
