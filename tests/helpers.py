"""Types and helpers that test modules import (fixtures stay in conftest.py, which pytest loads itself)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from click.testing import CliRunner, Result

from dbtool.cli import cli
from dbtool.database import Database
from dbtool.policy import worlds


@dataclass(frozen=True)
class WorldDb:
    """A fresh clone holding a committed world, and an admin connection to it."""

    db: Database
    world: worlds.World
    admin: psycopg.Connection[Any]

    def counts(self) -> dict[str, int]:
        """Rows in every table a chat call could write to."""
        tables = ("public.chat_identities", "public.chat_threads", "public.chat_messages", "public.chat_receipts",
                  "realtime.messages")
        return {t: self.admin.execute(f"select count(*) from {t}").fetchone()[0] for t in tables}  # type: ignore[index]


# Variables that would otherwise leak in from the shell running the tests.
CLEAN = {name: None for name in ("DATABASE_URL", "PGHOST", "PGHOSTADDR", "PGPORT", "PGSERVICE", "PGSERVICEFILE",
                                 "PGSYSCONFDIR", "DBTOOL_LOCK_TIMEOUT", "DBTOOL_STATEMENT_TIMEOUT", "DBTOOL_LOCK_WAIT")}


def cli_run(*args: str, **env: str) -> Result:
    """`dbtool ARGS` in-process, with only the connection variables given here."""
    return CliRunner().invoke(cli, list(args), env={**CLEAN, **env})


def cli_error(result: Result) -> str:
    """The one line a failed command printed, after checking how it failed."""
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]
