"""Every bad input ends in one `Error:` line and writes nothing: the cases that need a database
(refusals and unreadable settings that need none are in tests/unit/test_cli_errors.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dbtool.database import Database
from dbtool.ops import build
from dbtool.server.embedded import Server
from tests.helpers import cli_error as error
from tests.helpers import cli_run as run

# --- migration timeouts: validated once, named as the user gave them -------------------------


def untouched(db: Database) -> bool:
    with db.connect() as conn:
        return conn.execute("select to_regnamespace('chat_migrations') is null").fetchone() == (True,)


@pytest.mark.parametrize(("args", "env", "message"), [
    (["--lock-timeout", "abc"], {}, "--lock-timeout must be a PostgreSQL duration such as 5s, 500ms or 2min, got 'abc'"),
    ([], {"DBTOOL_LOCK_TIMEOUT": "abc"},
     "DBTOOL_LOCK_TIMEOUT must be a PostgreSQL duration such as 5s, 500ms or 2min, got 'abc'"),
    (["--statement-timeout", "30d"], {},
     "--statement-timeout must be at most 2147483647ms (about 24 days, PostgreSQL's limit), got '30d'"),
    ([], {"DBTOOL_STATEMENT_TIMEOUT": "5 minutes"},
     "DBTOOL_STATEMENT_TIMEOUT must be a PostgreSQL duration such as 5s, 500ms or 2min, got '5 minutes'"),
    ([], {"DBTOOL_LOCK_WAIT": "abc"}, "DBTOOL_LOCK_WAIT must be a number of seconds such as 600 or 0.5, got 'abc'"),
    (["--lock-wait", "-1"], {}, "--lock-wait must be a number of seconds, zero or more, got '-1'"),
])
@pytest.mark.parametrize("command", [["migrate"], ["downgrade", "base"]])
def test_bad_timeouts_name_their_flag_or_variable_and_write_nothing(
        bare: Database, command: list[str], args: list[str], env: dict[str, str], message: str) -> None:
    assert error(run(*command, "--database-url", bare.url, *args, **env)) == f"Error: {message}"
    assert untouched(bare)


def test_every_accepted_duration_is_one_postgresql_takes(bare: Database) -> None:
    result = run("migrate", "--database-url", bare.url, "--lock-timeout", "500 ms", "--statement-timeout", "1.5min",
                 "--lock-wait", "0.5")
    assert result.exit_code == 0, result.output
    assert not untouched(bare)


# --- a database without the chat schema ------------------------------------------------------------


@pytest.fixture
def empty(chat_db_server: Server, request: pytest.FixtureRequest) -> Iterator[Database]:
    """A plain database: neither Supabase's schemas (nor the stand-in) nor ours."""
    name = f"chat_db_empty_{abs(hash(request.node.nodeid)) % 10**8}"
    db = chat_db_server.database(name)
    build.create_database(db.admin_url, name)
    try:
        yield db
    finally:
        build.drop_database(db.admin_url, name)


def state(db: Database) -> list[tuple[object, ...]]:
    """Every relation and its estimated size, and the rows of the stand-in's tables if any."""
    with db.connect(admin=True) as conn:
        rows = conn.execute(
            "select c.oid::regclass::text, c.relkind::text, n_live_tup + n_tup_ins + n_tup_del from pg_class c "
            "left join pg_stat_all_tables s on s.relid = c.oid "
            "where c.relnamespace::regnamespace::text not in ('pg_catalog', 'information_schema', 'pg_toast') "
            "order by 1").fetchall()
        if conn.execute("select to_regclass('auth.users') is not null").fetchone() == (True,):
            rows += conn.execute("select 'auth.users', count(*)::text, 0 from auth.users").fetchall()
    return [tuple(r) for r in rows]


COMMANDS = [
    (["seed"], "seed", ""),
    (["seed", "--profile", "load", "--users", "4", "--threads", "2", "--messages", "10"], "seed", ""),
    (["verify"], "verify", ""),
    (["audit"], "measure the access matrix of", "; --no-matrix gives the static findings alone"),
    (["audit", "snapshot"], "measure the access matrix of", "; --no-matrix gives the static findings alone"),
]


@pytest.mark.parametrize(("command", "action", "also"), COMMANDS, ids=lambda c: " ".join(c) if isinstance(c, list) else "")
def test_without_supabase_or_the_stand_in(empty: Database, command: list[str], action: str, also: str) -> None:
    before = state(empty)
    result = run(*command, "--database-url", empty.admin_url)
    assert error(result) == (
        f"Error: cannot {action} database {empty.name}: it is neither a Supabase database nor one with the local stand-in "
        "(auth.users, realtime.messages missing); on plain PostgreSQL run `dbtool standin install`, then `dbtool migrate`, "
        f"on the same database (or `dbtool reset` on a scratch one){also}")
    assert state(empty) == before


@pytest.mark.parametrize(("command", "action", "also"), COMMANDS, ids=lambda c: " ".join(c) if isinstance(c, list) else "")
def test_without_the_chat_schema(bare: Database, command: list[str], action: str, also: str) -> None:
    before = state(bare)
    result = run(*command, "--database-url", bare.admin_url)
    assert error(result) == (
        f"Error: cannot {action} database {bare.name}: it has no chat schema (public.chat_identities, public.chat_threads, "
        f"public.chat_messages missing); apply the migrations first: `dbtool migrate` on the same database{also}")
    assert state(bare) == before


def test_static_findings_need_no_chat_schema(bare: Database) -> None:
    result = run("audit", "--no-matrix", "--database-url", bare.admin_url)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == "0 finding(s): 0 error, 0 warn, 0 info"
