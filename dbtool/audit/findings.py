"""Static findings: read the catalogs (in a read-only transaction) and report RLS, grant and
SECURITY DEFINER problems, each with a severity, the object, why it matters and the fix.

Expressions are read as PostgreSQL deparses them with an empty search_path, so every name
is schema-qualified and the checks see exactly what the server runs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import psycopg

from dbtool.audit.config import SUPABASE_SCHEMAS, AuditConfig
from dbtool.ops import stats

if TYPE_CHECKING:
    from dbtool.policy.matrix import Cell

SEVERITIES = ("info", "warn", "error")
API_ROLES = ("anon", "authenticated")
COMMANDS = {"r": "select", "a": "insert", "w": "update", "d": "delete", "*": "all"}


@dataclass(frozen=True)
class Finding:
    code: str
    severity: str
    object: str
    message: str
    fix: str
    justification: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def at_least(findings: list[Finding], level: str) -> list[Finding]:
    floor = SEVERITIES.index(level)
    return [f for f in findings if SEVERITIES.index(f.severity) >= floor]


# --- per-row evaluation in policies ---------------------------------------------------------

CALLS = re.compile(r"\b(auth\.(?:uid|jwt|role|email)\(\)|current_setting\(|realtime\.topic\(\))")


def _scan(text: str) -> Iterator[tuple[int, str, int]]:
    """(index, char, depth) outside string literals."""
    depth = 0
    quoted = False
    for i, c in enumerate(text):
        if c == "'":
            quoted = not quoted
        if quoted or c == "'":
            continue
        if c == "(":
            depth += 1
        yield i, c, depth
        if c == ")":
            depth -= 1


def once_per_statement_spans(expr: str) -> list[tuple[int, int]]:
    """Spans of scalar subqueries without FROM, `( SELECT f() AS f)`: the planner runs each
    once per statement (an InitPlan) whatever the row."""
    spans = []
    for match in re.finditer(r"\(\s*SELECT\b", expr):
        start = match.start()
        end = None
        top_from = False
        base = None
        for i, c, depth in _scan(expr[start:]):
            if base is None:
                base = depth
            if c == ")" and depth == base:
                end = start + i
                break
            if depth == base and expr.startswith("FROM", start + i) and expr[start + i - 1] == " ":
                top_from = True
        if end is not None and not top_from:
            spans.append((start, end))
    return spans


def per_row_calls(expr: str | None) -> list[str]:
    """auth.*() / current_setting() / realtime.topic() calls not wrapped to run once."""
    if not expr:
        return []
    spans = once_per_statement_spans(expr)
    return [m.group(1) for m in CALLS.finditer(expr) if not any(a < m.start() < b for a, b in spans)]


# --- checks ---------------------------------------------------------------------------------

Check = Callable[[psycopg.Connection[Any], AuditConfig], list[Finding]]
CHECKS: list[Check] = []


def check(func: Check) -> Check:
    CHECKS.append(func)
    return func


def _rows(conn: psycopg.Connection[Any], query: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=psycopg.rows.dict_row)
    return cur.execute(query, params).fetchall()


def _params(cfg: AuditConfig) -> dict[str, Any]:
    return {"exposed": list(cfg.exposed_schemas), "scope": list(cfg.scope), "owned": list(cfg.owned_schemas),
            "internal": list(SUPABASE_SCHEMAS)}


TABLES_IN_SCOPE = """
    select c.oid, format('%%I.%%I', n.nspname, c.relname) as name, n.nspname as schema, c.relrowsecurity as rls,
           n.nspname = any(%(exposed)s) as exposed,
           (select count(*) from pg_catalog.pg_policy p where p.polrelid = c.oid) as policies,
           exists (select from unnest(array['anon', 'authenticated']) r
                   where has_table_privilege(r, c.oid, 'select,insert,update,delete')) as api_access
    from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
    where c.relkind in ('r', 'p') and not c.relispartition and n.nspname = any(%(scope)s)
      and not n.nspname = any(%(internal)s)
      and not exists (select from pg_catalog.pg_depend d where d.objid = c.oid and d.deptype = 'e')
