"""A database to act on, and which one a command means: --database-url > DATABASE_URL > the
local server. The CLI, the pytest plugin and the benchmark all hold a `Database`."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import psycopg

from dbtool import urls
from dbtool.config import LocalConfig
from dbtool.errors import NotRunning, UnsafeTarget
from dbtool.server import local


@dataclass(frozen=True)
class Database:
    """A database to work on.

    `url` is the role that owns our objects and runs migrations (postgres on Supabase);
    `admin_url` is a superuser where we have one (an embedded server), used for the stand-in,
    creating databases and the Realtime server's checks. For a URL given by the user both
    are that URL, resolved once (`where`): service files and PG* variables are read into
    it, so every later connection goes where the local/remote decision looked.
    `embedded` says the database is on a server this package runs.
    """

    url: str
    admin_url: str
    source: str
    embedded: bool
    where: urls.Resolved | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.where is None:
            object.__setattr__(self, "where", urls.resolve(self.url, source=self.source))

    @classmethod
    def given(cls, conninfo: str, source: str) -> Database:
        """A database the user named (a URL or libpq string): owner and admin are the same."""
        where = urls.resolve(conninfo, source=source)
        return cls(where.conninfo, where.conninfo, source, False, where)

    @property
    def resolved(self) -> urls.Resolved:
        assert self.where is not None
        return self.where

    @property
    def name(self) -> str:
        return self.resolved.dbname

    @property
    def port(self) -> int:
        return int(self.resolved.params.get("port") or 5432)

    @property
    def password(self) -> str:
        return self.resolved.params.get("password") or ""

    @property
    def local(self) -> bool:
        return self.resolved.local

    @property
    def external(self) -> bool:
        """Not on a server of ours: tests must not create or drop anything in it."""
        return not self.embedded

    def connect(self, *, admin: bool = False, autocommit: bool = True) -> psycopg.Connection[Any]:
        """A connection as the owner role, or as the superuser with `admin`."""
        return psycopg.connect(urls.conninfo(self.admin_url if admin else self.url), autocommit=autocommit)

    def describe(self) -> str:
        return f"{self.resolved.redacted} ({self.source})"

    def require_local(self, force: bool, action: str) -> None:
        """Destructive commands refuse non-local databases unless forced."""
        if not self.local and not force:
            elsewhere = "; ".join(str(e) for e in self.resolved.elsewhere)
            raise UnsafeTarget(
                f"refusing to {action} {self.resolved.redacted}: it is not a local database, it connects to "
                f"{elsewhere}. This would destroy data; pass --force if you really mean it"
            )


def on_server(cfg: LocalConfig, name: str | None = None, source: str = "local server") -> Database:
    """A database on the embedded server `cfg` describes (its configured database by default)."""
    return Database(local.server_url(cfg, local.APP_ROLE, name), local.server_url(cfg, local.ADMIN_ROLE, name),
                    source, True)


def resolve(flag: str | None, cfg: LocalConfig) -> Database:
    """The database a command acts on."""
    if flag:
        return Database.given(flag, "--database-url")
    env = os.environ.get("DATABASE_URL")
    if env:
        return Database.given(env, "DATABASE_URL")
    try:
        running = local.running_config(cfg)
    except NotRunning:
        raise NotRunning(
            "no database given and the local server is not running: start it with `dbtool local start` "
            "(or `dbtool up`), or pass --database-url / set DATABASE_URL"
        ) from None
    return on_server(running)
