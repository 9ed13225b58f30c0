"""Types and helpers that test modules import (fixtures stay in conftest.py, which pytest loads itself)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from dbtool import world as worlds
from dbtool.pytest_plugin import ChatDatabase


@dataclass(frozen=True)
class WorldDb:
    """A fresh clone holding a committed world, and an admin connection to it."""

    db: ChatDatabase
    world: worlds.World
    admin: psycopg.Connection[Any]

    def counts(self) -> dict[str, int]:
        """Rows in every table a chat call could write to."""
        tables = ("public.chat_identities", "public.chat_threads", "public.chat_messages", "public.chat_receipts",
                  "realtime.messages")
        return {t: self.admin.execute(f"select count(*) from {t}").fetchone()[0] for t in tables}  # type: ignore[index]
