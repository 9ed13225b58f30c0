"""`dbtool local ...`: the embedded server's lifecycle and every error it reports."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner, Result

from dbtool.cli import cli
from dbtool.server.embedded import free_port

DBTOOL = [sys.executable, "-m", "dbtool"]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private DBTOOL_HOME and port; the server is stopped afterwards whatever happens."""
    monkeypatch.setenv("DBTOOL_HOME", str(tmp_path / "dbtool"))
    monkeypatch.setenv("DBTOOL_PORT", str(free_port()))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("DBTOOL_PG_BIN", raising=False)
    yield tmp_path / "dbtool"
    pid = tmp_path / "dbtool" / "data" / "postmaster.pid"
    if pid.exists():
        CliRunner().invoke(cli, ["local", "stop"])


def dbtool(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def test_lifecycle_start_status_url_stop(home: Path) -> None:
    started = dbtool("local", "start", "--json")
    assert started.exit_code == 0, started.output
    info = json.loads(started.stdout)
    assert info["running"] and info["initialised"] and not info["already_running"]
    assert info["version"].startswith("17.")

    again = dbtool("local", "start")
    assert again.exit_code == 0
    assert again.stdout.startswith(f"already running on port {info['port']}")

    status = dbtool("local", "status", "--json")
    assert status.exit_code == 0 and json.loads(status.stdout)["pid"] == info["pid"]

    url = dbtool("local", "url").stdout.strip()
    with psycopg.connect(url) as conn:
        row = conn.execute("select current_user, current_database(), current_setting('TimeZone')").fetchone()
    assert row == ("postgres", "chat", "UTC")

    stopped = dbtool("local", "stop")
    assert stopped.exit_code == 0 and stopped.stdout.startswith("stopped in ")
    assert dbtool("local", "status").exit_code == 3

    warm = dbtool("local", "start", "--json")
    assert warm.exit_code == 0 and not json.loads(warm.stdout)["initialised"]


def test_listens_on_loopback_only(home: Path) -> None:
    assert dbtool("local", "start").exit_code == 0
    url = dbtool("local", "url", "--admin").stdout.strip()
    with psycopg.connect(url) as conn:
        assert conn.execute("show listen_addresses").fetchone() == ("127.0.0.1",)
        assert conn.execute("show unix_socket_directories").fetchone() == ("",)


def test_stop_when_not_running_is_an_error(home: Path) -> None:
    result = dbtool("local", "stop")
    assert result.exit_code == 1
    assert result.output.startswith("Error: the local server is not running")


def test_port_in_use(home: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = dbtool("local", "start", "--port", str(port))
    assert result.exit_code == 1
    assert f"Error: port {port} on 127.0.0.1 is already in use" in result.output
    assert "DBTOOL_PORT" in result.output


def test_binaries_missing(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "no-postgres-here"
    empty.mkdir()
    monkeypatch.setenv("DBTOOL_PG_BIN", str(empty))
    result = dbtool("local", "start")
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: DBTOOL_PG_BIN={empty} lacks postgres, initdb, pg_ctl")


def test_data_directory_of_another_major_version(home: Path) -> None:
    (home / "data").mkdir(parents=True)
    (home / "data" / "PG_VERSION").write_text("15\n")
    result = dbtool("local", "start")
    assert result.exit_code == 1
    assert "was created by PostgreSQL 15 but the binaries are PostgreSQL 17" in result.output
    assert "dbtool local destroy --yes" in result.output


def test_failed_start_shows_the_log_tail(home: Path) -> None:
    assert dbtool("local", "start").exit_code == 0
    assert dbtool("local", "stop").exit_code == 0
    with open(home / "data" / "postgresql.conf", "a") as conf:
        conf.write("shared_buffers = 'plenty'\n")
    result = dbtool("local", "start")
    assert result.exit_code == 1
    assert "Error: PostgreSQL did not start" in result.output
    assert 'invalid value for parameter "shared_buffers": "plenty"' in result.output


def test_destroy_needs_confirmation_and_removes_data(home: Path) -> None:
    assert dbtool("local", "start").exit_code == 0
    refused = dbtool("local", "destroy")
    assert refused.exit_code == 2 and "--yes" in refused.output
    assert dbtool("local", "destroy", "--yes").exit_code == 0
    assert not (home / "data").exists()


def test_psql_opens_a_session(home: Path) -> None:
    assert dbtool("local", "start").exit_code == 0
    done = subprocess.run([*DBTOOL, "local", "psql", "-Atc", "select 40 + 2"], capture_output=True, text=True,
                          env=os.environ, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "42"


@pytest.mark.skipif(os.geteuid() != 0, reason="the nobody fallback is only used as root")
def test_root_without_user_namespaces_runs_the_server_as_nobody(monkeypatch: pytest.MonkeyPatch) -> None:
    # pytest's tmp dirs are private to root; nobody needs a path it can traverse.
    base = Path(tempfile.mkdtemp(prefix="dbtool-nobody-"))
    base.chmod(0o755)
    monkeypatch.setenv("DBTOOL_HOME", str(base / "home"))
    monkeypatch.setenv("DBTOOL_PORT", str(free_port()))
    monkeypatch.setenv("DBTOOL_ROOT_MODE", "nobody")
    monkeypatch.delenv("DATABASE_URL", raising=False)
    try:
        started = dbtool("local", "start", "--json")
        assert started.exit_code == 0, started.output
        info = json.loads(started.stdout)
        assert info["mode"] == "nobody"
        assert os.stat(f"/proc/{info['pid']}").st_uid == 65534
        with psycopg.connect(info["url"]) as conn:
            assert conn.execute("select current_user").fetchone() == ("postgres",)
        assert dbtool("local", "stop").exit_code == 0
    finally:
        if (base / "home" / "data" / "postmaster.pid").exists():
            dbtool("local", "stop")
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root needs a user namespace")
def test_root_default_uses_a_user_namespace(home: Path) -> None:
    started = dbtool("local", "start", "--json")
    assert started.exit_code == 0, started.output
    info = json.loads(started.stdout)
    assert info["mode"] == "userns"
    # Outside the namespace the server is our own uid; inside it is an ordinary user.
    assert os.stat(f"/proc/{info['pid']}").st_uid == 0
    uid_map = Path(f"/proc/{info['pid']}/uid_map").read_text().split()
    assert uid_map[:2] == ["1000", "0"]
