"""`dbtool reset`: a clean, migrated, seeded database, fast when nothing changed.

Creating a database dominates a rebuild (tens to hundreds of ms) while wiping the data of
an unchanged schema takes a few ms, so the rebuild is skipped when the database records
that it was built from the same stand-in and migrations (a fingerprint of their files) and
still is at the head revision. Anything else rebuilds from scratch.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from dbtool import build, paths, seed, standin
from dbtool.errors import DbtoolError
from dbtool.target import Target
from dbtool.urls import database_name, libpq_url

FINGERPRINT_KEY = "schema_fingerprint"

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


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
    seeded: seed.DemoData | None = None
    revision: str | None = None


REVISION_KEY = "schema_revision"
SMALL = 10_000  # below this many rows in a table, DELETE beats TRUNCATE (no new files)


def _why_rebuild(conn: psycopg.Connection, wanted: str) -> str | None:
    """None when the fast path applies, else the reason to rebuild. Reads only the
    database's own records: the fingerprint covers the migration files, so the head
    recorded at the last rebuild is still the head (no need to load Alembic)."""
    row = conn.execute(
        "select to_regclass('_dbtool.state') is not null, to_regclass('chat_migrations.alembic_version') is not null"
    ).fetchone()
    if not row or not row[0]:
        return "the database was not built by dbtool reset"
    state: dict[str, str] = dict(conn.execute("select key, value from _dbtool.state").fetchall())
    current = conn.execute("select version_num from chat_migrations.alembic_version").fetchone() if row[1] else None
    if state.get(FINGERPRINT_KEY) is None:
        return "the database was not built by dbtool reset"
    if state.get(standin.STATE_KEY) != standin.fingerprint():
        return "the Supabase stand-in changed"
    if state[FINGERPRINT_KEY] != wanted:
        return "the migrations changed since the last reset"
    if current is None or current[0] != state.get(REVISION_KEY):
        return f"the database is at revision {current[0] if current else 'base'}, not at {state.get(REVISION_KEY)}"
    return None


def owned_tables(conn: psycopg.Connection) -> list[str]:
    """Every table whose data we or the stand-in own: the chat tables, auth.users and
    realtime.messages (partitions are truncated through their parent)."""
    rows = conn.execute(
        """
        select format('%I.%I', n.nspname, c.relname)
        from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
        where c.relkind in ('r', 'p') and not c.relispartition
          and (n.nspname in ('public', 'chat_private')
               or (n.nspname, c.relname) in (('auth', 'users'), ('realtime', 'messages')))
        order by 1
        """
    ).fetchall()
    return [r[0] for r in rows]


def _is_small(conn: psycopg.Connection, tables: list[str]) -> bool:
    counts = sql.SQL(" + ").join(
        sql.SQL("(select count(*) from (select from {} limit {}) x)").format(sql.SQL(t), SMALL) for t in tables
    )
    row = conn.execute(sql.SQL("select ") + counts).fetchone()
    return bool(row and row[0] < SMALL)


def wipe(conn: psycopg.Connection) -> list[str]:
    """Empty every owned table, restart their identities, and add realtime.messages
    partitions if the coming days lack them. Small tables are emptied with DELETE (a few
    ms), large ones with one TRUNCATE (new files, but independent of size); either way in
    one round trip."""
    tables = owned_tables(conn)
    if not tables:
        return tables
    listed = sql.SQL(", ").join(sql.SQL(t) for t in tables)  # already quoted by format('%I')
    partitions = sql.SQL(
        "select _dbtool.create_realtime_partitions() where to_regclass('realtime.messages_' "
        "|| to_char((now() at time zone 'utc')::date + 3, 'YYYY_MM_DD')) is null"
    )
    if not _is_small(conn, tables):
        statements = [sql.SQL("truncate {} restart identity cascade").format(listed)]
    else:
        statements = [sql.SQL("delete from {}").format(sql.SQL(t)) for t in tables]
        statements.append(sql.SQL(
            "select setval(s.oid, 1, false) from pg_catalog.pg_class s "
            "join pg_catalog.pg_depend d on d.objid = s.oid and d.deptype in ('a', 'i') "
            "where s.relkind = 'S' and d.refobjid = any({}::regclass[])").format(sql.Literal(tables)))
    script = sql.SQL("; ").join([*statements, partitions]).as_string(conn)
    try:
        with conn.transaction():
            conn.execute(script.encode())  # no parameters: one simple-protocol round trip
    except psycopg.errors.ForeignKeyViolation:  # someone else's table references ours
        conn.execute(sql.SQL("truncate {} restart identity cascade").format(listed))
        conn.execute(partitions)
    return tables


def reset(target: Target, *, full: bool = False, force: bool = False, with_seed: bool = True,
          progress: Progress = _quiet) -> ResetResult:
    """Bring the target database to a clean, migrated (and seeded) state."""
    target.require_local(force, "reset")
    began = time.monotonic()
    wanted = schema_fingerprint()
    reason: str | None = "--full" if full else None
    if not full:
        try:
            conn = psycopg.connect(libpq_url(target.admin_url), autocommit=True)
        except psycopg.OperationalError as exc:
            if "does not exist" not in str(exc):
                raise
            reason = "the database does not exist yet"
        else:
            with conn:
                reason = _why_rebuild(conn, wanted)
                if reason is None:
                    with conn.transaction():
                        wiped = wipe(conn)
                        demo = seed.demo(conn) if with_seed else None
                        revision = conn.execute("select version_num from chat_migrations.alembic_version").fetchone()
                    return ResetResult("fast", "stand-in and migrations unchanged", time.monotonic() - began, wiped,
                                       demo, revision[0] if revision else None)
    reason = reason or "unknown"
    progress(f"rebuilding {database_name(target.url)}: {reason}")
    _refuse_supabase(target)
    built = build.rebuild(target.admin_url, target.url, progress)
    with psycopg.connect(libpq_url(target.admin_url), autocommit=True) as conn, conn.transaction():
        conn.cursor().executemany(
            "insert into _dbtool.state (key, value) values (%s, %s) "
            "on conflict (key) do update set value = excluded.value, updated_at = now()",
            [(FINGERPRINT_KEY, wanted), (REVISION_KEY, built.migrated.after or "")],
        )
        demo = seed.demo(conn) if with_seed else None
    return ResetResult("full", reason, time.monotonic() - began, [], demo, built.migrated.after)


def _refuse_supabase(target: Target) -> None:
    """Never drop a database that holds Supabase's own schemas (checked before dropping)."""
    try:
        with psycopg.connect(libpq_url(target.admin_url), autocommit=True) as conn:
            standin.check_not_supabase(conn)
    except psycopg.OperationalError as exc:
        if "does not exist" not in str(exc):
            raise DbtoolError(f"cannot connect to {database_name(target.url)}: {exc}") from None
