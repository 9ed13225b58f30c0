"""Settings resolved once: command-line flag > environment > default."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dbtool.errors import ConfigError

DEFAULT_PORT = 54329
DEFAULT_DATABASE = "chat"
ROOT_MODES = ("auto", "userns", "nobody")
DEFAULT_LOCK_TIMEOUT = "5s"
DEFAULT_STATEMENT_TIMEOUT = "5min"
DEFAULT_LOCK_WAIT = 600.0
DEFAULT_STATS_LOCK_TIMEOUT = "2s"


@dataclass(frozen=True)
class LocalConfig:
    """Where and how the embedded server runs."""

    home: Path
    port: int
    database: str
    pg_bin: Path | None
    root_mode: str

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def log_file(self) -> Path:
        return self.home / "postgres.log"

    @property
    def state_file(self) -> Path:
        return self.home / "server.json"

    @property
    def password_file(self) -> Path:
        return self.home / "password"


def _port(value: str | int, source: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise ConfigError(f"{source} must be a TCP port number, got {value!r}") from None
    if not 1024 <= port <= 65535:
        raise ConfigError(f"{source} must be between 1024 and 65535, got {port}")
    return port


def local_config(
    *,
    home: str | Path | None = None,
    port: int | None = None,
    database: str | None = None,
    env: dict[str, str] | None = None,
) -> LocalConfig:
    """Resolve the embedded server's settings from flags, then the environment."""
    env = dict(os.environ) if env is None else env
    home_path = Path(home or env.get("DBTOOL_HOME") or Path.cwd() / ".dbtool").absolute()
    if port is not None:
        port_value = _port(port, "--port")
    elif env.get("DBTOOL_PORT"):
        port_value = _port(env["DBTOOL_PORT"], "DBTOOL_PORT")
    else:
        port_value = DEFAULT_PORT
    pg_bin = env.get("DBTOOL_PG_BIN")
    root_mode = env.get("DBTOOL_ROOT_MODE", "auto")
    if root_mode not in ROOT_MODES:
        raise ConfigError(f"DBTOOL_ROOT_MODE must be one of {', '.join(ROOT_MODES)}, got {root_mode!r}")
    return LocalConfig(
        home=home_path,
        port=port_value,
        database=database or env.get("DBTOOL_DATABASE") or DEFAULT_DATABASE,
        pg_bin=Path(pg_bin) if pg_bin else None,
        root_mode=root_mode,
    )


# --- migrations --------------------------------------------------------------------------

# A PostgreSQL duration as lock_timeout and statement_timeout take it (milliseconds when no unit).
DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(us|ms|s|min|h|d)?")
UNIT_MS = {"us": 0.001, "ms": 1, "s": 1_000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}
MAX_TIMEOUT_MS = 2**31 - 1  # both settings are int4 milliseconds


@dataclass(frozen=True)
class MigrationConfig:
    """How long migration DDL may wait for a table lock (`lock_timeout`) and run
    (`statement_timeout`), and how many seconds a runner waits for another's migration lock."""

    lock_timeout: str = DEFAULT_LOCK_TIMEOUT
    statement_timeout: str = DEFAULT_STATEMENT_TIMEOUT
    lock_wait: float = DEFAULT_LOCK_WAIT


def _duration(value: str, source: str) -> str:
    text = value.strip()
    match = DURATION.fullmatch(text)
    if match is None:
        raise ConfigError(f"{source} must be a PostgreSQL duration such as 5s, 500ms or 2min, got {value!r}")
    if float(match[1]) * UNIT_MS[match[2] or "ms"] > MAX_TIMEOUT_MS:
        raise ConfigError(f"{source} must be at most {MAX_TIMEOUT_MS}ms (about 24 days, PostgreSQL's limit), got {value!r}")
    return text


def _seconds(value: str, source: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise ConfigError(f"{source} must be a number of seconds such as 600 or 0.5, got {value!r}") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigError(f"{source} must be a number of seconds, zero or more, got {value!r}")
    return seconds


def _chosen(flag: str | None, flag_name: str, variable: str, env: Mapping[str, str]) -> tuple[str, str] | None:
    """The value and the name the user gave it under: the flag, else the variable."""
    if flag is not None:
        return flag, flag_name
    if env.get(variable):
        return env[variable], variable
    return None


@dataclass(frozen=True)
class StatsConfig:
    """How long `dbtool clear-stats` waits for the chat tables' locks (the application queues
    behind the wait) and how long one statement (a constraint's validation) may run."""

    lock_timeout: str = DEFAULT_STATS_LOCK_TIMEOUT
    statement_timeout: str = DEFAULT_STATEMENT_TIMEOUT


def stats_config(
    *,
    lock_timeout: str | None = None,
    statement_timeout: str | None = None,
    env: Mapping[str, str] | None = None,
) -> StatsConfig:
    """The lock timeout from its flag (default 2s: the lock blocks the application), the
    statement timeout from its flag, then DBTOOL_STATEMENT_TIMEOUT, then 5min."""
    env = os.environ if env is None else env
    statement = _chosen(statement_timeout, "--statement-timeout", "DBTOOL_STATEMENT_TIMEOUT", env)
    return StatsConfig(
        lock_timeout=_duration(lock_timeout, "--lock-timeout") if lock_timeout is not None else DEFAULT_STATS_LOCK_TIMEOUT,
        statement_timeout=_duration(*statement) if statement else DEFAULT_STATEMENT_TIMEOUT,
    )


def migration_config(
    *,
    lock_timeout: str | None = None,
    statement_timeout: str | None = None,
    lock_wait: str | None = None,
    env: Mapping[str, str] | None = None,
) -> MigrationConfig:
    """Resolve the migration timeouts from flags, then DBTOOL_* variables, then defaults;
    an error names the flag or variable the bad value came from."""
    env = os.environ if env is None else env
    lock = _chosen(lock_timeout, "--lock-timeout", "DBTOOL_LOCK_TIMEOUT", env)
    statement = _chosen(statement_timeout, "--statement-timeout", "DBTOOL_STATEMENT_TIMEOUT", env)
    wait = _chosen(lock_wait, "--lock-wait", "DBTOOL_LOCK_WAIT", env)
    return MigrationConfig(
        lock_timeout=_duration(*lock) if lock else DEFAULT_LOCK_TIMEOUT,
        statement_timeout=_duration(*statement) if statement else DEFAULT_STATEMENT_TIMEOUT,
        lock_wait=_seconds(*wait) if wait else DEFAULT_LOCK_WAIT,
    )
