"""Every bad input ends in one `Error:` line that says what, why and what to do: exit 1
(click's own usage errors exit 2), no traceback, and nothing written."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from dbtool import build
from dbtool.cli import cli
from dbtool.pytest_plugin import ChatDatabase, EmbeddedServer

# Variables that would otherwise leak in from the shell running the tests.
CLEAN = {name: None for name in ("DATABASE_URL", "PGHOST", "PGHOSTADDR", "PGPORT", "PGSERVICE", "PGSERVICEFILE",
                                 "PGSYSCONFDIR", "DBTOOL_LOCK_TIMEOUT", "DBTOOL_STATEMENT_TIMEOUT", "DBTOOL_LOCK_WAIT")}


def run(*args: str, **env: str) -> Result:
    return CliRunner().invoke(cli, list(args), env={**CLEAN, **env})


def error(result: Result) -> str:
    """The one line a failed command printed, after checking how it failed."""
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


# --- destructive commands refuse what is not on this machine -----------------------------


REFUSED = ". This would destroy data; pass --force if you really mean it"


def test_reset_refuses_a_remote_host_given_as_a_query_parameter() -> None:
    result = run("reset", "--database-url", "postgresql://postgres:s3cret@/postgres?host=10.0.0.5&sslpassword=s3cret")
    assert error(result) == ("Error: refusing to reset postgresql://postgres:***@/postgres?host=10.0.0.5&sslpassword=***: "
                             "it is not a local database, it connects to 10.0.0.5 (host, from --database-url)" + REFUSED)


def test_seed_refuses_a_url_without_host_when_pghost_points_elsewhere() -> None:
    result = run("seed", "--database-url", "postgresql://postgres:s3cret@/postgres", PGHOST="10.0.0.5")
    assert error(result) == ("Error: refusing to seed postgresql://postgres:***@/postgres: it is not a local database, "
                             "it connects to 10.0.0.5 (host, from PGHOST)" + REFUSED)


def test_reset_refuses_a_remote_hostaddr_in_database_url() -> None:
    result = run("reset", DATABASE_URL="host=localhost hostaddr=10.0.0.5 password='s3 cret' dbname=chat")
    assert error(result) == ("Error: refusing to reset password=*** dbname=chat host=localhost hostaddr=10.0.0.5: it is "
                             "not a local database, it connects to 10.0.0.5 (hostaddr, from DATABASE_URL)" + REFUSED)


def test_reset_refuses_a_host_list_with_one_remote_host() -> None:
    result = run("reset", "--full", "--database-url", "postgresql://postgres:pw@localhost,db.example.com/chat")
    assert error(result) == ("Error: refusing to reset postgresql://postgres:***@localhost,db.example.com/chat: it is not a "
                             "local database, it connects to db.example.com (host, from --database-url)" + REFUSED)


def test_seed_refuses_a_remote_service(tmp_path: Path) -> None:
    services = tmp_path / "pg_service.conf"
    services.write_text("[prod]\nhost=db.example.com\nport=6543\n")
    result = run("seed", "--profile", "load", "--database-url", "service=prod dbname=postgres",
                 PGSERVICEFILE=str(services))
    assert error(result) == ("Error: refusing to seed service=prod dbname=postgres: it is not a local database, it connects "
                             f"to db.example.com (host, from service 'prod' in {services})" + REFUSED)


# --- unreadable connection strings ------------------------------------------------------------


def test_a_url_libpq_cannot_read_names_the_flag_and_hides_the_password() -> None:
    result = run("verify", "--database-url", "postgresql://postgres:pa%ss@db.example.com/postgres")
    assert error(result) == (
        "Error: --database-url is not a valid connection string (invalid percent-encoded token: …): percent-encode special "
        "characters in the user and password (@ as %40, % as %25) and use libpq's parameter names after ?")


def test_a_bad_database_url_variable_is_named() -> None:
    result = run("audit", "--no-matrix", DATABASE_URL="mysql://root@db.example.com/chat")
    assert error(result) == ("Error: DATABASE_URL must start with postgresql:// (got mysql://); use the connection string "
                             "Supabase shows under Project Settings > Database")


def test_an_unknown_service_is_named(tmp_path: Path) -> None:
    services = tmp_path / "pg_service.conf"
    services.write_text("[prod]\nhost=db.example.com\n")
    result = run("migrate", "--database-url", "postgresql:///chat", PGSERVICE="staging", PGSERVICEFILE=str(services))
    assert error(result) == (f"Error: service 'staging' is not defined in {services} (named by PGSERVICE): define it in "
                             "PGSERVICEFILE or PGSYSCONFDIR/pg_service.conf, or give host and dbname in the connection "
                             "string itself")


def test_a_bad_connect_timeout_is_an_error_line_not_a_traceback() -> None:
    result = run("migrate", "--database-url", "postgresql://postgres@localhost/chat?connect_timeout=abc")
    assert error(result) == "Error: connect_timeout must be a number of seconds such as 10, got 'abc' (from --database-url)"


def test_an_impossible_load_profile_is_refused_before_anything_starts() -> None:
    result = run("seed", "--profile", "load", "--users", "2", "--threads", "5")
    assert error(result) == "Error: --threads must be between 1 and 1 for 2 users (got 5)"


# --- migration timeouts: validated once, named as the user gave them -------------------------


def untouched(db: ChatDatabase) -> bool:
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
        bare: ChatDatabase, command: list[str], args: list[str], env: dict[str, str], message: str) -> None:
    assert error(run(*command, "--database-url", bare.url, *args, **env)) == f"Error: {message}"
    assert untouched(bare)


def test_a_good_flag_wins_over_a_bad_variable() -> None:
    result = run("migrate", "--sql", "--lock-timeout", "2s", DBTOOL_LOCK_TIMEOUT="abc")
    assert result.exit_code == 0, result.output
    assert "set lock_timeout = '2s';" in result.stdout


@pytest.mark.parametrize(("args", "env", "expected"), [
    (["migrate", "--sql", "--lock-timeout", "1s"], {}, ("1s", "5min")),
    (["migrate", "--sql"], {"DBTOOL_LOCK_TIMEOUT": "2s", "DBTOOL_STATEMENT_TIMEOUT": "90s"}, ("2s", "90s")),
    (["migrate", "--sql"], {}, ("5s", "5min")),
    (["downgrade", "base", "--sql", "--statement-timeout", "1.5min"], {}, ("5s", "1.5min")),
])
def test_offline_sql_uses_the_timeouts_given(args: list[str], env: dict[str, str], expected: tuple[str, str]) -> None:
    result = run(*args, **env)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    settings = [line for line in lines if line.startswith("set ") and "timeout" in line and line.endswith(";")]
    assert settings == [f"set lock_timeout = '{expected[0]}';", f"set statement_timeout = '{expected[1]}';"]


def test_every_accepted_duration_is_one_postgresql_takes(bare: ChatDatabase) -> None:
    result = run("migrate", "--database-url", bare.url, "--lock-timeout", "500 ms", "--statement-timeout", "1.5min",
                 "--lock-wait", "0.5")
    assert result.exit_code == 0, result.output
    assert not untouched(bare)


# --- a database without the chat schema ------------------------------------------------------------


@pytest.fixture
def empty(chat_db_server: EmbeddedServer, request: pytest.FixtureRequest) -> Iterator[ChatDatabase]:
    """A plain database: neither Supabase's schemas (nor the stand-in) nor ours."""
    name = f"chat_db_empty_{abs(hash(request.node.nodeid)) % 10**8}"
    db = chat_db_server.database(name)
    build.create_database(db.admin_url, name)
    try:
        yield db
    finally:
        build.drop_database(db.admin_url, name)


