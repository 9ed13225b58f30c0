"""Settings resolved once: command-line flag > environment > default."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dbtool.errors import ConfigError

DEFAULT_PORT = 54329
DEFAULT_DATABASE = "chat"
ROOT_MODES = ("auto", "userns", "nobody")


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
