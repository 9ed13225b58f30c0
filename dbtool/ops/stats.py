"""Statistics the planner could leak across RLS, and `dbtool clear-stats`, which removes them.

Revision 0005 gives the columns that name people, threads and texts a statistics target of
0: ANALYZE skips them, so the planner's estimates no longer depend on their values. It
skips them, it does not clear them: statistics collected before survive every ANALYZE
("stale" here). Only a superuser may delete from pg_statistic (postgres on Supabase is not
one), and PostgreSQL 17 has no pg_clear_attribute_stats(). What the owner can do is
`alter column ... type <its own type>`, which drops the column's statistics without
rewriting the table or rebuilding its plain indexes and without re-checking foreign keys.
It refuses columns a policy uses, re-checks the CHECK constraints on them, and rebuilds the
partial indexes on them (PostgreSQL never reuses one), both with a full scan under ACCESS
EXCLUSIVE. So `clear` keeps every scan outside the lock:

1. a partial unique index whose predicate only leaves out NULLs (the idempotency key's) gets
   a stand-in first, the same index without the predicate, built CONCURRENTLY: with NULLs
   distinct it enforces exactly the same uniqueness, and ON CONFLICT infers it;
2. one short transaction (lock_timeout: fail fast rather than queue the application) drops
   the policies, triggers and views that use the columns (and the policies that read those
   views), their CHECK constraints and those partial indexes, alters each column to its own
   type, and recreates them as they were (comments and grants included), the constraints
   NOT VALID;
3. after the commit the partial indexes are built again CONCURRENTLY under their own names,
   the stand-ins dropped, and each constraint validated under SHARE UPDATE EXCLUSIVE: reads
   and writes go on. A stand-in carries its original's definition as its comment, so a run
   that stops half-way is finished by the next one.

Every definition is read back from the catalogs with an empty search_path (so names come
back schema-qualified): nothing here restates a revision, and the schema afterwards is
identical (a test compares pg_dump).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from dbtool.config import StatsConfig
from dbtool.errors import StatsError
from dbtool.progress import Progress, quiet

if TYPE_CHECKING:
    from dbtool.database import Database

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
      and ((d.refobjid, d.refobjsubid) in (select * from unnest(%(relids)s::oid[], %(attnums)s::int2[]))
           or d.refobjid = any(%(views)s::oid[]))
    order by 2, 3
"""

# Triggers whose WHEN clause reads a column (ALTER COLUMN TYPE refuses them): dropped and recreated.
TRIGGERS = """
    select distinct t.oid, t.tgrelid::pg_catalog.regclass::text as "table", pg_catalog.quote_ident(t.tgname) as name,
           pg_catalog.pg_get_triggerdef(t.oid) as definition,
           pg_catalog.obj_description(t.oid, 'pg_trigger') as comment
    from pg_catalog.pg_depend d join pg_catalog.pg_trigger t on t.oid = d.objid
    where d.classid = 'pg_catalog.pg_trigger'::pg_catalog.regclass and not t.tgisinternal
      and d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
      and (d.refobjid, d.refobjsubid) in (select * from unnest(%(relids)s::oid[], %(attnums)s::int2[]))
    order by 2, 3
"""