def state(db: ChatDatabase) -> list[tuple[object, ...]]:
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
def test_without_supabase_or_the_stand_in(empty: ChatDatabase, command: list[str], action: str, also: str) -> None:
    before = state(empty)
    result = run(*command, "--database-url", empty.admin_url)
    assert error(result) == (
        f"Error: cannot {action} database {empty.name}: it is neither a Supabase database nor one with the local stand-in "
        "(auth.users, realtime.messages missing); on plain PostgreSQL run `dbtool standin install`, then `dbtool migrate`, "
        f"on the same database (or `dbtool reset` on a scratch one){also}")
    assert state(empty) == before


@pytest.mark.parametrize(("command", "action", "also"), COMMANDS, ids=lambda c: " ".join(c) if isinstance(c, list) else "")
def test_without_the_chat_schema(bare: ChatDatabase, command: list[str], action: str, also: str) -> None:
    before = state(bare)
    result = run(*command, "--database-url", bare.admin_url)
    assert error(result) == (
        f"Error: cannot {action} database {bare.name}: it has no chat schema (public.chat_identities, public.chat_threads, "
        f"public.chat_messages missing); apply the migrations first: `dbtool migrate` on the same database{also}")
    assert state(bare) == before


def test_static_findings_need_no_chat_schema(bare: ChatDatabase) -> None:
    result = run("audit", "--no-matrix", "--database-url", bare.admin_url)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == "0 finding(s): 0 error, 0 warn, 0 info"
