"""Fixtures shared by the test modules (the chat_db_* fixtures come from dbtool's plugin)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dbtool.database import Database
from dbtool.ops import build, standin
from dbtool.policy import worlds
from dbtool.server.embedded import Server
from tests.helpers import WorldDb


@pytest.fixture
def world_db(chat_db: Database) -> Iterator[WorldDb]:
    with chat_db.connect(admin=True) as admin:
        with admin.transaction():
            world = worlds.create(admin)
        yield WorldDb(chat_db, world, admin)


@pytest.fixture
def bare(chat_db_server: Server, request: pytest.FixtureRequest) -> Iterator[Database]:
    """A new database with the Supabase stand-in only, as CI finds one before migrating."""
    name = f"chat_db_bare_{abs(hash(request.node.nodeid)) % 10**8}"
    db = chat_db_server.database(name)
    build.create_database(db.admin_url, name)
    with db.connect(admin=True) as conn:
        standin.install(conn)
    try:
        yield db
    finally:
        build.drop_database(db.admin_url, name)
