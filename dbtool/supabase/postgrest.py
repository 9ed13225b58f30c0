"""Running SQL exactly as PostgREST runs a request.

Per request PostgREST opens one transaction (READ ONLY for GET and for STABLE/IMMUTABLE
functions), runs one `select set_config(...)` with every value local to the transaction —
search_path, the role's own settings, `role`, `request.jwt.claims` (always carrying
`role`), `request.method`, `request.path`, `request.headers`, `request.cookies` — then the
query, and commits or rolls back. Functions are called with named arguments.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from dbtool.supabase.personas import Persona

SEARCH_PATH = '"public", "extensions"'  # Supabase: db-schemas public, db-extra-search-path public, extensions

_role_settings: weakref.WeakKeyDictionary[psycopg.Connection[Any], dict[str, list[tuple[str, str]]]] = (
    weakref.WeakKeyDictionary()
)


@dataclass(frozen=True)
class Outcome:
    """What a request got back: rows, or the database error PostgREST turns into HTTP."""

    ok: bool
    rows: list[dict[str, Any]]
    sqlstate: str | None = None
    message: str | None = None
    rowcount: int = 0
    returned: bool = False  # the statement returned a result set (a SELECT, RETURNING, a function)
    hint: str | None = None  # PostgREST's error body carries it too (e.g. `retry after N s` with PT429)

    def describe(self) -> str:
        if not self.ok:
            return f"{self.sqlstate} {self.message}"
        return f"{len(self.rows)} row(s)" if self.returned else f"{self.rowcount} row(s) affected"


def role_settings(conn: psycopg.Connection[Any], role: str) -> list[tuple[str, str]]:
    """The role's own settings (ALTER ROLE ... SET), which PostgREST applies on each request."""
    cache = _role_settings.setdefault(conn, {})
    if role not in cache:
        rows = conn.execute(
            """
            select split_part(s, '=', 1), substr(s, strpos(s, '=') + 1)
            from pg_catalog.pg_db_role_setting d
            cross join lateral unnest(d.setconfig) s
            where d.setrole = (select oid from pg_catalog.pg_roles where rolname = %s)
              and d.setdatabase in (0, (select oid from pg_catalog.pg_database where datname = current_database()))
            order by d.setdatabase
            """,
            (role,),
        ).fetchall()
        cache[role] = [(k, v) for k, v in rows]
    return cache[role]


def claims_json(persona: Persona) -> str:
    claims = dict(persona.claims)
    claims["role"] = persona.role
    return json.dumps(claims)


@contextmanager
def request(
    conn: psycopg.Connection[Any],
    persona: Persona,
    *,
    method: str = "GET",
    path: str = "/",
    headers: Mapping[str, str] | None = None,
    read_only: bool | None = None,
    commit: bool = False,
) -> Iterator[psycopg.Connection[Any]]:
    """One PostgREST request: a transaction (a savepoint if one is open) with its settings.

    Rolled back at the end unless `commit` is true (only at top level: a released savepoint
    would leak the request's role and claims into the enclosing transaction); errors propagate.
    """
    if commit and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise ValueError("commit=True needs a connection outside any transaction")
    if read_only is None:
        read_only = method in ("GET", "HEAD")
    settings = role_settings(conn, persona.role)
    hdrs = {"accept": "application/json", "user-agent": "dbtool-postgrest-emulation",
            "authorization": "Bearer <jwt>", **{k.lower(): v for k, v in (headers or {}).items()}}
    parts = [sql.SQL("set_config('search_path', {}, true)").format(SEARCH_PATH)]
    parts += [sql.SQL("set_config({}, {}, true)").format(k, v) for k, v in settings]
    parts += [
        sql.SQL("set_config('role', {}, true)").format(persona.role),
        sql.SQL("set_config('request.jwt.claims', {}, true)").format(claims_json(persona)),
        sql.SQL("set_config('request.method', {}, true)").format(method),
        sql.SQL("set_config('request.path', {}, true)").format(path),
        sql.SQL("set_config('request.headers', {}, true)").format(json.dumps(hdrs)),
        sql.SQL("set_config('request.cookies', {}, true)").format("{}"),
    ]
    with conn.transaction(force_rollback=not commit):
        if read_only:
            conn.execute("set local transaction_read_only = on")
        conn.execute(sql.SQL("select ") + sql.SQL(", ").join(parts))
        yield conn


def call(
    conn: psycopg.Connection[Any],
    persona: Persona,
    function: str,
    args: Mapping[str, Any],
    *,
    volatile: bool = True,
    commit: bool = False,
    types: Mapping[str, str] | None = None,
) -> Outcome:
    """POST /rpc/<function> with a JSON body: `select * from public.fn(arg := value, ...)`."""
    named = [
        sql.SQL("{} := {}::{}").format(sql.Identifier(k), sql.Placeholder(), sql.SQL((types or {}).get(k, "text")))
        for k in args
    ]
    query = sql.SQL("select * from {}.{}({})").format(
        sql.Identifier("public"), sql.Identifier(function), sql.SQL(", ").join(named)
    )
    return run(conn, persona, query, list(args.values()), method="POST", path=f"/rpc/{function}",
               read_only=not volatile, commit=commit)


