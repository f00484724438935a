"""One journal suite over both stores: the `store` fixture opens a journal in SQLite or PostgreSQL."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from dialer.store import JournalStore, Writer
from dialer.store.pgurl import schema_name
from dialer.store.postgres import PgJournal
from dialer.store.sqlite import Journal
from tests.pg import PgServer


@dataclass
class Store:
    """Where a test's journals live: `kind` is "sqlite" (a folder) or "postgresql" (a database)."""

    kind: str
    folder: Path
    url: str = ""
    opened: list[JournalStore] = field(default_factory=list)  # closed when the test ends

    def open(self, campaign: str = "c") -> JournalStore:
        journal: JournalStore
        if self.kind == "sqlite":
            journal = Journal(self.folder / "c.sqlite", campaign)
        else:
            journal = PgJournal(self.url, campaign)
        self.opened.append(journal)
        return journal

    def writer(self, journal: JournalStore) -> Writer:
        return journal.writer()

    def scalar(self, statement: str, campaign: str = "c") -> Any:
        """One value read over a connection of its own (another process, after a crash)."""
        if self.kind == "sqlite":
            conn = sqlite3.connect(self.folder / "c.sqlite")
            try:
                return conn.execute(statement).fetchone()[0]
            finally:
                conn.close()
        with psycopg.connect(self.url) as pg:
            pg.execute(f'SET search_path TO "{schema_name(campaign)}"'.encode())
            row = pg.execute(statement.encode()).fetchone()
            assert row is not None
            return row[0]

    def rows(self, statement: str, campaign: str = "c") -> list[tuple[Any, ...]]:
        """Rows read over a connection of their own."""
        if self.kind == "sqlite":
            conn = sqlite3.connect(self.folder / "c.sqlite")
            try:
                return [tuple(r) for r in conn.execute(statement).fetchall()]
            finally:
                conn.close()
        with psycopg.connect(self.url) as pg:
            pg.execute(f'SET search_path TO "{schema_name(campaign)}"'.encode())
            return [tuple(r) for r in pg.execute(statement.encode()).fetchall()]

    def execute(self, statement: str, campaign: str = "c") -> None:
        """A statement committed over a connection of its own."""
        if self.kind == "sqlite":
            conn = sqlite3.connect(self.folder / "c.sqlite")
            with conn:
                conn.execute(statement)
            conn.close()
            return
        with psycopg.connect(self.url) as pg:
            pg.execute(f'SET search_path TO "{schema_name(campaign)}"'.encode())
            pg.execute(statement.encode())


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        made = Store("sqlite", tmp_path)
    else:
        server: PgServer = request.getfixturevalue("pg_server")
        made = Store("postgresql", tmp_path, server.new_database())
    yield made
    for journal in made.opened:  # psycopg warns of a connection left open (warnings are errors)
        journal.close()
