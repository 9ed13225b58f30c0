"""Which database a command works on: --database-url > DATABASE_URL > the local server."""

from __future__ import annotations

import os
from dataclasses import dataclass

from dbtool import local
from dbtool.config import LocalConfig
from dbtool.errors import NotRunning, UnsafeTarget
from dbtool.urls import is_local, redact


@dataclass(frozen=True)
class Target:
    """A database to work on.

    `url` is the role that owns our objects and runs migrations (postgres on Supabase);
    `admin_url` is a superuser where we have one (the local server), used for the stand-in,
    creating databases and the Realtime server's checks. For a URL given by the user both
    are that URL.
    """

    url: str
    admin_url: str
    source: str
    embedded: bool

    @property
    def local(self) -> bool:
        return is_local(self.url)

    def describe(self) -> str:
        return f"{redact(self.url)} ({self.source})"

    def require_local(self, force: bool, action: str) -> None:
        """Destructive commands refuse non-local databases unless forced."""
        if not self.local and not force:
            raise UnsafeTarget(
                f"refusing to {action} {redact(self.url)}: it is not a local database. "
                "This would destroy data; pass --force if you really mean it"
            )


def resolve(flag: str | None, cfg: LocalConfig) -> Target:
    """The target database for a command."""
    if flag:
        return Target(flag, flag, "--database-url", False)
    env = os.environ.get("DATABASE_URL")
    if env:
        return Target(env, env, "DATABASE_URL", False)
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
