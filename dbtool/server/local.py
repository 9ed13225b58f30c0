"""The embedded PostgreSQL server: init, start, stop, status, URLs.

The cluster's bootstrap superuser is `supabase_admin`, as on Supabase; migrations run
as `postgres`, which is not a superuser there either (see sql/standin/00_roles.sql).
Data lives under `.dbtool/` and the server listens on loopback TCP only, with a
password generated at init.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import time
from dataclasses import asdict, dataclass
from urllib.parse import quote

import psycopg
from psycopg import sql

from dbtool.config import LocalConfig
from dbtool.errors import DataDirMismatch, NotRunning, PortInUse, ServerStartFailed
from dbtool.ops import standin
from dbtool.progress import Progress, quiet
from dbtool.server.pgbin import PgBinaries, Runner, choose_runner, find_binaries, reachable_binaries

ADMIN_ROLE = "supabase_admin"
APP_ROLE = "postgres"
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30


# Settings for a disposable development server: durability traded for speed
# (`dbtool reset` rebuilds everything), loopback only, UTC as on Supabase.
SERVER_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "unix_socket_directories": "''",
    "timezone": "'UTC'",
    "log_timezone": "'UTC'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "256MB",
    "max_wal_size": "2GB",
    "logging_collector": "off",
    "log_min_messages": "warning",
}


@dataclass(frozen=True)
class ServerStatus:
    running: bool
    pid: int | None
    port: int
    version: str | None
    data_dir: str
    mode: str | None
    url: str | None
    admin_url: str | None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True)
class StartResult:
    already_running: bool
    initialised: bool
    seconds: float
    status: ServerStatus
    binaries: str


def read_password(cfg: LocalConfig) -> str | None:
    try:
        return cfg.password_file.read_text().strip()
    except FileNotFoundError:
        return None


def server_url(cfg: LocalConfig, role: str = APP_ROLE, database: str | None = None) -> str:
    """The URL of the local server for a role (the password is read from .dbtool/)."""
    password = read_password(cfg)
    if password is None:
        raise NotRunning(f"no local server has been initialised in {cfg.home}; run `dbtool local start`")
    db = database or cfg.database
    return f"postgresql://{role}:{quote(password, safe='')}@127.0.0.1:{cfg.port}/{db}"


def _pidfile(cfg: LocalConfig) -> tuple[int, int] | None:
    """(pid, port) from postmaster.pid when a live process owns it."""
    try:
        lines = (cfg.data_dir / "postmaster.pid").read_text().splitlines()
        pid, port = int(lines[0]), int(lines[3])
    except (FileNotFoundError, IndexError, ValueError, PermissionError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, owned by another user (nobody mode seen from a non-root user)
    return pid, port


def _state(cfg: LocalConfig) -> dict[str, object]:
    try:
        return dict(json.loads(cfg.state_file.read_text()))
    except (FileNotFoundError, ValueError):
        return {}


def status(cfg: LocalConfig) -> ServerStatus:
    """Whether the local server runs, and where."""
    live = _pidfile(cfg)
    state = _state(cfg)
    version = _data_version(cfg)
    if live is None:
        return ServerStatus(False, None, cfg.port, version, str(cfg.data_dir), None, None, None)
    pid, port = live
    running_cfg = LocalConfig(cfg.home, port, cfg.database, cfg.pg_bin, cfg.root_mode)
    return ServerStatus(
        True,
        pid,
        port,
        str(state.get("version") or version),
        str(cfg.data_dir),
        str(state.get("mode")) if state.get("mode") else None,
        server_url(running_cfg),
        server_url(running_cfg, ADMIN_ROLE),
    )


def running_config(cfg: LocalConfig) -> LocalConfig:
    """The config with the port the running server actually listens on."""
    live = _pidfile(cfg)
    if live is None:
        raise NotRunning(f"the local server is not running (data in {cfg.data_dir}); start it with `dbtool local start`")
    return LocalConfig(cfg.home, live[1], cfg.database, cfg.pg_bin, cfg.root_mode)


def _data_version(cfg: LocalConfig) -> str | None:
    try:
        return (cfg.data_dir / "PG_VERSION").read_text().strip()
    except (FileNotFoundError, PermissionError):
        return None


def _check_port(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As PostgreSQL binds: connections of a just-stopped server linger in TIME_WAIT,
        # which must not count as "in use"; only a listener does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            raise PortInUse(
                f"port {port} on 127.0.0.1 is already in use by another process; "
                "choose another with --port or DBTOOL_PORT (e.g. DBTOOL_PORT=54339)"
            ) from None


def _log_tail(cfg: LocalConfig, lines: int = 20) -> str:
    try:
        text = cfg.log_file.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "(no log written)"
    return "\n".join(text[-lines:]) or "(log is empty)"


def _initdb(cfg: LocalConfig, binaries: PgBinaries, runner: Runner, progress: Progress) -> None:
    progress(f"initialising a PostgreSQL {binaries.version} cluster in {cfg.data_dir}")
    password = secrets.token_urlsafe(18)
    cfg.home.mkdir(parents=True, exist_ok=True)
    cfg.data_dir.mkdir(mode=0o700)
    pwfile = cfg.home / ".initdb-password"
    pwfile.write_text(password + "\n")
    pwfile.chmod(0o600)
    runner.chown(cfg.data_dir)
    runner.chown(pwfile)
    try:
        args = [
            binaries.tool("initdb"),
            "-D", str(cfg.data_dir),
            "-U", ADMIN_ROLE,
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        ]
        if binaries.major >= 17:  # no dependency on the OS's locales
            args += ["--locale-provider=builtin", "--builtin-locale=C.UTF-8"]
        done = runner.run(args, timeout=300)
    finally:
        pwfile.unlink(missing_ok=True)
    if done.returncode != 0:
        raise ServerStartFailed(f"initdb failed in {cfg.data_dir}:\n{(done.stderr or done.stdout).strip()}")
    with open(cfg.data_dir / "postgresql.conf", "a") as conf:
        conf.write("\n# added by dbtool: a disposable local development server\n")
        for key, value in SERVER_SETTINGS.items():
            conf.write(f"{key} = {value}\n")
    cfg.password_file.write_text(password + "\n")
    cfg.password_file.chmod(0o600)


# SCRAM rounds for the local server's passwords. 4096 (the default) costs about 5 ms of
# PBKDF2 per connection on each side, more than a whole fast reset's database work; for a
# loopback-only development server with a random 24-character password 256 is plenty.
SCRAM_ITERATIONS = 256


def _bootstrap(cfg: LocalConfig, progress: Progress) -> None:
    """Cluster roles (with their passwords) and the default database."""
    password = read_password(cfg)
    with psycopg.connect(server_url(cfg, ADMIN_ROLE, "postgres"), autocommit=True) as conn:
        standin.install_roles(conn)
        if conn.info.server_version >= 160000:
            conn.execute(f"set scram_iterations = {SCRAM_ITERATIONS}")
        for role in (ADMIN_ROLE, APP_ROLE):
            conn.execute(sql.SQL("alter role {} password {}").format(sql.Identifier(role), sql.Literal(password)))
        exists = conn.execute("select 1 from pg_database where datname = %s", (cfg.database,)).fetchone()
        if not exists:
            progress(f"creating database {cfg.database} owned by {APP_ROLE}")
            conn.execute(
                sql.SQL("create database {} owner {}").format(sql.Identifier(cfg.database), sql.Identifier(APP_ROLE))
            )


def start(cfg: LocalConfig, progress: Progress = quiet) -> StartResult:
    """Start the local server, initialising it on first use. Idempotent."""
    began = time.monotonic()
    binaries = find_binaries(cfg.pg_bin)
    data_version = _data_version(cfg)
    if data_version is not None and data_version.split(".")[0] != str(binaries.major):
        raise DataDirMismatch(
            f"{cfg.data_dir} was created by PostgreSQL {data_version} but the binaries are "
            f"PostgreSQL {binaries.version} ({binaries.source}); remove it with `dbtool local destroy --yes` "
            f"(the data is lost), or set DBTOOL_PG_BIN to a PostgreSQL {data_version} bin/ directory"
        )
    if _pidfile(cfg) is not None:
        return StartResult(True, False, time.monotonic() - began, status(cfg), binaries.source)
    _check_port(cfg.port)
    runner = choose_runner(cfg.root_mode)
    cfg.home.mkdir(parents=True, exist_ok=True)
    if runner.mode == "nobody":
        cfg.home.chmod(0o755)
    binaries = reachable_binaries(binaries, runner, cfg.home, progress)
    initialised = data_version is None
    if initialised:
        if cfg.data_dir.exists() and any(cfg.data_dir.iterdir()):
            raise ServerStartFailed(
                f"{cfg.data_dir} exists but holds no PostgreSQL cluster (no PG_VERSION); "
                "remove it or choose another DBTOOL_HOME"
            )
        if cfg.data_dir.exists():
            cfg.data_dir.rmdir()
        _initdb(cfg, binaries, runner, progress)
    cfg.log_file.touch()
    runner.chown(cfg.log_file)
    progress(f"starting PostgreSQL {binaries.version} on 127.0.0.1:{cfg.port} ({runner.mode})")
    done = runner.run(
        [
            binaries.tool("pg_ctl"),
            "start",
            "-D", str(cfg.data_dir),
            "-l", str(cfg.log_file),
            "-w",
            "-t", str(START_TIMEOUT_S),
            "-o", f"-p {cfg.port}",
        ],
        timeout=START_TIMEOUT_S + 30,
    )
    if done.returncode != 0 or _pidfile(cfg) is None:
        raise ServerStartFailed(
            f"PostgreSQL did not start on port {cfg.port} (pg_ctl: {(done.stderr or done.stdout).strip()}); "
            f"last lines of {cfg.log_file}:\n{_log_tail(cfg)}"
        )
    cfg.state_file.write_text(
        json.dumps({"mode": runner.mode, "version": binaries.version, "bin_dir": str(binaries.bin_dir),
                    "source": binaries.source, "port": cfg.port}, indent=2)
    )
    _bootstrap(cfg, progress)
    return StartResult(False, initialised, time.monotonic() - began, status(cfg), binaries.source)


def stop(cfg: LocalConfig, progress: Progress = quiet) -> float:
    """Stop the local server (fast shutdown); returns the seconds it took."""
    live = _pidfile(cfg)
    if live is None:
        raise NotRunning(f"the local server is not running (no live postmaster.pid in {cfg.data_dir}); nothing to stop")
    pid, port = live
    began = time.monotonic()
    progress(f"stopping PostgreSQL (pid {pid}, port {port})")
    os.kill(pid, signal.SIGINT)
    deadline = began + STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        if _pidfile(cfg) is None:
            return time.monotonic() - began
        time.sleep(0.02)
    os.kill(pid, signal.SIGQUIT)
    raise ServerStartFailed(f"PostgreSQL (pid {pid}) did not stop within {STOP_TIMEOUT_S}s; sent SIGQUIT")


def destroy(cfg: LocalConfig, progress: Progress = quiet) -> None:
    """Stop the server if it runs and delete its data directory."""
    import shutil

    if _pidfile(cfg) is not None:
        stop(cfg, progress)
    for path in (cfg.data_dir, cfg.password_file, cfg.state_file, cfg.log_file):
        if path.is_dir():
            progress(f"removing {path}")
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def psql_command(cfg: LocalConfig, admin: bool = False) -> tuple[list[str], dict[str, str]]:
    """The psql command line and environment for an interactive session."""
    running = running_config(cfg)
    binaries = find_binaries(cfg.pg_bin)
    env = dict(os.environ)
    env["PGPASSWORD"] = read_password(cfg) or ""
    role = ADMIN_ROLE if admin else APP_ROLE
    return [binaries.tool("psql"), "-h", "127.0.0.1", "-p", str(running.port), "-U", role, running.database], env


def pg_tool(cfg: LocalConfig, name: str) -> str:
    """Path of a client tool (pg_dump, psql, pgbench) from the same binaries."""
    return find_binaries(cfg.pg_bin).tool(name)
