"""`dbtool reset`: a clean, migrated, seeded database, fast when nothing changed.

Creating a database dominates a rebuild (tens to hundreds of ms) while wiping the data of
an unchanged schema takes a few ms, so the rebuild is skipped when the database records
that it was built from the same stand-in and migrations (a fingerprint of their files) and
still is at the head revision. Anything else rebuilds from scratch.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from dbtool import paths
from dbtool.database import Database
from dbtool.errors import DbtoolError
from dbtool.ops import build, seed, standin
from dbtool.progress import Progress, quiet
from dbtool.urls import database_name

FINGERPRINT_KEY = "schema_fingerprint"


def schema_fingerprint() -> str:
    """sha256 over the stand-in and every migration file (and env.py)."""
    digest = hashlib.sha256(standin.fingerprint().encode())
    folder = paths.migrations_dir()
    for path in sorted([folder / "env.py", *(folder / "versions").glob("*.py")]):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


@dataclass
class ResetResult:
    mode: str  # "fast" (kept the database, wiped the data) or "full" (rebuilt)
    reason: str
    seconds: float
    wiped: list[str] = field(default_factory=list)
    wipe_method: str | None = None
    seeded: seed.DemoData | None = None
    revision: str | None = None


REVISION_KEY = "schema_revision"
WIPE_PLAN_KEY = "wipe_plan"


@dataclass(frozen=True)
class Recorded:
    """What the database says about its last reset, read in one round trip."""

    state: dict[str, str]
    revision: str | None
    messages_bytes: int


def _recorded(conn: psycopg.Connection) -> Recorded | None:
    try:
        with conn.transaction():
            row = conn.execute(
                "select (select jsonb_object_agg(key, value) from _dbtool.state), "
                "(select version_num from chat_migrations.alembic_version), "
                "coalesce(pg_catalog.pg_relation_size(to_regclass('public.chat_messages')), 0)"
            ).fetchone()
    except psycopg.errors.UndefinedTable:
        return None
    assert row is not None
    return Recorded(row[0] or {}, row[1], int(row[2]))


def _why_rebuild(recorded: Recorded | None, wanted: str) -> str | None:
    """None when the fast path applies, else the reason to rebuild. The fingerprint covers
    the migration files, so the head recorded at the last rebuild is still the head (no
    need to load Alembic), and the wipe plan recorded then still fits the schema."""
    state = recorded.state if recorded else {}
    if recorded is None or state.get(FINGERPRINT_KEY) is None or WIPE_PLAN_KEY not in state:
        return "the database was not built by dbtool reset"
    if state.get(standin.STATE_KEY) != standin.fingerprint():
        return "the Supabase stand-in changed"
    if state[FINGERPRINT_KEY] != wanted:
        return "the migrations changed since the last reset"
    if recorded.revision != state.get(REVISION_KEY):
        return f"the database is at revision {recorded.revision or 'base'}, not at {state.get(REVISION_KEY)}"
    return None


OWNED_TABLES = """
    select format('%I.%I', n.nspname, c.relname)
    from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
    where c.relkind in ('r', 'p') and not c.relispartition
      and (n.nspname in ('public', 'chat_private')
           or (n.nspname, c.relname) in (('auth', 'users'), ('realtime', 'messages')))
"""
OWNED_SEQUENCES = """
    select format('%%I.%%I', n.nspname, s.relname)
    from pg_catalog.pg_class s join pg_catalog.pg_namespace n on n.oid = s.relnamespace
    join pg_catalog.pg_depend d on d.objid = s.oid and d.deptype in ('a', 'i')
    where s.relkind = 'S' and d.refobjid = any(%s::regclass[])
    order by 1
