"""The abuse limits of DESIGN §10 from the outside: their settings and the state of a bucket.

A limit is a row of public.chat_rate_limits (a burst, and the time `refill_every` it takes
to earn one token back); each key (a sender, a user) has a bucket in
chat_private.chat_rate_limit_buckets holding `full_at`, the moment it is full again, and a
copy of the limit's values (migration 0006; changing a limit drops its buckets). These
helpers run as the owner or a superuser inside the caller's transaction: probes and tests
use them to put a bucket at its edge, or to let time pass, without sleeping.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import psycopg

MESSAGES = "messages_per_sender"
THREADS = "threads_per_user"
GUEST_MESSAGES = "messages_per_guest_session"
LINKS = "links_per_host"
REDEMPTIONS = "redemptions_per_caller"
RECEIPTS = "receipts_per_user"


@dataclass(frozen=True)
class Limit:
    name: str
    burst: int
    refill_every: timedelta
    enabled: bool


def settings(conn: psycopg.Connection[Any]) -> dict[str, Limit]:
    """Every limit, by name."""
    rows = conn.execute("select limit_name, burst, refill_every, enabled from public.chat_rate_limits").fetchall()
    return {r[0]: Limit(*r) for r in rows}


def configure(conn: psycopg.Connection[Any], name: str, *, burst: int | None = None,
              refill_every: str | timedelta | None = None, enabled: bool | None = None) -> None:
    """Tune a limit as a project would (what is not given stays; its buckets start over full)."""
    conn.execute(
        "update public.chat_rate_limits set burst = coalesce(%s, burst), "
        "refill_every = coalesce(%s::interval, refill_every), enabled = coalesce(%s, enabled) where limit_name = %s",
        (burst, refill_every, enabled, name))


def set_tokens(conn: psycopg.Connection[Any], name: str, key: str, tokens: int) -> None:
    """Leave exactly `tokens` tokens in the bucket of `key` at this transaction's now()."""
    conn.execute(
        "insert into chat_private.chat_rate_limit_buckets (limit_name, key, full_at, burst, refill_every) "
        "select l.limit_name, %(key)s, now() + l.refill_every * (l.burst - %(tokens)s), l.burst, l.refill_every "
        "from public.chat_rate_limits l where l.limit_name = %(name)s "
        "on conflict (limit_name, key) do update set full_at = excluded.full_at, burst = excluded.burst, "
        "refill_every = excluded.refill_every",
        {"name": name, "key": str(key), "tokens": tokens})


def use_up(conn: psycopg.Connection[Any], name: str, key: str) -> None:
    """Empty the bucket of `key`: its next write over this limit is refused."""
    set_tokens(conn, name, key, 0)


def pass_time(conn: psycopg.Connection[Any], name: str, key: str, tokens: int = 1) -> None:
    """Let as much time pass for the bucket of `key` as it takes to earn `tokens` back."""
    conn.execute(
        "update chat_private.chat_rate_limit_buckets b set full_at = b.full_at - b.refill_every * %s "
        "where b.limit_name = %s and b.key = %s",
        (tokens, name, str(key)))


def tokens_left(conn: psycopg.Connection[Any], name: str, key: str) -> int:
    """Tokens in the bucket of `key` now (a key without a bucket has a full one)."""
    row = conn.execute(
        "select coalesce(b.burst, l.burst) - coalesce(ceil(extract(epoch from greatest(b.full_at - now(), "
        "interval '0')) / extract(epoch from b.refill_every)), 0)::integer "
        "from public.chat_rate_limits l left join chat_private.chat_rate_limit_buckets b "
        "on b.limit_name = l.limit_name and b.key = %s where l.limit_name = %s",
        (str(key), name)).fetchone()
    if row is None:
        raise KeyError(f"no rate limit named {name}")
    return int(row[0])
