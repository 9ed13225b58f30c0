"""pytest fixtures for chat-db (registered as the `chat_db` pytest11 plugin).

Importing this costs nothing: no server starts until a fixture asks for one. pytest loads
it in every run of an environment that has chat-db installed; the fixtures that create
databases need pytest-postgresql (`pip install 'chat-db[pytest]'`), imported only when one
of them runs, so a pytest without it still works and those fixtures say what to install.

* `chat_db_server` — session: the embedded PostgreSQL from the same launcher as
  `dbtool local start`, in a temporary directory on a free port.
* `chat_db_template` — session: a database built once through the code path of
  `dbtool reset` (stand-in + `alembic upgrade head`).
* `chat_db` — per test: a fresh clone of the template (CREATE DATABASE ... TEMPLATE).
* `chat_db_target` — session: the database policy probes run against: `--chat-db-url`
  (any database with the schema, probes roll back) or else a clone of the template.
* `chat_world` — per test: users, identities, two threads and messages (see
  dbtool.policy.worlds), created in a transaction on `chat_db_target` that is rolled back.
* `chat_world_shared` — the same, once per session, for probes that each run in a savepoint
  rolled back at once (the policy suite): one world instead of one per cell.
"""

from __future__ import annotations

import argparse
import functools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
from psycopg import sql

from dbtool.database import Database
from dbtool.ops import build
from dbtool.policy import worlds
from dbtool.server import local
from dbtool.server.embedded import Server, running
from dbtool.urls import is_local

if TYPE_CHECKING:
    from pytest_postgresql.janitor import DatabaseJanitor

TEMPLATE_NAME = "chat_db_template"


# The names these types had here before dbtool.database and dbtool.server.embedded held them;
# annotations in application tests keep working.
ChatDatabase = Database
EmbeddedServer = Server


MISSING_JANITOR = ("chat-db's database fixtures (chat_db_template, chat_db, chat_db_target without --chat-db-url) "
                   "need pytest-postgresql, which is not installed: pip install 'chat-db[pytest]'")


@functools.cache
def _janitor_class() -> type[DatabaseJanitor]:
    """pytest-postgresql's janitor, creating databases owned by `postgres` as on Supabase."""
    try:
        from pytest_postgresql.janitor import DatabaseJanitor
    except ImportError:
        installed = False
    else:
        installed = True
    if not installed:  # outside the except block: the failure alone, without the ImportError chained to it
        pytest.fail(MISSING_JANITOR, pytrace=False)

    class OwnedByPostgres(DatabaseJanitor):
        def _build_create_database_sql(self) -> sql.Composed:
            return super()._build_create_database_sql() + sql.SQL(" OWNER {}").format(sql.Identifier(local.APP_ROLE))

    return OwnedByPostgres


def _janitor(server: Server, name: str, template: str | None = None,
             as_template: bool = False) -> DatabaseJanitor:
    cfg = server.config
    return _janitor_class()(
        user=local.ADMIN_ROLE,
        password=local.read_password(cfg),
        host="127.0.0.1",
        port=cfg.port,
        dbname=name,
        template_dbname=template,
        as_template=as_template,
    )


EXACT_MODES: dict[str, bool | None] = {"auto": None, "yes": True, "no": False}


def _exact_mode(value: str) -> bool | None:
    """--chat-db-exact / CHAT_DB_EXACT as dbtool's --exact/--no-exact: None (auto), True, False."""
    if value not in EXACT_MODES:
        raise argparse.ArgumentTypeError(f"{value!r} is not one of auto, yes, no")
    return EXACT_MODES[value]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("chat-db")
    group.addoption(
        "--chat-db-exact",
        type=_exact_mode,
        metavar="auto|yes|no",
        default=os.environ.get("CHAT_DB_EXACT", "auto"),
        help="keep the chat sequences from moving while probing (restarts them in the probe transaction, which "
        "pauses message inserts until the run ends); auto: only for databases on this machine.",
    )
    group.addoption(
        "--chat-db-url",
        default=os.environ.get("CHAT_DB_URL"),
        help="probe this database (it must have the chat schema; every probe is rolled back) "
        "instead of a clone on an embedded server. Default: $CHAT_DB_URL.",
    )


@pytest.fixture(scope="session")
def chat_db_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """An embedded PostgreSQL for this test session (stopped at the end)."""
    with running(tmp_path_factory.mktemp("chat-db-server")) as server:
        yield server


@pytest.fixture(scope="session")
def chat_db_template(chat_db_server: Server) -> Database:
    """The migrated template, built once per session like `dbtool reset` builds a database."""
    # Created as a template from the start (the janitor's as_template); a template still
    # accepts connections, so build.prepare runs in it, and each clone's janitor ends the
    # connections left to it before CREATE DATABASE ... TEMPLATE.
    _janitor(chat_db_server, TEMPLATE_NAME, as_template=True).init()
    db = chat_db_server.database(TEMPLATE_NAME)
    build.prepare(db.admin_url, db.url)
    return db


@contextmanager
def clone(server: Server, template: Database, name: str) -> Iterator[Database]:
    """A clone of the template for as long as the block runs (for module-scoped fixtures)."""
    janitor = _janitor(server, name, template=template.name)
    janitor.init()
    try:
        yield server.database(name)
    finally:
        janitor.drop()


@pytest.fixture
def chat_db(
    chat_db_server: Server, chat_db_template: Database, request: pytest.FixtureRequest
) -> Iterator[Database]:
    """A fresh clone of the template for one test, dropped afterwards."""
    with clone(chat_db_server, chat_db_template, f"chat_db_t{abs(hash(request.node.nodeid)) % 10**10}") as db:
        yield db


@pytest.fixture(scope="session")
def chat_db_target(request: pytest.FixtureRequest) -> Iterator[Database]:
    """Where policy probes run: --chat-db-url, or a session clone of the template."""
    url = request.config.getoption("--chat-db-url")
    if url:
        yield Database.given(url, "--chat-db-url")
        return
    server: Server = request.getfixturevalue("chat_db_server")
    template: Database = request.getfixturevalue("chat_db_template")
    with clone(server, template, "chat_db_probes") as db:
        yield db


@dataclass(frozen=True)
class WorldSession:
    """An open transaction holding a fresh world; probes run in savepoints inside it."""

    conn: psycopg.Connection[Any]
    world: worlds.World


def _exact(request: pytest.FixtureRequest, target: Database) -> bool:
    exact: bool | None = request.config.getoption("--chat-db-exact")
    return worlds.exact_for(is_local(target.url), exact)


@contextmanager
def _world_session(target: Database, request: pytest.FixtureRequest) -> Iterator[WorldSession]:
    with target.connect(admin=True) as conn, worlds.rolled_back(conn, exact=_exact(request, target)) as session:
        yield WorldSession(conn, session.world)


@pytest.fixture
def chat_world(chat_db_target: Database, request: pytest.FixtureRequest) -> Iterator[WorldSession]:
    """A fresh world in a transaction that is always rolled back (safe on staging)."""
    with _world_session(chat_db_target, request) as session:
        yield session


@pytest.fixture(scope="session")
def chat_world_shared(chat_db_target: Database, request: pytest.FixtureRequest) -> Iterator[WorldSession]:
    """One world for the session; callers must leave it as they found it (savepoints)."""
    with _world_session(chat_db_target, request) as session:
        yield session
