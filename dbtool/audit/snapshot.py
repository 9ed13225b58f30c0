"""Snapshots of what decides access (RLS switches, policies, grants, SECURITY DEFINER
functions, and the measured matrix) and a graded diff between two of them.

Grades: `dangerous` widens access (a cell that was refused is allowed, a permissive policy
or a grant appears, RLS is switched off ...), `breaking` narrows it or changes what clients
see (a refusal with another error), `safe` changes nothing that was measured (a policy
rewritten with the same effective matrix).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg

from dbtool import __version__
from dbtool.audit.config import SUPABASE_SCHEMAS, AuditConfig
from dbtool.audit.findings import COMMANDS, policies
from dbtool.ops.schema import require_chat_schema
from dbtool.policy import matrix, probes, worlds

FORMAT = "chat-db-audit-snapshot/1"
GRADES = ("safe", "breaking", "dangerous")


@dataclass(frozen=True)
class Measured:
    cells: list[matrix.Cell]
    roles: dict[str, str]  # persona label -> database role
    isolated_sequences: list[str]


def effective_matrix(conn: psycopg.Connection[Any], cfg: AuditConfig, exact: bool = False) -> Measured:
    """Probe every operation as every persona inside a transaction that is rolled back;
    `exact` also keeps the chat sequences still (pausing message inserts meanwhile)."""
    require_chat_schema(conn, "measure the access matrix of", "--no-matrix gives the static findings alone")
    with worlds.rolled_back(conn, exact=exact) as session:
        world = session.world
        callers = probes.callers(world) + [
            probes.custom_caller(world, p.name, p.role, p.acts_as, p.claims) for p in cfg.personas]
        return Measured(matrix.measure(conn, world, callers), {c.label: c.persona.role for c in callers},
                        session.isolated)


def _grants(conn: psycopg.Connection[Any], cfg: AuditConfig) -> dict[str, list[str]]:
    rows = conn.execute(
        """
        select format('%%I.%%I', n.nspname, c.relname), case a.grantee when 0 then 'PUBLIC'
               else a.grantee::regrole::text end || ':' || a.privilege_type
        from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
        cross join lateral aclexplode(coalesce(c.relacl, acldefault(
            case when c.relkind = 'S' then 's' else 'r' end::"char", c.relowner))) a
        where c.relkind in ('r', 'p', 'v', 'm', 'f', 'S') and not c.relispartition
          and (n.nspname = any(%(scope)s) and not n.nspname = any(%(internal)s)
               or (n.nspname, c.relname) = ('realtime', 'messages'))
        union all
        select format('%%I.%%I(%%s)', n.nspname, p.proname, pg_catalog.pg_get_function_identity_arguments(p.oid)),
               case a.grantee when 0 then 'PUBLIC' else a.grantee::regrole::text end || ':' || a.privilege_type
        from pg_catalog.pg_proc p join pg_catalog.pg_namespace n on n.oid = p.pronamespace
        cross join lateral aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
        where n.nspname = any(%(scope)s) and not n.nspname = any(%(internal)s)
        order by 1, 2
        """,
        {"scope": list(cfg.scope), "internal": list(SUPABASE_SCHEMAS)},
    ).fetchall()
    out: dict[str, list[str]] = {}
    for name, grant in rows:
        out.setdefault(name, []).append(grant)
    return out


def take(conn: psycopg.Connection[Any], cfg: AuditConfig, database: str, with_matrix: bool = True,
         exact: bool = False) -> dict[str, Any]:
    """Everything that decides who may do what, as JSON-ready data."""
    with conn.transaction():
        conn.execute("set local transaction_read_only = on")
        conn.execute("set local search_path = ''")
        rls = {
            name: {"enabled": enabled, "forced": forced}
            for name, enabled, forced in conn.execute(
                """
                select format('%%I.%%I', n.nspname, c.relname), c.relrowsecurity, c.relforcerowsecurity
                from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
                where c.relkind in ('r', 'p') and not c.relispartition
                  and (n.nspname = any(%(scope)s) and not n.nspname = any(%(internal)s)
                       or (n.nspname, c.relname) = ('realtime', 'messages'))
                order by 1
                """,
                {"scope": list(cfg.scope), "internal": list(SUPABASE_SCHEMAS)},
            ).fetchall()
        }
        pols = {
            f"{p['table_name']} {p['name']}": {
                "table": p["table_name"], "permissive": p["permissive"], "roles": p["roles"],
                "command": COMMANDS[p["cmd"]], "using": p["using_expr"], "with_check": p["check_expr"],
            }
            for p in policies(conn, cfg)
        }
        definers = {
            name: {"owner": owner, "search_path": path, "executable_by": sorted(by)}
            for name, owner, path, by in conn.execute(
                """
                select format('%%I.%%I(%%s)', n.nspname, p.proname, pg_catalog.pg_get_function_identity_arguments(p.oid)),
                       pg_catalog.pg_get_userbyid(p.proowner),
                       (select split_part(c, '=', 2) from unnest(p.proconfig) c where c like 'search_path=%%'),
                       array(select r from unnest(array['anon', 'authenticated', 'service_role']) r
                             where has_function_privilege(r, p.oid, 'execute'))
                from pg_catalog.pg_proc p join pg_catalog.pg_namespace n on n.oid = p.pronamespace
                where p.prosecdef and n.nspname = any(%(scope)s) and not n.nspname = any(%(internal)s)
                order by 1
                """,
                {"scope": list(cfg.scope), "internal": list(SUPABASE_SCHEMAS)},
            ).fetchall()
        }
        grants = _grants(conn, cfg)
        version = conn.execute("select current_setting('server_version')").fetchone()
    snap: dict[str, Any] = {
        "format": FORMAT, "taken_at": datetime.now(UTC).isoformat(timespec="seconds"), "database": database,
        "server_version": version[0] if version else None, "dbtool_version": __version__,
        "exposed_schemas": list(cfg.exposed_schemas), "rls": rls, "policies": pols, "grants": grants,
        "definer_functions": definers,
    }
    if with_matrix:
        measured = effective_matrix(conn, cfg, exact)
        snap["matrix"] = {
            c.key: {"persona": c.persona, "role": measured.roles[c.persona], "object": c.object,
                    "operation": c.operation, "allowed": c.allowed, "result": c.short, "rows": c.rows}
            for c in measured.cells
        }
    return snap


# --- diff -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    grade: str
    kind: str
    object: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


RPC_TABLES = {"ensure_chat_thread()": "public.chat_threads", "insert_chat_message()": "public.chat_messages",
              "chat_history()": "public.chat_messages"}


def _table_of(probed: str) -> str:
    """The table whose policies decide a probed object (a table, an RPC, a Realtime topic)."""
    if probed.startswith("realtime "):
        return "realtime.messages"
    return RPC_TABLES.get(probed, f"public.{probed}")


def _cell_change(key: str, old: dict[str, Any], new: dict[str, Any]) -> Change | None:
    if old["allowed"] != new["allowed"]:
        grade = "dangerous" if new["allowed"] else "breaking"
        return Change(grade, "access", key, f"{old['result']} -> {new['result']}")
    rows_matter = old.get("role") != "service_role"  # service_role sees data volume, not access
    if old["allowed"] and rows_matter and old.get("rows") is not None and old.get("rows") != new.get("rows"):
        grade = "dangerous" if (new.get("rows") or 0) > (old.get("rows") or 0) else "breaking"
        return Change(grade, "access", key, f"{old['result']} -> {new['result']}")
    if old["result"] != new["result"] and not old["allowed"]:
        # Clients see another error; it may also reveal something (e.g. that a thread exists).
        return Change("breaking", "access", key, f"still refused, now {new['result']} (was {old['result']})")
    return None


def _policy_change(name: str, old: dict[str, Any] | None, new: dict[str, Any] | None,
                   matrix_grades: dict[str, set[str]]) -> Change | None:
    if old is None and new is not None:
        grade = "dangerous" if new["permissive"] else "breaking"
        kind = "permissive" if new["permissive"] else "restrictive"
        return Change(grade, "policy", name, f"new {kind} policy for {new['command']} to {', '.join(new['roles'])}")
    if new is None and old is not None:
        grade = "breaking" if old["permissive"] else "dangerous"
        kind = "permissive" if old["permissive"] else "restrictive"
        return Change(grade, "policy", name, f"{kind} policy removed")
    assert old is not None and new is not None
    if old == new:
        return None
    if old["permissive"] != new["permissive"]:
        return Change("dangerous" if new["permissive"] else "breaking", "policy", name,
                      f"now {'permissive' if new['permissive'] else 'restrictive'}")
    added, removed = set(new["roles"]) - set(old["roles"]), set(old["roles"]) - set(new["roles"])
    if added or removed or old["command"] != new["command"]:
        wider = bool(added) or (new["command"] == "all" and old["command"] != "all")
        grade = ("dangerous" if wider else "breaking") if old["permissive"] else ("breaking" if wider else "dangerous")
        return Change(grade, "policy", name, f"roles {old['roles']} -> {new['roles']}, command {old['command']} -> "
                      f"{new['command']}")
    seen = matrix_grades.get(old["table"], set())
    grade = "dangerous" if "dangerous" in seen else "breaking" if "breaking" in seen else "safe"
    note = {"dangerous": "and the measured matrix shows wider access",
            "breaking": "and the measured matrix shows narrower access",
            "safe": "but every probed cell of the effective matrix is unchanged (a rewrite)"}[grade]
    return Change(grade, "policy", name, f"expression changed {note}: using {_one_line(old['using'])} -> "
                  f"{_one_line(new['using'])}; with check {_one_line(old['with_check'])} -> {_one_line(new['with_check'])}")


def _one_line(expr: str | None) -> str:
    return "(none)" if expr is None else " ".join(expr.split())


def diff(old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    """Graded changes from `old` to `new`, most dangerous first."""
    changes: list[Change] = []
    old_cells, new_cells = old.get("matrix") or {}, new.get("matrix") or {}
    for key in sorted(set(old_cells) & set(new_cells)):
        change = _cell_change(key, old_cells[key], new_cells[key])
        if change:
            changes.append(change)
    for key in sorted(set(old_cells) ^ set(new_cells)):
        changes.append(Change("safe", "access", key, "probed only " + ("before" if key in old_cells else "now")))
    by_table: dict[str, set[str]] = {}
    for key in set(old_cells) & set(new_cells):
        change = _cell_change(key, old_cells[key], new_cells[key])
        if change:
            by_table.setdefault(_table_of(new_cells[key]["object"]), set()).add(change.grade)
    for name in sorted(set(old["policies"]) | set(new["policies"])):
        change = _policy_change(name, old["policies"].get(name), new["policies"].get(name), by_table)
        if change:
            changes.append(change)
    for table in sorted(set(old["rls"]) | set(new["rls"])):
        before, after = old["rls"].get(table), new["rls"].get(table)
        if before == after:
            continue
        if before is None:
            changes.append(Change("safe" if after["enabled"] else "dangerous", "rls", table,
                                  f"new table, row level security {'on' if after['enabled'] else 'OFF'}"))
        elif after is None:
            changes.append(Change("breaking", "rls", table, "table removed"))
        elif before["enabled"] != after["enabled"]:
            changes.append(Change("breaking" if after["enabled"] else "dangerous", "rls", table,
                                  f"row level security {'enabled' if after['enabled'] else 'DISABLED'}"))
        else:
            changes.append(Change("breaking" if after["forced"] else "dangerous", "rls", table,
                                  f"force row level security {'on' if after['forced'] else 'off'}"))
    for obj in sorted(set(old["grants"]) | set(new["grants"])):
        before, after = set(old["grants"].get(obj, [])), set(new["grants"].get(obj, []))
        if after - before:
            changes.append(Change("dangerous", "grant", obj, "granted " + ", ".join(sorted(after - before))))
        if before - after:
            changes.append(Change("breaking", "grant", obj, "revoked " + ", ".join(sorted(before - after))))
    for fn in sorted(set(old["definer_functions"]) | set(new["definer_functions"])):
        before, after = old["definer_functions"].get(fn), new["definer_functions"].get(fn)
        if before == after:
            continue
        if before is None:
            changes.append(Change("dangerous", "definer", fn, f"new SECURITY DEFINER function, callable by "
                                  f"{', '.join(after['executable_by']) or 'nobody'}"))
        elif after is None:
            changes.append(Change("breaking", "definer", fn, "SECURITY DEFINER function removed or now invoker"))
        else:
            wider = set(after["executable_by"]) - set(before["executable_by"])
            unpinned = before["search_path"] is not None and after["search_path"] is None
            grade = "dangerous" if wider or unpinned or after["owner"] != before["owner"] else "breaking"
            changes.append(Change(grade, "definer", fn, f"{before} -> {after}"))
    order = {g: i for i, g in enumerate(reversed(GRADES))}
    return sorted(changes, key=lambda c: (order[c.grade], c.kind, c.object))
