"""Statistics the planner could leak across RLS, and `dbtool clear-stats`, which removes them.

Revision 0005 gives the columns that name people, threads and texts a statistics target of
0: ANALYZE skips them, so the planner's estimates no longer depend on their values. It
skips them, it does not clear them: statistics collected before survive every ANALYZE
("stale" here). Only a superuser may delete from pg_statistic (postgres on Supabase is not
one), and PostgreSQL 17 has no pg_clear_attribute_stats(). What the owner can do is
`alter column ... type <its own type>`, which drops the column's statistics without
rewriting the table. PostgreSQL refuses it for a column a policy uses, and re-checks the
CHECK constraints on the column with a full scan under ACCESS EXCLUSIVE, so `clear` works in
one short transaction:

1. lock the tables involved (with lock_timeout: fail fast rather than queue the application);
2. drop the policies that use those columns, and the CHECK constraints on them;
3. alter each column to its own type: the table is not rewritten, plain indexes are kept,
   foreign keys are not re-checked; a partial index on a column is rebuilt (PostgreSQL never
   reuses one), which is the only part that grows with the table;
4. recreate the policies exactly as they were (comments included) and the CHECK
   constraints NOT VALID (no scan);

then commits and validates each constraint in a transaction of its own, under SHARE UPDATE
EXCLUSIVE, which lets reads and writes go on. Every definition is read back from the
catalogs with an empty search_path (so names come back schema-qualified): nothing here
restates a revision, and the schema afterwards is identical (a test compares pg_dump).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from dbtool.errors import StatsError

Progress = Callable[[str], None]
TABLES = r"chat\_%"  # our tables in public (DESIGN §3); other applications' tables are left alone

# Columns of our tables whose target is 0 (ANALYZE skips them) but which still have statistics.
STALE = r"""
    select a.attrelid, a.attnum, a.attrelid::pg_catalog.regclass::text as "table", pg_catalog.quote_ident(a.attname) as "column",
           pg_catalog.format_type(a.atttypid, a.atttypmod)
             || case when a.attcollation <> t.typcollation
                     then ' collate ' || pg_catalog.quote_ident(cn.nspname) || '.' || pg_catalog.quote_ident(co.collname)
                     else '' end as type
    from pg_catalog.pg_attribute a
    join pg_catalog.pg_class c on c.oid = a.attrelid
    join pg_catalog.pg_namespace n on n.oid = c.relnamespace
    join pg_catalog.pg_type t on t.oid = a.atttypid
    left join pg_catalog.pg_collation co on co.oid = a.attcollation
    left join pg_catalog.pg_namespace cn on cn.oid = co.collnamespace
    join pg_catalog.pg_stats s on s.schemaname = n.nspname and s.tablename = c.relname and s.attname = a.attname
                              and not s.inherited
    where n.nspname = 'public' and c.relname like %(tables)s and c.relkind = 'r'
      and a.attnum > 0 and not a.attisdropped and a.attstattarget = 0
    order by c.relname, a.attnum
"""

POLICIES = """
    select distinct p.oid, p.polrelid::pg_catalog.regclass::text as "table", pg_catalog.quote_ident(p.polname) as name,
           p.polpermissive as permissive, p.polcmd as cmd,
           case when p.polroles = '{0}' then array['public']
                else array(select pg_catalog.quote_ident(r.rolname) from pg_catalog.pg_roles r
                           where r.oid = any(p.polroles) order by r.rolname) end as roles,
           pg_catalog.pg_get_expr(p.polqual, p.polrelid) as using_expr,
           pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid) as check_expr,
           pg_catalog.obj_description(p.oid, 'pg_policy') as comment
    from pg_catalog.pg_depend d join pg_catalog.pg_policy p on p.oid = d.objid
    where d.classid = 'pg_catalog.pg_policy'::pg_catalog.regclass
      and d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
      and (d.refobjid, d.refobjsubid) in (select * from unnest(%(relids)s::oid[], %(attnums)s::int2[]))
    order by 2, 3
"""

CHECKS = """
    select k.conrelid::pg_catalog.regclass::text as "table", pg_catalog.quote_ident(k.conname) as name,
           pg_catalog.pg_get_constraintdef(k.oid) as definition, k.convalidated as validated,
           pg_catalog.obj_description(k.oid, 'pg_constraint') as comment
    from pg_catalog.pg_constraint k
    where k.contype = 'c' and exists (
      select from unnest(%(relids)s::oid[], %(attnums)s::int2[]) x(relid, attnum)
      where x.relid = k.conrelid and x.attnum = any(k.conkey))
    order by 1, 2