# Views that read a column (ALTER COLUMN TYPE refuses them): dropped and recreated as they were,
# with the policies that read them (a policy may read a view without reading the column).
VIEWS = """
    select distinct v.oid, pg_catalog.format('%%I.%%I', n.nspname, v.relname) as name,
           pg_catalog.pg_get_viewdef(v.oid) as definition, v.reloptions as options,
           pg_catalog.pg_get_userbyid(v.relowner) as owner,
           pg_catalog.obj_description(v.oid, 'pg_class') as comment,
           array(select pg_catalog.format('grant %%s on table %%I.%%I to %%s%%s', a.privilege_type, n.nspname,
                                          v.relname,
                                          case a.grantee when 0 then 'public'
                                               else pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(a.grantee)) end,
                                          case when a.is_grantable then ' with grant option' else '' end)
                 from pg_catalog.aclexplode(v.relacl) with ordinality a
                 where a.grantee <> v.relowner order by a.ordinality) as grants
    from pg_catalog.pg_depend d join pg_catalog.pg_rewrite w on w.oid = d.objid
    join pg_catalog.pg_class v on v.oid = w.ev_class join pg_catalog.pg_namespace n on n.oid = v.relnamespace
    where d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass and v.relkind = 'v'
      and d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass
      and (d.refobjid, d.refobjsubid) in (select * from unnest(%(relids)s::oid[], %(attnums)s::int2[]))
    order by 2
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

# Partial indexes on those columns: ALTER COLUMN TYPE would rebuild them under the lock.
PARTIAL_INDEXES = """
    select pg_catalog.quote_ident(n.nspname) as schema, pg_catalog.quote_ident(ic.relname) as name,
           pg_catalog.quote_ident(left(ic.relname, 63 - length(%(suffix)s)) || %(suffix)s) as stand_in_name,
           pg_catalog.pg_get_indexdef(i.indexrelid) as definition,
           i.indisunique and not i.indnullsnotdistinct and not (0 = any(i.indkey::int2[])) as plain_unique,
           pg_catalog.pg_get_expr(i.indpred, i.indrelid) as predicate,
           array(select pg_catalog.quote_ident(a.attname) from unnest((i.indkey::int2[])[0:i.indnkeyatts - 1]) k(attnum)
                 join pg_catalog.pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum) as key_columns
    from pg_catalog.pg_index i join pg_catalog.pg_class ic on ic.oid = i.indexrelid
    join pg_catalog.pg_namespace n on n.oid = ic.relnamespace
    where i.indpred is not null and exists (
      select from pg_catalog.pg_depend d join unnest(%(relids)s::oid[], %(attnums)s::int2[]) x(relid, attnum)
        on d.refobjid = x.relid and d.refobjsubid = x.attnum
      where d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass and d.objid = i.indexrelid)
    order by 1, 2
"""

STAND_IN = "__clear_stats"  # suffix of a stand-in's name

# Stand-ins left by a run that stopped half-way (their comment is the original's definition).
STAND_INS = r"""
    select pg_catalog.quote_ident(n.nspname) as schema, pg_catalog.quote_ident(c.relname) as name, i.indisvalid as valid,
           pg_catalog.obj_description(c.oid, 'pg_class') as definition
    from pg_catalog.pg_index i join pg_catalog.pg_class c on c.oid = i.indexrelid
    join pg_catalog.pg_class t on t.oid = i.indrelid join pg_catalog.pg_namespace n on n.oid = c.relnamespace
    where n.nspname = 'public' and t.relname like %(tables)s and c.relname like %(stand_ins)s
    order by 2
"""

VALID_INDEXES = """
    select pg_catalog.quote_ident(n.nspname) || '.' || pg_catalog.quote_ident(c.relname)
    from pg_catalog.pg_index i join pg_catalog.pg_class c on c.oid = i.indexrelid
    join pg_catalog.pg_namespace n on n.oid = c.relnamespace where i.indisvalid
