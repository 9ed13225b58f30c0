"""A running embedded server as one value, for whoever starts a private one: the pytest
plugin's session server, the benchmark, tests of the CLI."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from dbtool.config import LocalConfig, local_config
from dbtool.database import Database, on_server
from dbtool.progress import Progress, quiet
from dbtool.server import local


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the kernel's pick)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Server:
    """An embedded PostgreSQL started from `config` (the launcher of `dbtool local start`)."""

    config: LocalConfig

    @property
    def port(self) -> int:
        return self.config.port

    @property
    def password(self) -> str:
        return local.read_password(self.config) or ""

    def database(self, name: str) -> Database:
        return on_server(self.config, name, "embedded server")


@contextmanager
def running(home: Path, progress: Progress = quiet) -> Iterator[Server]:
    """A server of its own in `home` on a free port, stopped when the block ends."""
    cfg = local_config(home=home, port=free_port(), database="postgres")
    local.start(cfg, progress)
    try:
        yield Server(cfg)
    finally:
        local.stop(cfg)
