"""Whether a database holds what seeding and probing work on, asked before they start."""

from __future__ import annotations

from typing import Any

import psycopg

from dbtool.errors import SchemaMissing

# Supabase's (or the stand-in's) tables our schema builds on, then our own.
PLATFORM_TABLES = ("auth.users", "realtime.messages")
CHAT_TABLES = ("public.chat_identities", "public.chat_threads", "public.chat_messages")


def require_chat_schema(conn: psycopg.Connection[Any], action: str, alternative: str = "") -> None:
    """Raise SchemaMissing, saying what is missing and how to add it, unless the database
    has Supabase's tables and the migrated chat tables. One read-only query."""
    names = [*PLATFORM_TABLES, *CHAT_TABLES]
    row = conn.execute(
        "select current_database(), array(select n from unnest(%s::text[]) with ordinality as t(n, i) "
        "where to_regclass(n) is null order by i)",
        (names,),
    ).fetchone()
    assert row is not None
    database, missing = row[0], list(row[1])
    if not missing:
        return
    platform = [name for name in missing if name in PLATFORM_TABLES]
    if platform:
        problem = f"it is neither a Supabase database nor one with the local stand-in ({', '.join(platform)} missing)"
        remedy = ("on plain PostgreSQL run `dbtool standin install`, then `dbtool migrate`, on the same database "
                  "(or `dbtool reset` on a scratch one)")
    else:
        problem = f"it has no chat schema ({', '.join(missing)} missing)"
        remedy = "apply the migrations first: `dbtool migrate` on the same database"
    also = f"; {alternative}" if alternative else ""
    raise SchemaMissing(f"cannot {action} database {database}: {problem}; {remedy}{also}")