"""

INDEX_VALID = """
    select i.indisvalid from pg_catalog.pg_index i where i.indexrelid = pg_catalog.to_regclass(%(index)s)
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
class Swap:
    """A partial unique index that a plain unique stand-in replaces while the columns change.
    Names are quoted as PostgreSQL quotes them (quote_ident)."""

    schema: str
    name: str
    stand_in_name: str
    definition: str  # pg_get_indexdef of the original

    @property
    def index(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def stand_in(self) -> str:
        return f"{self.schema}.{self.stand_in_name}"

    def build_stand_in(self) -> list[str]:
        on = self.definition.split(" ON ", 1)[1].rsplit(" WHERE ", 1)[0]  # an index goes in its table's schema
        return [f"create unique index concurrently {self.stand_in_name} on {on}",
                f"comment on index {self.stand_in} is {_literal(self.definition)}"]

    @property
    def restore(self) -> str:
        return self.definition.replace(" INDEX ", " INDEX CONCURRENTLY ", 1)


@dataclass(frozen=True)
class Plan:
    """What `clear` would run: stand-ins, the locked transaction, then the work that does
    not block (partial indexes rebuilt, stand-ins dropped, constraints validated)."""

    columns: list[StaleColumn]
    locks: list[str]
    statements: list[str]
    validations: list[Constraint]
    swaps: list[Swap] = field(default_factory=list)
    policies: list[str] = field(default_factory=list)
    constraints: list[str] = field(default_factory=list)
    unfinished: list[str] = field(default_factory=list)  # a stopped run's remaining index work

    @property
    def empty(self) -> bool:
        return not self.statements and not self.validations and not self.unfinished

    def script(self, lock_timeout: str) -> str:
        """The SQL, as a reviewer (or psql) would read it."""
        out = [s + ";" for s in self.unfinished]
        out += [s + ";" for swap in self.swaps for s in swap.build_stand_in()]
        if self.statements:
            out += ["begin;", f"set local lock_timeout = '{lock_timeout}';",
                    f"lock table {', '.join(self.locks)} in access exclusive mode;",
                    *[s + ";" for s in self.statements], "commit;"]
        out += [s + ";" for swap in self.swaps for s in (swap.restore, f"drop index concurrently {swap.stand_in}")]
        out += [k.validate + ";" for k in self.validations]
        return "\n".join(out) + "\n"


@dataclass
class Cleared:
    columns: list[str] = field(default_factory=list)
    policies: list[str] = field(default_factory=list)  # dropped and recreated
    constraints: list[str] = field(default_factory=list)  # dropped and added back NOT VALID
    indexes: list[str] = field(default_factory=list)  # partial indexes rebuilt concurrently behind a stand-in
    finished: list[str] = field(default_factory=list)  # what an earlier, interrupted run had left
    lock_wait_ms: float = 0.0
    lock_held_ms: float = 0.0  # ACCESS EXCLUSIVE, from the lock to the commit
    validated: list[str] = field(default_factory=list)
    background_ms: float = 0.0  # stand-ins, index builds, validations: reads and writes go on
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


def _only_leaves_out_nulls(index: dict[str, Any]) -> bool:
    """The predicate is `col IS NOT NULL [AND ...]` over key columns (not INCLUDE ones), so a
    unique index without it (NULLs distinct) enforces the same uniqueness."""
    tested = re.findall(r"\(([^()\s]+) IS NOT NULL\)", index["predicate"])
    rest = re.sub(r"\(([^()\s]+) IS NOT NULL\)|AND|[()\s]", "", index["predicate"])
    return bool(index["plain_unique"] and tested and not rest and set(tested) <= set(index["key_columns"]))


def _index_name(definition: str) -> str:
    """The name in `CREATE [UNIQUE] INDEX <name> ON ...`, quoted as PostgreSQL quotes it."""
    return definition.split(" INDEX ", 1)[1].split(" ON ", 1)[0]


def _unfinished(conn: psycopg.Connection[Any], planned: set[str]) -> list[str]:
    """What a run that stopped half-way left to do with its stand-ins (one for an index about
    to be swapped again, `planned`, is kept and reused)."""
    out = []
    for row in _rows(conn, STAND_INS, {"tables": TABLES, "stand_ins": "%" + STAND_IN.replace("_", "\\_")}):
        drop = f"drop index concurrently {row['schema']}.{row['name']}"
        if not row["valid"]:
            out.append(drop)  # its build failed: the original was never touched
            continue
        if row["definition"] is None:
            raise StatsError(f"{row['schema']}.{row['name']} stands in for an index whose definition is lost (no "
                             "comment): recreate that index by hand, then drop the stand-in")
        swap = Swap(row["schema"], _index_name(row["definition"]), row["name"], row["definition"])
        original = conn.execute(INDEX_VALID, {"index": swap.index}).fetchone()
        if original is not None and original[0]:
            if swap.stand_in not in planned:
                out.append(drop)  # the original is back (or was never dropped)
            continue
        if original is not None:  # a concurrent build of the original that failed
            out.append(f"drop index concurrently {swap.index}")
        out += [swap.restore, drop]
    return out


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


def _view_sql(v: dict[str, Any]) -> list[str]:
    """The view as it was: definition, options, owner, comment and exactly its grants (a
    new relation may get default privileges; they are taken back first)."""
    options = f" with ({', '.join(v['options'])})" if v["options"] else ""
    out = [f"create view {v['name']}{options} as {v['definition'].rstrip().rstrip(';')}",
           f"alter view {v['name']} owner to {sql.Identifier(v['owner']).as_string(None)}",
           f"revoke all on table {v['name']} from public"]
    out.append(
        "do $$ declare r record; begin for r in select distinct a.grantee from pg_catalog.pg_class c, "
        f"pg_catalog.aclexplode(c.relacl) a where c.oid = {_literal(v['name'])}::pg_catalog.regclass "
        "and a.grantee not in (0, c.relowner) loop execute pg_catalog.format('revoke all on table %s from %I', "
        f"{_literal(v['name'])}, pg_catalog.pg_get_userbyid(r.grantee)); end loop; end $$")
    out += list(v["grants"])
    if v["comment"] is not None:
        out.append(f"comment on view {v['name']} is {_literal(v['comment'])}")
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
        views = _rows(conn, VIEWS, keys) if columns else []
        policies = _rows(conn, POLICIES, {**keys, "views": [v["oid"] for v in views]}) if columns else []
        triggers = _rows(conn, TRIGGERS, keys) if columns else []
        checks = _rows(conn, CHECKS, keys) if columns else []
        partial = _rows(conn, PARTIAL_INDEXES, {**keys, "suffix": STAND_IN}) if columns else []
        unvalidated = _rows(conn, UNVALIDATED, {"tables": TABLES})
        swaps = [Swap(i["schema"], i["name"], i["stand_in_name"], i["definition"])
                 for i in partial if _only_leaves_out_nulls(i)]
        unfinished = _unfinished(conn, {swap.stand_in for swap in swaps})
    statements = [f"drop policy {p['name']} on {p['table']}" for p in policies]
    statements += [f"drop trigger {t['name']} on {t['table']}" for t in triggers]
    statements += [f"drop view {v['name']}" for v in views]
    for table, items in _by_table(checks).items():
        statements.append(f"alter table {table} " + ", ".join(f"drop constraint {k['name']}" for k in items))
    statements += [f"drop index {swap.index}" for swap in swaps]
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
    for v in views:
        statements += _view_sql(v)
    for p in policies:
        statements += _policy_sql(p)
    for t in triggers:
        statements.append(t["definition"])
        if t["comment"] is not None:
            statements.append(f"comment on trigger {t['name']} on {t['table']} is {_literal(t['comment'])}")
    validations = [Constraint(k["table"], k["name"]) for k in checks if k["validated"]]
    validations += [k for k in (Constraint(u["table"], u["name"]) for u in unvalidated) if k not in validations]
    return Plan(
        [StaleColumn(c["table"], c["column"]) for c in columns],
        sorted({c["table"] for c in columns} | {p["table"] for p in policies}), statements, validations, swaps,
        [f"{p['name']} on {p['table']}" for p in policies], [Constraint(k["table"], k["name"]).label for k in checks],
        unfinished,
    )


def _timeouts(conn: psycopg.Connection[Any], lock_timeout: str, statement_timeout: str) -> None:
    conn.execute("select set_config('lock_timeout', %s, false), set_config('statement_timeout', %s, false)",
                 (lock_timeout, statement_timeout))


def _locked_part(conn: psycopg.Connection[Any], lock_timeout: str, result: Cleared,
                 progress: Progress) -> tuple[Plan, float]:
    """Lock, re-read the catalogs under the lock, run the plan; the caller commits.
    Returns what ran and when the lock was granted."""
    began = time.perf_counter()
    first = plan(conn)
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
    result.indexes = [swap.index for swap in current.swaps]
    return current, locked


def _background(conn: psycopg.Connection[Any], statements: Sequence[str], progress: Progress,
                lock_timeout: str = "0") -> None:
    """Work that does not block reads or writes (concurrent index builds, validations): by
    default no lock_timeout (it may wait for long transactions), only the statement timeout."""
    conn.execute("select set_config('lock_timeout', %s, false)", (lock_timeout,))
    for statement in statements:
        progress(statement)
        try:
            conn.execute(statement)  # type: ignore[arg-type]
        except psycopg.Error as exc:
            raise StatsError(
                f"`{statement}` failed: {str(exc).strip()}. The statistics are cleared or untouched and every rule "
                "holds; run `dbtool clear-stats` again to finish the remaining index and constraint work") from None


def clear(conn: psycopg.Connection[Any], *, lock_timeout: str = "2s", statement_timeout: str = "5min",
          progress: Progress = quiet) -> Cleared:
    """Remove the stale statistics of our tables (see the module's docstring for how).
    `conn` must be in autocommit mode (concurrent index builds run outside transactions)."""
    result = Cleared()
    began = time.perf_counter()
    _timeouts(conn, lock_timeout, statement_timeout)
    try:
        first = plan(conn)
        _background(conn, first.unfinished, progress)
        result.finished = first.unfinished
        first = plan(conn) if first.unfinished else first
        if first.statements:
            built = {r[0] for r in conn.execute(VALID_INDEXES)}  # stand-ins a stopped run left ready
            _background(conn, [s for swap in first.swaps if swap.stand_in not in built for s in swap.build_stand_in()],
                        progress)
            _timeouts(conn, lock_timeout, statement_timeout)
            try:
                with conn.transaction():
                    conn.execute("set local search_path = ''")
                    done, locked = _locked_part(conn, lock_timeout, result, progress)
            except (StatsError, psycopg.Error) as exc:
                try:  # whatever held the tables may hold up this too: wait no longer than for the lock
                    _background(conn, [f"drop index concurrently {swap.stand_in}" for swap in first.swaps], progress,
                                lock_timeout)
                except StatsError:
                    left = ", ".join(swap.stand_in for swap in first.swaps)
                    raise StatsError(f"{exc} Left in place: {left}, a stand-in with the same unique rule as the index it "
                                     "is named after; the next `dbtool clear-stats` reuses or removes it") from None
                raise
            result.lock_held_ms = (time.perf_counter() - locked) * 1000
            progress(f"cleared {len(result.columns)} column(s); ACCESS EXCLUSIVE held {result.lock_held_ms:.0f} ms")
            _background(conn, [s for swap in done.swaps for s in (swap.restore, f"drop index concurrently {swap.stand_in}")],
                        progress)
            validations = done.validations
        else:
            validations = first.validations
        _background(conn, [k.validate for k in validations], progress)
        result.validated = [k.label for k in validations]
    finally:
        conn.execute("reset lock_timeout")
        conn.execute("reset statement_timeout")
    result.background_ms = (time.perf_counter() - began) * 1000 - result.lock_wait_ms - result.lock_held_ms
    result.remaining = [c.name for c in stale(conn)]
    return result


def plan_for(db: Database) -> Plan:
    """`clear-stats --dry-run`: what `clear_in` would do to `db`, read as the owner role."""
    with db.connect() as conn:
        return plan(conn)


def clear_in(db: Database, cfg: StatsConfig, progress: Progress = quiet) -> Cleared:
    """`clear-stats`: `clear` on `db` as the owner role, with the resolved timeouts."""
    with db.connect() as conn:
        return clear(conn, lock_timeout=cfg.lock_timeout, statement_timeout=cfg.statement_timeout, progress=progress)