def run(
    conn: psycopg.Connection[Any],
    persona: Persona,
    query: str | sql.Composable,
    params: Sequence[Any] | None = None,
    *,
    method: str = "GET",
    path: str = "/",
    read_only: bool | None = None,
    commit: bool = False,
) -> Outcome:
    """Run one statement inside a PostgREST-style request and capture rows or the error."""
    try:
        with request(conn, persona, method=method, path=path, read_only=read_only, commit=commit) as c:
            cur = c.cursor(row_factory=psycopg.rows.dict_row)
            cur.execute(query, params)  # type: ignore[arg-type]
            returned = cur.description is not None
            rows = cur.fetchall() if returned else []
            rowcount = max(cur.rowcount, 0)
        return Outcome(True, rows, rowcount=rowcount, returned=returned)
    except psycopg.Error as exc:
        diag = exc.diag
        return Outcome(False, [], diag.sqlstate, diag.message_primary, hint=diag.message_hint)


def read_query(table: str, order_by: str, *, count: bool, where: str = "", limit: str = "$1",
               offset: str = "$2") -> str:
    """The statement PostgREST sends for `GET /<table>?limit=..&offset=..&order=<col>.desc`
    (with `Prefer: count=exact` when `count`; `where` as filters would add it)."""
    qualified = f'"public"."{table}"'
    where = f" WHERE {where}" if where else ""
    count_cte = f", pgrst_source_count AS (SELECT 1 FROM {qualified}{where})" if count else ""
    total = "(SELECT pg_catalog.count(*) FROM pgrst_source_count)" if count else "null::bigint"
    return (
        f"WITH pgrst_source AS (SELECT {qualified}.* FROM {qualified}{where} "
        f'ORDER BY {qualified}."{order_by}" DESC LIMIT {limit} OFFSET {offset}){count_cte} '
        f"SELECT {total} AS total_result_set, pg_catalog.count(_postgrest_t) AS page_total, "
        "coalesce(json_agg(_postgrest_t), '[]') AS body, "
        "nullif(current_setting('response.headers', true), '') AS response_headers, "
        "nullif(current_setting('response.status', true), '') AS response_status, "
        "'' AS response_inserted FROM (SELECT * FROM pgrst_source) _postgrest_t"
    )


def planned_count(conn: psycopg.Connection[Any], persona: Persona, table: str, filters: Mapping[str, Any]) -> Outcome:
    """`GET /<table>?<column>=eq.<value>` with `Prefer: count=planned`: PostgREST explains its
    count query (`SELECT 1 FROM <table> WHERE <filters>`) in the request's transaction, as the
    caller, and answers with the top node's "Plan Rows". One row: {"planned": <estimate>}."""
    qualified = sql.SQL("{}.{}").format(sql.Identifier("public"), sql.Identifier(table))
    where = sql.SQL(" AND ").join(
        sql.SQL("{}.{} = {}").format(qualified, sql.Identifier(column), sql.Placeholder()) for column in filters)
    query = sql.SQL("EXPLAIN (FORMAT JSON) SELECT 1 FROM {}").format(qualified)
    if filters:
        query += sql.SQL(" WHERE ") + where
    got = run(conn, persona, query, list(filters.values()), path=f"/{table}")
    if not got.ok:
        return got
    plan = got.rows[0]["QUERY PLAN"][0]["Plan"]
    return Outcome(True, [{"planned": int(plan["Plan Rows"])}], returned=True)


def insert_query(table: str, columns: Mapping[str, str]) -> str:
    """The statement PostgREST sends for `POST /<table>` with a JSON body (an object or an
    array of any length: one INSERT ... SELECT over json_to_recordset, in one statement);
    `columns` maps each key of the body to its column type, `%s` takes the body as JSON."""
    qualified = f'"public"."{table}"'
    names = ", ".join(f'"{c}"' for c in columns)
    typed = ", ".join(f'"{c}" {t}' for c, t in columns.items())
    picked = ", ".join(f'"pgrst_body"."{c}"' for c in columns)
    return (
        f"WITH pgrst_source AS (INSERT INTO {qualified}({names}) SELECT {picked} "
        "FROM (SELECT %s::json AS json_data) pgrst_payload, "
        f"LATERAL (SELECT {names} FROM json_to_recordset(pgrst_payload.json_data) AS _({typed}) ) pgrst_body "
        "RETURNING 1) "
        "SELECT '' AS total_result_set, pg_catalog.count(_postgrest_t) AS page_total, array[]::text[] AS header, "
        "''::text AS body, nullif(current_setting('response.headers', true), '') AS response_headers, "
        "nullif(current_setting('response.status', true), '') AS response_status, "
        "'' AS response_inserted FROM (SELECT * FROM pgrst_source) _postgrest_t"
    )
