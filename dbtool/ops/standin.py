"""The local Supabase stand-in (sql/standin/*.sql) for plain PostgreSQL.

dbtool applies it before the migrations on a plain server; it is never applied by a
migration and never to a real Supabase database, which it detects and refuses.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import psycopg

from dbtool import paths
from dbtool.errors import ConfigError, SupabaseDetected

if TYPE_CHECKING:  # dbtool.database imports the server, which imports this module
    from dbtool.database import Database

ROLES_FILE = "00_roles.sql"
STATE_KEY = "standin_sha256"


def files() -> list[tuple[str, str]]:
    """(name, text) of every stand-in file, in the order they are applied."""
    folder = paths.sql_dir() / "standin"
    return [(p.name, p.read_text()) for p in sorted(folder.glob("*.sql"))]


def fingerprint() -> str:
    """sha256 over the stand-in's files: changes whenever the stand-in does."""
    digest = hashlib.sha256()
    for name, text in files():
        digest.update(name.encode() + b"\0" + text.encode() + b"\0")
    return digest.hexdigest()


@dataclass(frozen=True)
class Installed:
    """What `install` did, for the report."""

    fingerprint: str
    already_current: bool
    partitions_created: list[str] = field(default_factory=list)
    objects: dict[str, list[str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _require_superuser(conn: psycopg.Connection) -> None:
    row = conn.execute("select rolsuper from pg_catalog.pg_roles where rolname = current_user").fetchone()
    if not row or not row[0]:
        user = conn.execute("select current_user").fetchone()
        raise ConfigError(
            f"installing the Supabase stand-in needs a superuser (it creates roles with BYPASSRLS), "
            f"but this connection is {user[0] if user else '?'}; connect as a superuser, or apply "
            "only the migrations with `dbtool migrate` if the database already has Supabase's objects"
        )


def installed_fingerprint(conn: psycopg.Connection) -> str | None:
    """The fingerprint recorded by the last install, or None if never installed."""
    if conn.execute("select to_regclass('_dbtool.state')").fetchone() == (None,):
        return None
    row = conn.execute("select value from _dbtool.state where key = %s", (STATE_KEY,)).fetchone()
    return row[0] if row else None


def check_not_supabase(conn: psycopg.Connection) -> None:
    """Refuse a database whose auth/realtime objects were not put there by dbtool."""
    if installed_fingerprint(conn) is not None:
        return
    rows = conn.execute(
        """
        select n.nspname, pg_catalog.pg_get_userbyid(n.nspowner)
        from pg_catalog.pg_namespace n
        where n.nspname in ('auth', 'realtime', 'storage', 'supabase_migrations', 'supabase_functions')
        order by 1
        """
    ).fetchall()
    if rows:
        found = ", ".join(f"schema {name} (owner {owner})" for name, owner in rows)
        raise SupabaseDetected(
            f"this database already has {found}, not installed by dbtool: it looks like a Supabase "
            "database. The stand-in is for plain PostgreSQL only and will not touch it; apply the "
            "migrations directly with `dbtool migrate --database-url ...`"
        )


def install_roles(conn: psycopg.Connection) -> None:
    """Create or correct the cluster roles (part 0 of the stand-in)."""
    _require_superuser(conn)
    text = dict(files())[ROLES_FILE]
    with conn.transaction():
        conn.execute(text.encode())


def create_partitions(conn: psycopg.Connection) -> list[str]:
    """Today's realtime.messages partitions, as the Realtime server keeps them."""
    return [r[0] for r in conn.execute("select _dbtool.create_realtime_partitions()").fetchall()]


def _inventory(conn: psycopg.Connection) -> dict[str, list[str]]:
    roles = conn.execute(
        """
        select rolname || ' (' || concat_ws(', ',
                 case when rolcanlogin then 'login' else 'nologin' end,
                 case when rolinherit then 'inherit' else 'noinherit' end,
                 case when rolsuper then 'superuser' end,
                 case when rolbypassrls then 'bypassrls' end) || ')'
        from pg_catalog.pg_roles
        where rolname in ('anon', 'authenticated', 'service_role', 'authenticator', 'postgres',
                          'supabase_admin', 'supabase_auth_admin', 'supabase_realtime_admin')
        order by rolname
        """
    ).fetchall()
    relations = conn.execute(
        """
        select n.nspname || '.' || c.relname
        from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
        where n.nspname in ('auth', 'realtime') and c.relkind in ('r', 'p') and not c.relispartition
        order by 1
        """
    ).fetchall()
    functions = conn.execute(
        """
        select n.nspname || '.' || p.proname || '(' || pg_catalog.pg_get_function_identity_arguments(p.oid) || ')'
        from pg_catalog.pg_proc p join pg_catalog.pg_namespace n on n.oid = p.pronamespace
        where n.nspname in ('auth', 'realtime') order by 1
        """
    ).fetchall()
    partitions = conn.execute(
        """
        select c.relname from pg_catalog.pg_inherits i join pg_catalog.pg_class c on c.oid = i.inhrelid
        where i.inhparent = 'realtime.messages'::regclass order by 1
        """
    ).fetchall()
    publications = conn.execute(
        "select pubname || ' (owner ' || pg_get_userbyid(pubowner) || ')' from pg_catalog.pg_publication "
        "where pubname = 'supabase_realtime'"
    ).fetchall()
    defaults = conn.execute(
        """
        select format('%s in %s: %s -> %s', pg_get_userbyid(d.defaclrole), d.defaclnamespace::regnamespace,
                      case d.defaclobjtype when 'r' then 'tables' when 'S' then 'sequences'
                                           when 'f' then 'functions' else d.defaclobjtype::text end,
                      string_agg(distinct a.grantee::regrole::text, ', '))
        from pg_catalog.pg_default_acl d cross join lateral aclexplode(d.defaclacl) a
        where d.defaclnamespace = 'public'::regnamespace and a.grantee <> d.defaclrole
        group by d.defaclrole, d.defaclnamespace, d.defaclobjtype order by 1
        """
    ).fetchall()
    return {
        "roles": [r[0] for r in roles],
        "tables": [r[0] for r in relations],
        "functions": [r[0] for r in functions],
        "partitions": [r[0] for r in partitions],
        "publications": [r[0] for r in publications],
        "default privileges": [r[0] for r in defaults],
    }


def install(conn: psycopg.Connection) -> Installed:
    """Install (or bring up to date) the stand-in in the connected database. Idempotent."""
    _require_superuser(conn)
    check_not_supabase(conn)
    wanted = fingerprint()
    notes: list[str] = []
    already = installed_fingerprint(conn) == wanted
    with conn.transaction():
        if not already:
            for _, text in files():
                conn.execute(text.encode())
            conn.execute(
                """
                insert into _dbtool.state (key, value) values (%s, %s)
                on conflict (key) do update set value = excluded.value, updated_at = now()
                """,
                (STATE_KEY, wanted),
            )
        created = create_partitions(conn)
    superuser = conn.execute("select rolsuper from pg_catalog.pg_roles where rolname = 'postgres'").fetchone()
    if superuser and superuser[0]:
        notes.append(
            "role postgres is this server's bootstrap superuser and cannot be demoted as on Supabase; "
            "grant mistakes that Supabase would reject may pass here"
        )
    return Installed(wanted, already, created, _inventory(conn), notes)


def install_in(db: Database) -> Installed:
    """`dbtool standin install`: `install` as the database's superuser."""
    with db.connect(admin=True) as conn:
        return install(conn)