"""


@check
def rls_disabled(conn: psycopg.Connection[Any], cfg: AuditConfig) -> list[Finding]:
    out = []
    for t in _rows(conn, TABLES_IN_SCOPE, _params(cfg)):
        if t["rls"]:
            continue
        if t["policies"]:
            out.append(Finding(
                "policy_exists_rls_disabled", "error", t["name"],
                f"{t['policies']} policy(ies) exist but row level security is off, so they are ignored",
                f"alter table {t['name']} enable row level security;"))
        if t["exposed"]:
            out.append(Finding(
                "rls_disabled", "error" if t["api_access"] else "warn", t["name"],
                "row level security is off on a table PostgREST exposes"
                + ("; anon or authenticated hold privileges on it, so every row is open to them" if t["api_access"]
                   else " (no API role holds privileges on it today)"),
                f"alter table {t['name']} enable row level security; then add policies for the access you mean"))
    return out


@check
def rls_enabled_no_policy(conn: psycopg.Connection[Any], cfg: AuditConfig) -> list[Finding]:
    return [Finding("rls_enabled_no_policy", "info", t["name"],
                    "row level security is on with no policy: only roles that bypass RLS can use the table",
                    "fine if intended (service_role only); otherwise add policies")
            for t in _rows(conn, TABLES_IN_SCOPE, _params(cfg)) if t["rls"] and not t["policies"]]


POLICIES = """
    select format('%%I.%%I', n.nspname, c.relname) as table_name, p.polname as name, p.polpermissive as permissive,
           p.polcmd as cmd, pg_catalog.pg_get_expr(p.polqual, p.polrelid) as using_expr,
           pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid) as check_expr,
           case when p.polroles = '{0}' then array['public']
                else array(select r.rolname::text from pg_catalog.pg_roles r where r.oid = any(p.polroles)
                           order by 1) end as roles
    from pg_catalog.pg_policy p
    join pg_catalog.pg_class c on c.oid = p.polrelid join pg_catalog.pg_namespace n on n.oid = c.relnamespace
    where (n.nspname = any(%(scope)s) and not n.nspname = any(%(internal)s))
       or (n.nspname, c.relname) = ('realtime', 'messages')
    order by 1, 2
