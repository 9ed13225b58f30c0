"""Every bad input ends in one `Error:` line that says what, why and what to do: exit 1
(click's own usage errors exit 2), no traceback. These cases are refused before any
connection is made, so they need no server; the rest are in tests/test_cli_errors.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import cli_error as error
from tests.helpers import cli_run as run

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


# --- migration timeouts: a flag wins, offline SQL carries what was given ---------------------


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