"""

# CHECK constraints left NOT VALID on our tables: an earlier run that stopped before validating.
UNVALIDATED = r"""
    select k.conrelid::pg_catalog.regclass::text as "table", pg_catalog.quote_ident(k.conname) as name
    from pg_catalog.pg_constraint k join pg_catalog.pg_class c on c.oid = k.conrelid
    where c.relnamespace = 'public'::pg_catalog.regnamespace and c.relname like %(tables)s
      and k.contype = 'c' and not k.convalidated
    order by 1, 2
"""

COMMANDS = {"*": "all", "r": "select", "a": "insert", "w": "update", "d": "delete"}


@dataclass(frozen=True)
class StaleColumn:
    table: str
    column: str

    @property
    def name(self) -> str:
        return f"{self.table}.{self.column}"


@dataclass(frozen=True)
class Constraint:
    table: str
    name: str

    @property
    def label(self) -> str:
        return f"{self.name} on {self.table}"

    @property
    def validate(self) -> str:
        return f"alter table {self.table} validate constraint {self.name}"


@dataclass(frozen=True)
class Plan:
    """What `clear` would run: the locked transaction, then one validation per constraint."""

    columns: list[StaleColumn]
    locks: list[str]
    statements: list[str]
    validations: list[Constraint]
    policies: list[str] = field(default_factory=list)
    constraints: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.statements and not self.validations

    def script(self, lock_timeout: str) -> str:
        """The SQL, as a reviewer (or psql) would read it."""
        out = []
        if self.statements:
            out += ["begin;", f"set local lock_timeout = '{lock_timeout}';",
                    f"lock table {', '.join(self.locks)} in access exclusive mode;",
                    *[s + ";" for s in self.statements], "commit;"]
        out += [k.validate + ";" for k in self.validations]
        return "\n".join(out) + "\n"


@dataclass
class Cleared:
    columns: list[str] = field(default_factory=list)
    policies: list[str] = field(default_factory=list)  # dropped and recreated
    constraints: list[str] = field(default_factory=list)  # dropped and added back NOT VALID
    lock_wait_ms: float = 0.0
    lock_held_ms: float = 0.0  # ACCESS EXCLUSIVE, from the lock to the commit
    validated: list[str] = field(default_factory=list)
    validate_ms: float = 0.0  # SHARE UPDATE EXCLUSIVE, reads and writes go on
    remaining: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 1) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def _rows(conn: psycopg.Connection[Any], query: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return conn.cursor(row_factory=psycopg.rows.dict_row).execute(query, params or {}).fetchall()


def stale(conn: psycopg.Connection[Any]) -> list[StaleColumn]:
    """Columns of our tables that ANALYZE no longer refreshes but that still carry statistics.

    Read through pg_stats, so the role must be able to read the tables without RLS (the
    owner, postgres on Supabase)."""
    with conn.transaction():
        conn.execute("set local search_path = ''")
        return [StaleColumn(r["table"], r["column"]) for r in _rows(conn, STALE, {"tables": TABLES})]


def _literal(text: str) -> str:
    return sql.Literal(text).as_string(None)


def _policy_sql(p: dict[str, Any]) -> list[str]:
    create = (f"create policy {p['name']} on {p['table']} as {'permissive' if p['permissive'] else 'restrictive'}"
              f" for {COMMANDS[p['cmd']]} to {', '.join(p['roles'])}")
    if p["using_expr"] is not None:
        create += f" using ({p['using_expr']})"
    if p["check_expr"] is not None:
        create += f" with check ({p['check_expr']})"
    out = [create]
    if p["comment"] is not None:
        out.append(f"comment on policy {p['name']} on {p['table']} is {_literal(p['comment'])}")
    return out


def _by_table(items: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        grouped.setdefault(item["table"], []).append(item)
    return grouped


def plan(conn: psycopg.Connection[Any]) -> Plan:
    """Read the catalogs and return what `clear` would run (changes nothing)."""
    with conn.transaction():
        conn.execute("set local search_path = ''")
        columns = _rows(conn, STALE, {"tables": TABLES})
        keys = {"relids": [c["attrelid"] for c in columns], "attnums": [c["attnum"] for c in columns]}
        policies = _rows(conn, POLICIES, keys) if columns else []
        checks = _rows(conn, CHECKS, keys) if columns else []
        unvalidated = _rows(conn, UNVALIDATED, {"tables": TABLES})
    statements = [f"drop policy {p['name']} on {p['table']}" for p in policies]
    for table, items in _by_table(checks).items():
        statements.append(f"alter table {table} " + ", ".join(f"drop constraint {k['name']}" for k in items))
    for table, items in _by_table(columns).items():
        statements.append(f"alter table {table} " + ", ".join(
            f"alter column {c['column']} type {c['type']}" for c in items))
    for table, items in _by_table(checks).items():
        # NOT VALID: enforced for new rows at once, checked against the existing rows after the commit
        statements.append(f"alter table {table} " + ", ".join(
            f"add constraint {k['name']} {k['definition']}" + (" not valid" if k["validated"] else "")
            for k in items))
        statements += [f"comment on constraint {k['name']} on {table} is {_literal(k['comment'])}"
                       for k in items if k["comment"] is not None]
    for p in policies:
        statements += _policy_sql(p)
    validations = [Constraint(k["table"], k["name"]) for k in checks if k["validated"]]
    validations += [k for k in (Constraint(u["table"], u["name"]) for u in unvalidated) if k not in validations]
    return Plan(
        [StaleColumn(c["table"], c["column"]) for c in columns],
        sorted({c["table"] for c in columns} | {p["table"] for p in policies}), statements, validations,
        [f"{p['name']} on {p['table']}" for p in policies], [Constraint(k["table"], k["name"]).label for k in checks],
    )


def _quiet(_: str) -> None:
    pass


def _timeouts(conn: psycopg.Connection[Any], lock_timeout: str, statement_timeout: str) -> None:
    conn.execute("select set_config('lock_timeout', %s, true), set_config('statement_timeout', %s, true)",
                 (lock_timeout, statement_timeout))


def _locked_part(conn: psycopg.Connection[Any], lock_timeout: str, result: Cleared,
                 progress: Progress) -> tuple[Plan, float | None]:
    """Lock, re-read the catalogs under the lock, run the plan; the caller commits.
    Returns what ran and when the lock was granted (None: nothing needed a lock)."""
    began = time.perf_counter()
    first = plan(conn)
    if not first.statements:
        return first, None
    progress(f"locking {', '.join(first.locks)} (waiting at most {lock_timeout})")
    try:
        conn.execute(f"lock table {', '.join(first.locks)} in access exclusive mode")  # type: ignore[arg-type]
    except psycopg.errors.LockNotAvailable:
        raise StatsError(
            f"could not lock {', '.join(first.locks)} within lock_timeout={lock_timeout}: other sessions hold "
            "them (long transactions, Realtime, a migration); nothing was changed. Retry at a quiet moment or "
            "raise --lock-timeout (the application waits behind the lock for as long)") from None
    locked = time.perf_counter()
    result.lock_wait_ms = (locked - began) * 1000
    current = plan(conn)  # no DDL can change these catalogs under us any more
    try:
        for statement in current.statements:
            conn.execute(statement)  # type: ignore[arg-type]
    except psycopg.Error as exc:
        raise StatsError(f"clearing statistics failed, nothing was changed: {str(exc).strip()}") from None
    result.columns = [c.name for c in current.columns]
    result.policies, result.constraints = current.policies, current.constraints
    return current, locked


def clear(conn: psycopg.Connection[Any], *, lock_timeout: str = "2s", statement_timeout: str = "5min",
          progress: Progress = _quiet) -> Cleared:
    """Remove the stale statistics of our tables (see the module's docstring for how)."""
    result = Cleared()
    with conn.transaction():
        conn.execute("set local search_path = ''")
        _timeouts(conn, lock_timeout, statement_timeout)
        done, locked = _locked_part(conn, lock_timeout, result, progress)
    if locked is not None:
        result.lock_held_ms = (time.perf_counter() - locked) * 1000
        progress(f"cleared {len(result.columns)} column(s); ACCESS EXCLUSIVE held {result.lock_held_ms:.0f} ms")
    began = time.perf_counter()
    for constraint in done.validations:
        progress(constraint.validate)
        with conn.transaction():
            _timeouts(conn, lock_timeout, statement_timeout)
            try:
                conn.execute(constraint.validate)  # type: ignore[arg-type]
            except psycopg.Error as exc:
                raise StatsError(
                    f"statistics were cleared, but `{constraint.validate}` failed: {str(exc).strip()}. The "
                    "constraint is enforced for new rows already; run `dbtool clear-stats` again to validate it"
                ) from None
        result.validated.append(constraint.label)
    result.validate_ms = (time.perf_counter() - began) * 1000
    result.remaining = [c.name for c in stale(conn)]
    return result
