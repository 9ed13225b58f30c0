"""Which database a command works on: --database-url > DATABASE_URL > the local server."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from dbtool import urls
from dbtool.config import LocalConfig
from dbtool.errors import NotRunning, UnsafeTarget
from dbtool.server import local


@dataclass(frozen=True)
class Target:
    """A database to work on.

    `url` is the role that owns our objects and runs migrations (postgres on Supabase);
    `admin_url` is a superuser where we have one (the local server), used for the stand-in,
    creating databases and the Realtime server's checks. For a URL given by the user both
    are that URL, resolved once (`where`): service files and PG* variables are read into
    it, so every later connection goes where the local/remote decision looked.
    """

    url: str
    admin_url: str
    source: str
    embedded: bool
    where: urls.Resolved | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.where is None:
            object.__setattr__(self, "where", urls.resolve(self.url, source=self.source))

    @property
    def resolved(self) -> urls.Resolved:
        assert self.where is not None
        return self.where

    @property
    def local(self) -> bool:
        return self.resolved.local

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


def _given(conninfo: str, source: str) -> Target:
    where = urls.resolve(conninfo, source=source)
    return Target(where.conninfo, where.conninfo, source, False, where)


def resolve(flag: str | None, cfg: LocalConfig) -> Target:
    """The target database for a command."""
    if flag:
        return _given(flag, "--database-url")
    env = os.environ.get("DATABASE_URL")
    if env:
        return _given(env, "DATABASE_URL")
    try:
        running = local.running_config(cfg)
    except NotRunning:
        raise NotRunning(
            "no database given and the local server is not running: start it with `dbtool local start` "
            "(or `dbtool up`), or pass --database-url / set DATABASE_URL"
        ) from None
    return Target(
        local.server_url(running),
        local.server_url(running, local.ADMIN_ROLE),
        "local server",
        True,
    )