"""
# Children before parents, so that deletes need no cascades.
WIPE_ORDER = ("realtime.messages", "public.chat_receipts", "public.chat_messages", "public.chat_threads",
              "public.chat_links",
              "public.chat_identities", "auth.users")
SMALL_BYTES = 8 * 1024 * 1024  # chat_messages below this: DELETE beats TRUNCATE (no new files)


def owned_tables(conn: psycopg.Connection) -> list[str]:
    """Every table whose data we or the stand-in own (the chat tables, anything else in
    public, auth.users, realtime.messages with its partitions), children first."""
    rank = {name: i for i, name in enumerate(WIPE_ORDER)}
    return sorted((r[0] for r in conn.execute(OWNED_TABLES).fetchall()), key=lambda t: (rank.get(t, -1), t))


def wipe_plan(conn: psycopg.Connection) -> dict[str, Any]:
    """The tables to empty, the sequences to restart, and the rows the migrations put in
    (settings such as public.chat_rate_limits, as JSON), recorded at each rebuild, before
    the seed: a fast reset puts those rows back, so it leaves what a rebuild leaves."""
    tables = owned_tables(conn)
    restore = {}
    for name in tables:
        row = conn.execute(sql.SQL("select jsonb_agg(to_jsonb(t))::text from {} t").format(sql.SQL(name))).fetchone()
        if row and row[0]:
            restore[name] = row[0]
    return {"tables": tables, "sequences": [r[0] for r in conn.execute(OWNED_SEQUENCES, (tables,)).fetchall()],
            "restore": restore}


def wipe(conn: psycopg.Connection, plan: dict[str, Any], large: bool) -> str:
    """Empty the planned tables, restart their sequences, put the migrations' rows back and
    add realtime.messages partitions if the coming days lack them, in one round trip. Small
    data goes with DELETE (a few ms), large with one TRUNCATE (new files, but independent of
    size). Triggers are off while deleting: with children first, foreign-key cascades have
    nothing left to do, and nothing is to be broadcast."""
    listed = sql.SQL(", ").join(sql.SQL(t) for t in plan["tables"])  # names recorded quoted
    statements: list[sql.Composable]
    if large:
        statements = [sql.SQL("truncate {} restart identity cascade").format(listed)]
    else:
        statements = [sql.SQL("set local session_replication_role = replica")]
        statements += [sql.SQL("delete from {}").format(sql.SQL(t)) for t in plan["tables"]]
        statements += [sql.SQL("select setval({}, 1, false)").format(sql.Literal(q)) for q in plan["sequences"]]
        statements.append(sql.SQL("set local session_replication_role = origin"))
    statements += [sql.SQL("insert into {0} overriding system value select * from jsonb_populate_recordset("
                           "null::{0}, {1})").format(sql.SQL(t), sql.Literal(rows))
                   for t, rows in plan.get("restore", {}).items()]
    statements.append(sql.SQL(
        "select _dbtool.create_realtime_partitions() where to_regclass('realtime.messages_' "
        "|| to_char((now() at time zone 'utc')::date + 3, 'YYYY_MM_DD')) is null"))
    conn.execute(sql.SQL("; ").join(statements).as_string(conn).encode())  # one simple-protocol round trip
    return "truncate" if large else "delete"


def reset(target: Database, *, full: bool = False, force: bool = False, with_seed: bool = True,
          progress: Progress = quiet) -> ResetResult:
    """Bring the target database to a clean, migrated (and seeded) state."""
    target.require_local(force, "reset")
    began = time.monotonic()
    wanted = schema_fingerprint()
    reason: str | None = "--full" if full else None
    if not full:
        try:
            conn = target.connect(admin=True)
        except psycopg.OperationalError as exc:
            if "does not exist" not in str(exc):
                raise
            reason = "the database does not exist yet"
        else:
            with conn:
                recorded = _recorded(conn)
                reason = _why_rebuild(recorded, wanted)
                if reason is None and recorded is not None:
                    plan = json.loads(recorded.state[WIPE_PLAN_KEY])
                    with conn.transaction():
                        method = wipe(conn, plan, recorded.messages_bytes > SMALL_BYTES)
                        demo = _seed(conn) if with_seed else None
                    return ResetResult("fast", "stand-in and migrations unchanged", time.monotonic() - began,
                                       plan["tables"], method, demo, recorded.revision)
    reason = reason or "unknown"
    progress(f"rebuilding {database_name(target.url)}: {reason}")
    _refuse_supabase(target)
    built = build.rebuild(target.admin_url, target.url, progress)
    with target.connect(admin=True) as conn, conn.transaction():
        conn.cursor().executemany(
            "insert into _dbtool.state (key, value) values (%s, %s) "
            "on conflict (key) do update set value = excluded.value, updated_at = now()",
            [(FINGERPRINT_KEY, wanted), (REVISION_KEY, built.migrated.after or ""),
             (WIPE_PLAN_KEY, json.dumps(wipe_plan(conn)))],
        )
        demo = _seed(conn) if with_seed else None
    return ResetResult("full", reason, time.monotonic() - began, [], None, demo, built.migrated.after)


def _seed(conn: psycopg.Connection) -> seed.DemoData:
    """The demo personas, without triggers: constant rows that satisfy every constraint, and
    history that needs no broadcast."""
    conn.execute("set local session_replication_role = replica")
    demo = seed.demo(conn)
    conn.execute("set local session_replication_role = origin")
    return demo


def _refuse_supabase(target: Database) -> None:
    """Never drop a database that holds Supabase's own schemas (checked before dropping)."""
    try:
        with target.connect(admin=True) as conn:
            standin.check_not_supabase(conn)
    except psycopg.OperationalError as exc:
        if "does not exist" not in str(exc):
            raise DbtoolError(f"cannot connect to {database_name(target.url)}: {exc}") from None
