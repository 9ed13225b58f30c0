"""Connection strings, the local/remote decision and redaction: pure logic, no server.

These decide whether `dbtool reset` may wipe a database, so every way libpq can be told
where to connect is covered: the URL's host, `?host=`, `hostaddr`, host lists, Unix
sockets, PGHOST/PGHOSTADDR, and service files (PGSERVICEFILE, PGSYSCONFDIR, ~).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict

from dbtool import urls
from dbtool.database import Database
from dbtool.errors import ConfigError

NO_ENV: dict[str, str] = {}


def where(conninfo: str, env: dict[str, str] | None = None) -> list[str]:
    return [str(e) for e in urls.resolve(conninfo, source="--database-url", env=NO_ENV if env is None else env).endpoints]


# --- reading ------------------------------------------------------------------------------


@pytest.mark.parametrize("url", [
    "postgresql://postgres:pw@db.example.com:6543/postgres?sslmode=require",
    "postgres://postgres:pw@db.example.com:6543/postgres?sslmode=require",
    "postgresql+psycopg://postgres:pw@db.example.com:6543/postgres?sslmode=require",
    "user=postgres password=pw host=db.example.com port=6543 dbname=postgres sslmode=require",
])
def test_urls_and_key_value_strings_read_alike(url: str) -> None:
    assert urls.parse(url) == {"user": "postgres", "password": "pw", "host": "db.example.com", "port": "6543",
                               "dbname": "postgres", "sslmode": "require"}


def test_another_scheme_is_refused_naming_the_source() -> None:
    with pytest.raises(ConfigError) as error:
        urls.resolve("mysql://x@y/z", source="DATABASE_URL")
    assert str(error.value) == ("DATABASE_URL must start with postgresql:// (got mysql://); use the connection string "
                                "Supabase shows under Project Settings > Database")


@pytest.mark.parametrize(("bad", "secret"), [
    ("postgresql://postgres:pa%ss@db.example.com/postgres", "pa%ss"),  # a stray % in the password
    ("password=open sesame host=db.example.com", "sesame"),  # an unquoted space
])
def test_unreadable_strings_are_explained_without_their_secrets(bad: str, secret: str) -> None:
    with pytest.raises(ConfigError) as error:
        urls.resolve(bad, source="--database-url")
    message = str(error.value)
    assert message.startswith("--database-url is not a valid connection string (")
    assert secret not in message and "sesame" not in message


def test_an_unknown_parameter_is_named() -> None:
    with pytest.raises(ConfigError, match=r'invalid URI query parameter: "colour"'):
        urls.resolve("postgresql://localhost/db?colour=blue")


# --- local or not ---------------------------------------------------------------------------


@pytest.mark.parametrize(("conninfo", "local"), [
    ("postgresql://postgres:pw@localhost/chat", True),
    ("postgresql://postgres:pw@LOCALHOST/chat", True),
    ("postgresql://postgres:pw@127.0.0.1:54329/chat", True),
    ("postgresql://postgres:pw@127.8.9.10/chat", True),  # all of 127.0.0.0/8
    ("postgresql://postgres:pw@[::1]:5432/chat", True),
    ("host=::ffff:127.0.0.1 dbname=chat", True),
    ("postgresql:///chat", True),  # no host: libpq's default Unix socket
    ("postgresql:///chat?host=/var/run/postgresql", True),
    ("postgresql://%2Ftmp/chat", True),
    ("host=@pg-abstract dbname=chat", True),  # Linux abstract socket namespace
    ("host= dbname=chat", False),  # libpq reads "dbname=chat" as the host name here
    ("postgresql://postgres:pw@db.example.com/chat", False),
    ("postgresql://postgres:pw@localhost.example.com/chat", False),
    ("postgresql://postgres:pw@128.0.0.1/chat", False),
    ("postgresql://postgres:pw@/postgres?host=10.0.0.5", False),  # ?host= decides, not the empty netloc
    ("postgresql://postgres:pw@localhost/postgres?host=10.0.0.5", False),  # the query overrides the netloc
    ("host=localhost hostaddr=10.0.0.5 dbname=chat", False),  # hostaddr is where libpq connects
    ("host=db.example.com hostaddr=127.0.0.1 dbname=chat", True),
    ("hostaddr=::1 dbname=chat", True),
    ("host=localhost,db.example.com dbname=chat", False),  # every host must be local
    ("postgresql://localhost:5432,127.0.0.1:5433/chat", True),
    ("host=localhost,/tmp hostaddr=127.0.0.1, dbname=chat", True),
    ("host=db.example.com,/tmp hostaddr=,127.0.0.1 dbname=chat", False),
])
def test_local_means_every_host_is_this_machine(conninfo: str, local: bool) -> None:
    assert urls.is_local(conninfo, env=NO_ENV) is local


def test_what_a_remote_target_connects_to_is_said() -> None:
    assert where("postgresql://postgres:pw@/postgres?host=10.0.0.5") == ["10.0.0.5 (host, from --database-url)"]
    assert where("host=localhost hostaddr=10.0.0.5") == ["10.0.0.5 (hostaddr, from --database-url)"]
    assert where("postgresql:///chat") == ["libpq's default Unix socket (no host given)"]
    assert where("host=/tmp") == ["the Unix socket in /tmp (--database-url)"]


@pytest.mark.parametrize(("conninfo", "env", "local"), [
    ("postgresql://postgres:pw@/chat", {"PGHOST": "10.0.0.5"}, False),  # no host in the URL: PGHOST decides
    ("postgresql://postgres:pw@/chat", {"PGHOST": "/var/run/postgresql"}, True),
    ("postgresql://postgres:pw@/chat", {"PGHOST": "localhost,db.example.com"}, False),
    ("postgresql://postgres:pw@localhost/chat", {"PGHOSTADDR": "10.0.0.5"}, False),  # hostaddr wins over host
    ("postgresql://postgres:pw@db.example.com/chat", {"PGHOSTADDR": "127.0.0.1"}, True),
    ("postgresql://postgres:pw@localhost/chat", {"PGHOST": "10.0.0.5"}, True),  # the string's own host wins
    ("host='' dbname=chat", {"PGHOST": "10.0.0.5"}, True),  # an empty host is given: the default socket
])
def test_the_environment_counts(conninfo: str, env: dict[str, str], local: bool) -> None:
    assert urls.is_local(conninfo, env=env) is local


def test_pghost_is_named_and_written_into_the_connection_string() -> None:
    resolved = urls.resolve("postgresql://postgres:pw@/chat", source="DATABASE_URL", env={"PGHOST": "10.0.0.5"})
    assert [str(e) for e in resolved.endpoints] == ["10.0.0.5 (host, from PGHOST)"]
    assert conninfo_to_dict(resolved.conninfo) == {"user": "postgres", "password": "pw", "dbname": "chat",
                                                   "host": "10.0.0.5"}
    # Resolved once: a later environment cannot send the connection anywhere else.
    again = urls.resolve(resolved.conninfo, env={"PGHOST": "127.0.0.1"})
    assert [e.address for e in again.endpoints] == ["10.0.0.5"] and not again.local


def test_a_fully_given_url_is_kept_as_written() -> None:
    url = "postgresql://postgres:pw@127.0.0.1:54329/chat?sslmode=disable"
    assert urls.resolve(url, env=NO_ENV).conninfo == url


def test_the_process_environment_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGHOST", "10.0.0.5")
    assert not urls.is_local("postgresql:///chat")
    monkeypatch.delenv("PGHOST")
    monkeypatch.delenv("PGHOSTADDR", raising=False)
    monkeypatch.delenv("PGSERVICE", raising=False)
    assert urls.is_local("postgresql:///chat")


@pytest.mark.parametrize(("conninfo", "env", "origin"), [
    ("postgresql://localhost/chat?connect_timeout=abc", NO_ENV, "--database-url"),
    ("postgresql://localhost/chat", {"PGCONNECT_TIMEOUT": "abc"}, "PGCONNECT_TIMEOUT"),
])
def test_a_bad_connect_timeout_is_caught_before_psycopg_raises(conninfo: str, env: dict[str, str], origin: str) -> None:
    with pytest.raises(ConfigError) as error:
        urls.resolve(conninfo, source="--database-url", env=env)
    assert str(error.value) == f"connect_timeout must be a number of seconds such as 10, got 'abc' (from {origin})"


def test_mismatched_host_lists_are_refused_as_libpq_would() -> None:
    with pytest.raises(ConfigError, match="could not match 2 host names to 1 hostaddr values"):
        urls.resolve("host=a,b hostaddr=127.0.0.1", source="--database-url", env=NO_ENV)
    with pytest.raises(ConfigError, match="could not match 3 port numbers to 2 hosts"):
        urls.resolve("host=a,b port=1,2,3", env=NO_ENV)


# --- service files ----------------------------------------------------------------------------


SERVICES = """\
# a comment, then two services
[prod]
host=10.0.0.5
dbname=postgres
[dev]
host=localhost
port=54329
host=10.9.9.9
[split]
host=db.internal
hostaddr=127.0.0.1
[partial]
dbname=chat
"""


@pytest.fixture
def services(tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "pg_service.conf"
    path.write_text(SERVICES)
    return {"PGSERVICEFILE": str(path)}


@pytest.mark.parametrize(("conninfo", "local"), [
    ("service=prod", False),
    ("postgresql:///chat?service=prod", False),
    ("service=dev", True),  # the first value of a key wins, as in libpq
    ("service=split", True),  # hostaddr from the service
    ("postgresql://localhost/chat?service=prod", True),  # the string's own host wins over the service's
])
def test_service_files_count(services: dict[str, str], conninfo: str, local: bool) -> None:
    assert urls.is_local(conninfo, env=services) is local


def test_pgservice_names_the_service(services: dict[str, str]) -> None:
    env = {**services, "PGSERVICE": "prod"}
    resolved = urls.resolve("postgresql://postgres:pw@/chat", env=env)
    assert not resolved.local
    assert [str(e) for e in resolved.endpoints] == [f"10.0.0.5 (host, from service 'prod' in {services['PGSERVICEFILE']})"]
    assert resolved.dbname == "chat"  # the URL's database, not the service's


def test_the_service_comes_before_the_environment(services: dict[str, str]) -> None:
    # libpq applies the service section first, then PG* variables for what is still unset.
    dev = urls.resolve("service=dev", env={**services, "PGHOST": "10.0.0.5", "PGDATABASE": "app"})
    assert dev.local and conninfo_to_dict(dev.conninfo)["host"] == "localhost"
    assert dev.dbname == "app"
    partial = urls.resolve("service=partial", env={**services, "PGHOST": "10.0.0.5"})
    assert not partial.local and partial.dbname == "chat"


def test_system_service_file_and_home(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "pg_service.conf").write_text("[sys]\nhost=10.0.0.7\n[both]\nhost=10.0.0.8\n")
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / ".pg_service.conf").write_text("[both]\nhost=localhost\n")
    env = {"PGSYSCONFDIR": str(tmp_path / "etc"), "HOME": str(tmp_path / "home")}
    assert where("service=sys", env) == [f"10.0.0.7 (host, from service 'sys' in {tmp_path}/etc/pg_service.conf)"]
    assert urls.is_local("service=both", env=env)  # the user's file is read first


def test_a_service_that_cannot_be_read_here_is_an_error(tmp_path: Path, services: dict[str, str]) -> None:
    # libpq may still find it in a directory compiled into it; dbtool will not guess.
    with pytest.raises(ConfigError) as error:
        urls.resolve("service=nowhere host=localhost", source="--database-url", env=services)
    assert str(error.value) == (
        f"service 'nowhere' is not defined in {services['PGSERVICEFILE']} (named in --database-url): define it in "
        "PGSERVICEFILE or PGSYSCONFDIR/pg_service.conf, or give host and dbname in the connection string itself")
    ldap = tmp_path / "ldap.conf"
    ldap.write_text("[corp]\nldap://ldap.example.com/dc=example?uniqueMember?one?(cn=db)\n")
    with pytest.raises(ConfigError, match=r"service 'corp' is looked up in LDAP .* \(named by PGSERVICE\)"):
        urls.resolve("postgresql:///chat", env={"PGSERVICEFILE": str(ldap), "PGSERVICE": "corp"})


def test_broken_service_files_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r'service file ".*/missing.conf" \(PGSERVICEFILE\) not found'):
        urls.resolve("service=prod", env={"PGSERVICEFILE": str(tmp_path / "missing.conf")})
    bad = tmp_path / "bad.conf"
    bad.write_text("[prod]\nhost = db.example.com\n")
    with pytest.raises(ConfigError, match=r'syntax error in service file ".*/bad.conf", line 2'):
        urls.resolve("service=prod", env={"PGSERVICEFILE": str(bad)})


@pytest.mark.parametrize(("conninfo", "env"), [
    ("service=svc dbname=x", {"PGHOST": "{tmp}/env"}),  # the service before the environment
    ("host={tmp}/string service=svc dbname=x", {"PGHOST": "{tmp}/env"}),  # the string before the service
    ("dbname=x", {"PGHOST": "{tmp}/env", "PGSERVICE": "svc"}),
    ("dbname=x", {"PGHOST": "{tmp}/env"}),
    ("service=nohost dbname=x", {"PGHOST": "{tmp}/env"}),  # what the service leaves unset comes from the environment
    ("postgresql:///x?host={tmp}/string", {"PGHOST": "{tmp}/env"}),
    ("postgresql://%2Fnowhere/x?host={tmp}/a,{tmp}/b&service=svc", {}),
])
def test_libpq_agrees(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, conninfo: str, env: dict[str, str]) -> None:
    """libpq itself says where it went: a Unix socket that does not exist fails at once,
    and the error names it. No server, no network."""
    (tmp_path / "pg_service.conf").write_text(f"[svc]\nhost={tmp_path}/service\n[nohost]\nport=5433\n")
    for name in ("PGHOST", "PGHOSTADDR", "PGSERVICE", "PGPORT", "PGSYSCONFDIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PGSERVICEFILE", str(tmp_path / "pg_service.conf"))
    for name, value in env.items():
        monkeypatch.setenv(name, value.format(tmp=tmp_path))
    conninfo = conninfo.format(tmp=tmp_path)
    resolved = urls.resolve(conninfo)
    ours = [f"{e.address}/.s.PGSQL.{e.port}" for e in resolved.endpoints]
    for tried in (conninfo, resolved.conninfo):
        failed = pq.PGconn.connect(tried.encode()).get_error_message()
        assert re.findall(r'socket "([^"]*)"', failed) == ours, failed


# --- database names ------------------------------------------------------------------------------


def test_database_name_as_libpq_decides_it() -> None:
    assert urls.resolve("postgresql://u@h/app", env=NO_ENV).dbname == "app"
    assert urls.resolve("postgresql://u@h/app?dbname=other", env=NO_ENV).dbname == "other"  # the query wins
    assert urls.resolve("postgresql://u@h", env={"PGDATABASE": "fromenv"}).dbname == "fromenv"
    assert urls.resolve("postgresql://u@h", env=NO_ENV).dbname == "u"  # libpq's default: the user name
    assert urls.resolve("host=h", env={"PGUSER": "ci"}).dbname == "ci"


def test_with_database_keeps_everything_else() -> None:
    other = urls.with_database("postgresql://postgres:p%40ss@127.0.0.1:54329/app?dbname=chat&sslmode=disable", "postgres")
    assert conninfo_to_dict(other) == {"user": "postgres", "password": "p@ss", "host": "127.0.0.1", "port": "54329",
                                       "dbname": "postgres", "sslmode": "disable"}


# --- redaction -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("conninfo", "shown"), [
    ("postgresql://postgres:s3cret@db.example.com:5432/postgres", "postgresql://postgres:***@db.example.com:5432/postgres"),
    ("postgresql://postgres@db.example.com/postgres", "postgresql://postgres@db.example.com/postgres"),
    ("postgresql://postgres@db.example.com/postgres?password=s3cret&sslmode=require",
     "postgresql://postgres@db.example.com/postgres?password=***&sslmode=require"),
    ("postgresql://db.example.com/postgres?passfile=/home/ci/s3cret&sslpassword=s3cret",
     "postgresql://db.example.com/postgres?passfile=***&sslpassword=***"),
    ("postgresql://db.example.com/postgres?pass%77ord=s3cret", "postgresql://db.example.com/postgres?pass%77ord=***"),
    ("postgresql://postgres:s3%40cr?t@db.example.com/postgres", "postgresql://postgres:***@db.example.com/postgres"),
    ("postgresql+psycopg://u:s3cret@h/d", "postgresql://u:***@h/d"),
    ("host=db.example.com password='s3 cret' sslpassword=s3cret passfile=/s3cret dbname=postgres",
     "password=*** passfile=*** dbname=postgres host=db.example.com sslpassword=***"),
    ("host=db.example.com dbname=postgres", "dbname=postgres host=db.example.com"),
])
def test_redact_masks_every_secret(conninfo: str, shown: str) -> None:
    redacted = urls.redact(conninfo)
    assert redacted == shown
    assert "s3" not in redacted
    masked = conninfo_to_dict(redacted)
    assert all(masked[k] == "***" for k in ("password", "passfile", "sslpassword") if k in masked)


def test_redact_never_shows_what_it_cannot_read() -> None:
    assert urls.redact("postgresql://postgres:pa%ss@db.example.com/postgres") == "(a connection string libpq cannot read)"


def test_a_refusal_names_where_it_would_connect_and_hides_the_password() -> None:
    target = Database("postgresql://postgres:s3cret@/postgres?host=10.0.0.5&sslpassword=s3cret",
                    "postgresql://postgres:s3cret@/postgres?host=10.0.0.5&sslpassword=s3cret", "--database-url", False)
    assert not target.local
    assert target.describe() == "postgresql://postgres:***@/postgres?host=10.0.0.5&sslpassword=*** (--database-url)"