"""


def policies(conn: psycopg.Connection[Any], cfg: AuditConfig) -> list[dict[str, Any]]:
    return _rows(conn, POLICIES, _params(cfg))


def _always_true(expr: str | None) -> bool:
    return expr is not None and re.sub(r"\s", "", expr.lower()) in ("true", "(true)", "1=1", "(1=1)")


def _label(p: dict[str, Any]) -> str:
    return f"policy {p['name']} on {p['table_name']}"


@check
def write_policy_always_true(conn: psycopg.Connection[Any], cfg: AuditConfig) -> list[Finding]:
    out = []
    for p in policies(conn, cfg):
        api = [r for r in p["roles"] if r in ("public", *API_ROLES)]
        if not p["permissive"] or not api or p["cmd"] == "r":
            continue
        open_using = p["cmd"] in ("w", "d", "*") and (_always_true(p["using_expr"]) or p["using_expr"] is None)
        open_check = p["cmd"] in ("a", "w", "*") and (
            _always_true(p["check_expr"]) or (p["check_expr"] is None and (p["cmd"] == "a" or open_using)))
        if open_using or open_check:
            anyone = "public" in api or "anon" in api
            out.append(Finding(
                "write_policy_always_true", "error" if anyone else "warn", _label(p),
                f"{COMMANDS[p['cmd']]} for {', '.join(api)} is allowed on every row"
                + (" (using true)" if open_using else "") + (" (with check true / missing)" if open_check else ""),
                "restrict it to the rows the caller owns, e.g. using (owner_id = (select auth.uid()))"))
    return out


@check
def per_row_auth_call(conn: psycopg.Connection[Any], cfg: AuditConfig) -> list[Finding]:
    out = []
    for p in policies(conn, cfg):
        calls = sorted(set(per_row_calls(p["using_expr"]) + per_row_calls(p["check_expr"])))
        if calls:
            out.append(Finding(
                "per_row_auth_call", "warn", _label(p),
                f"{', '.join(calls)} is evaluated for every row (not wrapped in a scalar subquery)",
                "wrap each call, e.g. user_id = (select auth.uid()): Postgres then evaluates it once per statement"))
    return out


@check
def user_metadata_in_policy(conn: psycopg.Connection[Any], cfg: AuditConfig) -> list[Finding]:
    return [Finding("user_metadata_in_policy", "error", _label(p),
                    "the policy reads user_metadata, which every user can edit about themselves",
                    "decide on app_metadata (set by the backend) or on tables the user cannot write")
            for p in policies(conn, cfg) if "user_metadata" in f"{p['using_expr']} {p['check_expr']}"]


@check
def multiple_permissive_policies(conn: psycopg.Connection[Any], cfg: AuditConfig) -> list[Finding]:
    groups: dict[tuple[str, str, str], list[str]] = {}
    for p in policies(conn, cfg):
        if not p["permissive"]:
            continue
        roles = list(API_ROLES) if "public" in p["roles"] else [r for r in p["roles"] if r in API_ROLES]
        commands = ["select", "insert", "update", "delete"] if p["cmd"] == "*" else [COMMANDS[p["cmd"]]]
        for role in roles:
            for command in commands:
                groups.setdefault((p["table_name"], role, command), []).append(p["name"])
    return [Finding("multiple_permissive_policies", "warn", table,
                    f"{len(names)} permissive policies for {role} {command}: {', '.join(names)}; every one runs "
                    "for every row and any of them grants access",
                    "merge them into one policy per role and command")
            for (table, role, command), names in sorted(groups.items()) if len(names) > 1]


# Expressions that decide by who the caller is: their id or claims, our membership helpers
# (chat_private), or a role test. `auth.uid() is not null` only says "signed in".
_CALLER_BOUND = re.compile(r"auth\.(?:uid|jwt)\(\)|is_anonymous|request\.jwt\.claim|chat_private\.|pg_has_role")
_SIGNED_IN_ONLY = re.compile(r"\(\s*SELECT auth\.uid\(\) AS uid\)\s+IS NOT NULL|auth\.uid\(\)\s+IS NOT NULL"
                             r"|\(\s*SELECT auth\.role\(\) AS role\)\s*=\s*'authenticated'::text"
                             r"|auth\.role\(\)\s*=\s*'authenticated'::text")


def _always_false(expr: str | None) -> bool:
    return expr is not None and re.sub(r"\s", "", expr.lower()) in ("false", "(false)")


@check
def policy_admits_anonymous(conn: psycopg.Connection[Any], cfg: AuditConfig) -> list[Finding]:
    """Anonymous Sign-Ins give guests the authenticated role: a policy for authenticated that
    never looks at who the caller is (or only that they signed in) lets every anonymous user in."""
    rls_on = {t["name"] for t in _rows(conn, TABLES_IN_SCOPE, _params(cfg)) if t["rls"]}
    owned = tuple(f"{schema}." for schema in cfg.owned_schemas)
    out = []
    for p in policies(conn, cfg):
        if not p["permissive"] or not ({"public", "authenticated"} & set(p["roles"])):
            continue
        if p["table_name"] not in rls_on or not p["table_name"].startswith(owned):
            continue  # RLS off (reported above) or not our table (realtime: our guards hold chat topics)
        exprs = [e for e in (p["using_expr"], p["check_expr"]) if e is not None]
        if not exprs or all(_always_false(e) for e in exprs):
            continue
        write = p["cmd"] != "r"
        if write and any(_always_true(e) for e in exprs):
            continue  # write_policy_always_true reports it
        if any(_CALLER_BOUND.search(_SIGNED_IN_ONLY.sub("", e)) for e in exprs):
            continue
        out.append(Finding(
            "policy_admits_anonymous", "error" if write else "warn", _label(p),
            f"{COMMANDS[p['cmd']]} for {', '.join(p['roles'])} does not depend on who the caller is (at most that "
            "they signed in): with Anonymous Sign-Ins every anonymous user passes it",
            "tie it to the caller, e.g. owner_id = (select auth.uid()), or refuse anonymous users: "
            "and not coalesce(((select auth.jwt()) ->> 'is_anonymous')::boolean, false)"))
    return out


# What the contract lets a signed-in user without a link, or a guest whose session ended, do
# (DESIGN §8): redeem a link, and read empty results. Anything else they manage is a leak.
ANONYMOUS_PERSONAS = ("anonymous, no link", "ended guest")
ANONYMOUS_MAY = ("redeem_chat_link()",)


def anonymous_access(cells: list[Cell]) -> list[Finding]:
    """Findings from the measured matrix (dbtool.policy.matrix.Cell): every cell where an anonymous
    user without a link or an ended guest read a row, changed one, or passed a chat topic's
    Realtime check. Catches what no static reading can, e.g. a helper function gone wrong."""
    out = []
    for c in cells:
        if c.persona not in ANONYMOUS_PERSONAS or not c.allowed:
            continue
        if c.object in ANONYMOUS_MAY and c.persona == "anonymous, no link":
            continue
        if c.kind == "realtime" and not c.object.startswith("realtime chat:"):
            continue
        if c.kind != "realtime" and not c.rows:
            continue
        out.append(Finding(
            "anonymous_user_admitted", "error", f"{c.object} {c.operation}",
            f"measured as {c.persona}: {c.short} (an anonymous user with no active guest session must get nothing)",
            "find the policy or function that admits it (dbtool audit --format markdown shows the whole matrix) "
            "and tie it to the caller's membership"))
    return out


@check
def policy_for_public(conn: psycopg.Connection[Any], cfg: AuditConfig) -> list[Finding]:
    return [Finding("policy_for_public", "warn", _label(p),
                    "a permissive policy without TO applies to every role, anon included",
                    f"scope it: alter policy {p['name']} on {p['table_name']} to authenticated;")
            for p in policies(conn, cfg)
            if p["permissive"] and p["roles"] == ["public"] and p["table_name"] != "realtime.messages"]


@check
def realtime_policy_unscoped(conn: psycopg.Connection[Any], cfg: AuditConfig) -> list[Finding]:
    out = []
    for p in policies(conn, cfg):
        if p["table_name"] != "realtime.messages" or not p["permissive"]:
            continue
        text = f"{p['using_expr'] or ''} {p['check_expr'] or ''}"
        if re.search(r"\btopic\b", text):
            continue
        wide = _always_true(p["using_expr"]) or _always_true(p["check_expr"])
        out.append(Finding(
            "realtime_policy_unscoped", "error" if wide else "warn", _label(p),
            "a policy on realtime.messages that does not look at the topic: it applies to every channel",
            "scope it to a topic pattern, e.g. starts_with(topic, 'room:') and (select realtime.topic()) = ..."))
    return out


FUNCTIONS = """
    select p.oid, format('%%I.%%I(%%s)', n.nspname, p.proname, pg_catalog.pg_get_function_identity_arguments(p.oid))
             as name, n.nspname as schema, p.prosecdef as definer, p.prorettype = 'trigger'::regtype as trigger,
           (select split_part(c, '=', 2) from unnest(p.proconfig) c where c like 'search_path=%%') as search_path,
           n.nspname = any(%(exposed)s) as exposed,
           array(select r from unnest(array['anon', 'authenticated']) r
                 where has_function_privilege(r, p.oid, 'execute')) as api_execute,
           exists (select from aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
                   where a.grantee = 0 and a.privilege_type = 'EXECUTE') as public_execute,
           exists (select from aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
                   where a.grantee = 'anon'::regrole and a.privilege_type = 'EXECUTE') as anon_execute
    from pg_catalog.pg_proc p join pg_catalog.pg_namespace n on n.oid = p.pronamespace
    where n.nspname = any(%(scope)s) and not n.nspname = any(%(internal)s)
      and not exists (select from pg_catalog.pg_depend d where d.objid = p.oid and d.deptype = 'e')
    order by 2
