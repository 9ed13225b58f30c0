"""The Realtime server's private-channel authorisation, reproduced statement by statement.

Read check (at join): as the server's own role, insert one probe row per extension
(broadcast, presence) into realtime.messages; switch to the user with local settings
(role, realtime.topic, request.jwt.claims, request.jwt.claim.sub, request.jwt.claim.role,
request.headers); select the probe ids; roll back. The join is allowed if either probe is
visible.

Write check (first broadcast/presence from the client): the same settings, then per
extension an insert of (topic, extension, updated_at, inserted_at) inside a savepoint;
SQLSTATE 42501 means "may not write", any other error is an error; roll back.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg

from dbtool.supabase.personas import Persona

EXTENSIONS = ("broadcast", "presence")


@dataclass(frozen=True)
class ChannelAccess:
    """Per extension, whether the check allowed it."""

    topic: str
    allowed: dict[str, bool]

    @property
    def can_join(self) -> bool:
        return any(self.allowed.values())


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _set_user(conn: psycopg.Connection[Any], persona: Persona, topic: str) -> None:
    claims = dict(persona.claims)
    claims.setdefault("role", persona.role)
    conn.execute(
        "select set_config('role', %s, true), set_config('realtime.topic', %s, true), "
        "set_config('request.jwt.claims', %s, true), set_config('request.jwt.claim.sub', %s, true), "
        "set_config('request.jwt.claim.role', %s, true), set_config('request.headers', %s, true)",
        (persona.role, topic, json.dumps(claims), persona.sub, persona.role,
         json.dumps({"user-agent": "dbtool-realtime-emulation", "x-forwarded-for": "127.0.0.1"})),
    )


def read_check(
    conn: psycopg.Connection[Any], persona: Persona, topic: str, extensions: Sequence[str] = EXTENSIONS
) -> ChannelAccess:
    """May `persona` join the private channel `topic`? (run as the server's role on `conn`)."""
    probes = {ext: uuid.uuid4() for ext in extensions}
    now = _now()
    try:
        with conn.transaction(force_rollback=True):
            with conn.cursor() as cur:
                cur.executemany(
                    "insert into realtime.messages (id, topic, extension, inserted_at, updated_at) "
                    "values (%s, %s, %s, %s, %s)",
                    [(pid, topic, ext, now, now) for ext, pid in probes.items()],
                )
            _set_user(conn, persona, topic)
            seen = {
                row[0]
                for row in conn.execute(
                    "select id from realtime.messages where id = any(%s)", (list(probes.values()),)
                ).fetchall()
            }
    except psycopg.errors.InsufficientPrivilege:
        # A role without SELECT on realtime.messages: the server's query fails, the join is refused.
        seen = set()
    return ChannelAccess(topic, {ext: pid in seen for ext, pid in probes.items()})


def write_check(
    conn: psycopg.Connection[Any], persona: Persona, topic: str, extensions: Sequence[str] = EXTENSIONS
) -> ChannelAccess:
    """May `persona` send broadcast / track presence on the private channel `topic`?"""
    allowed: dict[str, bool] = {}
    now = _now()
    with conn.transaction(force_rollback=True):
        _set_user(conn, persona, topic)
        for ext in extensions:
            try:
                with conn.transaction():  # a savepoint: the outer transaction survives a refusal
                    conn.execute(
                        "insert into realtime.messages (topic, extension, updated_at, inserted_at) "
                        "values (%s, %s, %s, %s)",
                        (topic, ext, now, now),
                    )
                allowed[ext] = True
            except psycopg.errors.InsufficientPrivilege:
                allowed[ext] = False
    return ChannelAccess(topic, allowed)


def visible(conn: psycopg.Connection[Any], persona: Persona, topic: str, ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
    """Which of the rows `ids` of realtime.messages `persona` sees under the channel settings
    the Realtime server sets for `topic` (the read check's view of existing rows); rolled back."""
    try:
        with conn.transaction(force_rollback=True):
            _set_user(conn, persona, topic)
            rows = conn.execute("select id from realtime.messages where id = any(%s)", (list(ids),)).fetchall()
            return {row[0] for row in rows}
    except psycopg.errors.InsufficientPrivilege:
        return set()
