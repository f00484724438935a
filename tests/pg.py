"""A throwaway PostgreSQL 15 cluster for the tests: started once per session, stopped at the end.

The cluster lives in a temporary folder, listens on 127.0.0.1 on a free port and
asks for a password over TCP (scram-sha-256), so the tests exercise the same
connection a real deployment makes. Each test gets a database of its own.

As root, `initdb` and `pg_ctl` refuse to run: they run as the `postgres` user (via
`runuser`), with the folder owned by it. Missing binaries fail the tests with the
line that says how to install them; they are never skipped.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

PG_BIN = Path(os.environ.get("DIALER_PG_BIN", "/usr/lib/postgresql/15/bin"))
INSTALL_HINT = (
    f"PostgreSQL 15 server binaries not found in {PG_BIN} (initdb, pg_ctl): install them with"
    " `apt-get install postgresql` (or set DIALER_PG_BIN to their folder)"
)
SUPERUSER = "dialer_test"
PASSWORD = "s3cret-Pa55word"  # the tests check it never shows in any output


@dataclass
class PgServer:
    host: str
    port: int
    folder: Path
    _databases = itertools.count(1)

    def url(self, database: str = "postgres", password: bool = True) -> str:
        secret = f":{PASSWORD}" if password else ""
        return f"postgresql://{SUPERUSER}{secret}@{self.host}:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database; its URL (with the password)."""
        name = f"t{os.getpid()}_{next(self._databases)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


class MissingPostgres(RuntimeError):
    """The server's binaries are not installed (the message says how to install them)."""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _as_owner(command: list[str], owner: str | None) -> list[str]:
    return command if owner is None else ["runuser", "-u", owner, "--", *command]


def start_server() -> tuple[PgServer, str | None]:
    """initdb + pg_ctl start in a new temporary folder; the server and the user it runs as."""
    if not (PG_BIN / "initdb").exists() or not (PG_BIN / "pg_ctl").exists():
        raise MissingPostgres(INSTALL_HINT)
    owner = None
    folder = Path(tempfile.mkdtemp(prefix="dialer-pg-"))
    if os.geteuid() == 0:
        owner = "postgres"
        try:
            entry = pwd.getpwnam(owner)
        except KeyError:
            raise MissingPostgres(
                f"running as root, but there is no `{owner}` user to run PostgreSQL as"
                " (`apt-get install postgresql` creates it)"
            ) from None
        os.chmod(folder, 0o755)
        os.chown(folder, entry.pw_uid, entry.pw_gid)
    data = folder / "data"
    pwfile = folder / "pw"
    pwfile.write_text(PASSWORD + "\n")
    if owner is not None:
        os.chown(pwfile, pwd.getpwnam(owner).pw_uid, -1)
    subprocess.run(
        _as_owner(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(data),
                "-U",
                SUPERUSER,
                f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            owner,
        ),
        check=True,
        capture_output=True,
    )
    pwfile.unlink()
    port = _free_port()
    options = (
        f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={folder}"
        " -c fsync=off -c max_connections=200 -c shared_buffers=32MB"
    )
    subprocess.run(
        _as_owner(
            [
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(data),
                "-o",
                options,
                "-l",
                str(folder / "log"),
                "-w",
                "start",
            ],
            owner,
        ),
        check=True,
        capture_output=True,
    )
    return PgServer(host="127.0.0.1", port=port, folder=folder), owner


def stop_server(server: PgServer, owner: str | None) -> None:
    subprocess.run(
        _as_owner(
            [str(PG_BIN / "pg_ctl"), "-D", str(server.folder / "data"), "-m", "immediate", "stop"], owner
        ),
        check=False,
        capture_output=True,
    )
    shutil.rmtree(server.folder, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The session's PostgreSQL server."""
    try:
        server, owner = start_server()
    except MissingPostgres as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        stop_server(server, owner)


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """The URL of a new, empty database on the session's server (password included)."""
    return pg_server.new_database()