"""


@check
def function_search_path(conn: psycopg.Connection[Any], cfg: AuditConfig) -> list[Finding]:
    out = []
    for f in _rows(conn, FUNCTIONS, _params(cfg)):
        path = f["search_path"]
        if path is None:
            out.append(Finding(
                "definer_without_search_path" if f["definer"] else "function_search_path_mutable",
                "error" if f["definer"] else "warn", f["name"],
                ("a SECURITY DEFINER function without a pinned search_path runs the caller's choice of objects "
                 "with its owner's rights") if f["definer"] else
                "the function resolves names through the caller's search_path",
                f"alter function {f['name']} set search_path = ''; and schema-qualify every name in it"))
        elif f["definer"] and path.strip().strip('"') not in ("", '""', "pg_catalog", "pg_catalog, pg_temp"):
            out.append(Finding(
                "definer_search_path_not_empty", "warn", f["name"],
                f"a SECURITY DEFINER function searches {path}: objects created there could be run with its rights",
                f"alter function {f['name']} set search_path = ''; and schema-qualify every name in it"))
    return out


@check
def definer_executable_by_api(conn: psycopg.Connection[Any], cfg: AuditConfig) -> list[Finding]:
    out = []
    for f in _rows(conn, FUNCTIONS, _params(cfg)):
        if not f["definer"] or not f["exposed"] or not f["api_execute"] or f["trigger"]:
            continue
        why = cfg.justifications.get(f["name"])
        out.append(Finding(
            "definer_executable_by_api", "info" if why else "warn", f["name"],
            f"a SECURITY DEFINER function in an exposed schema that {', '.join(f['api_execute'])} can call through "
            "PostgREST: it runs with its owner's rights",
            f"move it to a private schema, or revoke execute on function {f['name']} from "
            f"{', '.join(f['api_execute'])}; or record why it is fine under [justifications]", why))
    return out


@check
def api_privileges_on_owned_objects(conn: psycopg.Connection[Any], cfg: AuditConfig) -> list[Finding]:
    out = []
    rows = _rows(conn, """
        select format('%%I.%%I', n.nspname, c.relname) as name, c.relkind,
               array_agg(distinct case a.grantee when 0 then 'PUBLIC' else a.grantee::regrole::text end
                         || ':' || a.privilege_type) as grants
        from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
        cross join lateral aclexplode(coalesce(c.relacl, acldefault(
            case when c.relkind = 'S' then 's' else 'r' end::"char", c.relowner))) a
        where n.nspname = any(%(owned)s) and c.relkind in ('r', 'p', 'v', 'm', 'f', 'S')
          and (a.grantee = 0 or a.grantee = 'anon'::regrole)
        group by 1, 2 order by 1
        """, _params(cfg))
    for r in rows:
        out.append(Finding(
            "api_privilege_on_owned_object", "error", r["name"],
            f"granted to anon or PUBLIC: {', '.join(r['grants'])} (Supabase's default privileges do this to "
            "every new object in public)",
            f"revoke all on {'sequence' if r['relkind'] == 'S' else 'table'} {r['name']} from public, anon;"))
    columns = _rows(conn, """
        select format('%%I.%%I.%%I', n.nspname, c.relname, t.attname) as name,
               string_agg(distinct case a.grantee when 0 then 'PUBLIC' else 'anon' end || ':' || a.privilege_type,
                          ', ') as grants
        from pg_catalog.pg_attribute t join pg_catalog.pg_class c on c.oid = t.attrelid
        join pg_catalog.pg_namespace n on n.oid = c.relnamespace cross join lateral aclexplode(t.attacl) a
        where n.nspname = any(%(owned)s) and t.attacl is not null and (a.grantee = 0 or a.grantee = 'anon'::regrole)
        group by 1 order by 1
        """, _params(cfg))
    out += [Finding("api_privilege_on_owned_object", "error", r["name"], f"column granted to {r['grants']}",
                    "revoke the column privilege from public and anon") for r in columns]
    for f in _rows(conn, FUNCTIONS, {**_params(cfg), "scope": list(cfg.owned_schemas)}):
        holders = [h for h, held in (("PUBLIC", f["public_execute"]), ("anon", f["anon_execute"])) if held]
        if holders:
            out.append(Finding(
                "api_execute_on_owned_function", "warn", f["name"],
                f"EXECUTE granted to {' and '.join(holders)} (functions are executable by PUBLIC unless revoked)",
                f"revoke execute on function {f['name']} from public, anon; then grant it to the roles that need it"))
    return out


@check
def view_bypasses_rls(conn: psycopg.Connection[Any], cfg: AuditConfig) -> list[Finding]:
    # Views PostgREST serves, as Supabase's linter (0010) reads them: a view in a private schema
    # is reached only through the SQL of objects that are audited themselves, as definer
    # functions there are (definer_executable_by_api).
    rows = _rows(conn, """
        select format('%%I.%%I', n.nspname, v.relname) as name, v.relkind,
               exists (select from unnest(array['anon', 'authenticated']) r
                       where has_table_privilege(r, v.oid, 'select')) as api_select,
               string_agg(distinct format('%%I.%%I', tn.nspname, t.relname), ', ') as tables
        from pg_catalog.pg_class v join pg_catalog.pg_namespace n on n.oid = v.relnamespace
        join pg_catalog.pg_rewrite w on w.ev_class = v.oid
        join pg_catalog.pg_depend d on d.objid = w.oid and d.classid = 'pg_rewrite'::regclass and d.deptype = 'n'
        join pg_catalog.pg_class t on t.oid = d.refobjid and t.oid <> v.oid and t.relrowsecurity
        join pg_catalog.pg_namespace tn on tn.oid = t.relnamespace
        where v.relkind in ('v', 'm') and n.nspname = any(%(exposed)s) and not n.nspname = any(%(internal)s)
          and (v.relkind = 'm' or not coalesce(v.reloptions::text[] && array['security_invoker=true',
               'security_invoker=on', 'security_invoker=1', 'security_invoker=yes'], false))
        group by v.oid, n.nspname, v.relname, v.relkind order by 1
        """, _params(cfg))
    return [Finding(
        "view_bypasses_rls", "error" if r["api_select"] else "warn", r["name"],
        ("a materialized view" if r["relkind"] == "m" else "a view without security_invoker")
        + f" over {r['tables']} (RLS protected) runs with its owner's rights, so RLS does not apply to its readers",
        "alter view ... set (security_invoker = true);" if r["relkind"] == "v"
        else "revoke select from anon, authenticated, or move it out of the exposed schemas") for r in rows]


@check
def unindexed_foreign_keys(conn: psycopg.Connection[Any], cfg: AuditConfig) -> list[Finding]:
    rows = _rows(conn, """
        select format('%%I.%%I', n.nspname, c.relname) as name, k.conname,
               (select string_agg(a.attname, ', ' order by x.i) from unnest(k.conkey) with ordinality x(attnum, i)
                join pg_catalog.pg_attribute a on a.attrelid = k.conrelid and a.attnum = x.attnum) as columns
        from pg_catalog.pg_constraint k join pg_catalog.pg_class c on c.oid = k.conrelid
        join pg_catalog.pg_namespace n on n.oid = c.relnamespace
        where k.contype = 'f' and n.nspname = any(%(owned)s)
          and not exists (select from pg_catalog.pg_index i where i.indrelid = k.conrelid and i.indisvalid
                          and (i.indkey::int2[])[0:cardinality(k.conkey) - 1] = k.conkey)
        order by 1, 2
        """, _params(cfg))
    return [Finding("unindexed_foreign_key", "info", f"{r['name']} ({r['conname']})",
                    f"no index starts with the foreign key's columns ({r['columns']}): deletes in the referenced "
                    "table and joins scan this table",
                    f"create index on {r['name']} ({r['columns']});") for r in rows]


@check
def duplicate_indexes(conn: psycopg.Connection[Any], cfg: AuditConfig) -> list[Finding]:
    rows = _rows(conn, """
        select format('%%I.%%I', schemaname, tablename) as name, array_agg(indexname::text order by indexname) as indexes
        from pg_catalog.pg_indexes where schemaname = any(%(owned)s)
        group by schemaname, tablename, replace(indexdef, indexname, '') having count(*) > 1 order by 1
        """, _params(cfg))
    return [Finding("duplicate_index", "warn", r["name"], f"identical indexes: {', '.join(r['indexes'])}",
                    f"drop index {r['indexes'][-1]};") for r in rows]


@check
def stale_statistics(conn: psycopg.Connection[Any], cfg: AuditConfig) -> list[Finding]:
    by_table: dict[str, list[str]] = {}
    for column in stats.stale(conn):
        by_table.setdefault(column.table, []).append(column.column)
    return [Finding(
        "stale_statistics", "warn", table,
        f"{', '.join(columns)}: kept private from the planner (statistics target 0), but statistics collected "
        "earlier are still there and ANALYZE never replaces them; Prefer: count=planned can reveal how busy a "
        "thread, a sender or a text is to callers who cannot see it",
        "dbtool clear-stats (once; it holds ACCESS EXCLUSIVE briefly, see its --help)")
        for table, columns in by_table.items()]


def ordered(found: list[Finding]) -> list[Finding]:
    order = {s: i for i, s in enumerate(reversed(SEVERITIES))}
    return sorted(found, key=lambda f: (order[f.severity], f.code, f.object))


def run(conn: psycopg.Connection[Any], cfg: AuditConfig) -> list[Finding]:
    """Every check, in a read-only transaction with an empty search_path."""
    with conn.transaction():
        conn.execute("set local transaction_read_only = on")
        conn.execute("set local search_path = ''")
        found = [f for check_ in CHECKS for f in check_(conn, cfg)]
    return ordered(found)
