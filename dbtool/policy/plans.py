"""Reading query plans: what runs once per statement (InitPlan) and what per row (SubPlan).

Used by the plan tests and by the benchmark's plan evidence, under custom plans and the
generic plans PostgREST's prepared statements end up with.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from dbtool.supabase import postgrest
from dbtool.supabase.personas import Persona

EXPRESSION_KEYS = ("Filter", "Index Cond", "Recheck Cond", "Join Filter", "One-Time Filter", "Hash Cond")


def walk(node: dict[str, Any], in_initplan: bool = False) -> Iterator[tuple[dict[str, Any], bool]]:
    """Every plan node, with whether it belongs to an InitPlan (run once per statement)."""
    here = in_initplan or node.get("Parent Relationship") == "InitPlan"
    yield node, here
    for child in node.get("Plans", []):
        yield from walk(child, here)


@dataclass(frozen=True)
class PlanShape:
    subplans: int  # subqueries run per row
    initplans: int  # subqueries run once per statement
    uid_per_row: list[str]  # node expressions calling auth.uid() outside an InitPlan
    indexes: list[str]
    node_types: list[str]

    @property
    def once_per_statement(self) -> bool:
        return self.subplans == 0 and not self.uid_per_row

    def as_dict(self) -> dict[str, Any]:
        return {"subplans": self.subplans, "initplans": self.initplans, "uid_per_row": self.uid_per_row,
                "indexes": self.indexes, "nodes": self.node_types}


def shape(plan: dict[str, Any]) -> PlanShape:
    nodes = list(walk(plan["Plan"]))
    uid = [f"{n['Node Type']}: {n[k]}" for n, in_init in nodes for k in EXPRESSION_KEYS
           if "uid()" in str(n.get(k, "")) and not in_init]
    return PlanShape(
        subplans=sum(1 for n, _ in nodes if n.get("Parent Relationship") == "SubPlan"),
        initplans=sum(1 for n, _ in nodes if n.get("Parent Relationship") == "InitPlan"),
        uid_per_row=uid,
        indexes=sorted({n["Index Name"] for n, _ in nodes if "Index Name" in n}),
        node_types=[n["Node Type"] for n, _ in nodes],
    )


def explain(conn: psycopg.Connection[Any], who: Persona, query: str, params: Sequence[Any], types: Sequence[str],
            generic: bool) -> dict[str, Any]:
    """EXPLAIN a statement prepared inside a PostgREST-style request; `generic`: with the plan
    the server uses once it stops specialising prepared statements."""
    with postgrest.request(conn, who):
        if generic:
            conn.execute("set local plan_cache_mode = force_generic_plan")
        signature = f"({', '.join(types)})" if types else ""
        conn.execute(f"prepare dbtool_explain{signature} as {query}")
        literals = ", ".join(sql.Literal(p).as_string(conn) for p in params)
        arguments = f"({literals})" if params else ""
        row = conn.execute(f"explain (format json) execute dbtool_explain{arguments}").fetchone()
        conn.execute("deallocate dbtool_explain")
    assert row is not None
    return row[0][0]  # type: ignore[no-any-return]


def nested_plans(conn: psycopg.Connection[Any], who: Persona, statement: str, params: Sequence[Any], *,
                 generic: bool, analyze: bool = False, read_only: bool = True) -> list[dict[str, Any]]:
    """The plans of the statements a PL/pgSQL RPC runs inside (auto_explain, nested
    statements), as the last of seven PostgREST requests, past PL/pgSQL's five custom plans;
    `analyze` adds the executed row counts; `read_only=False` for an RPC that writes (each
    request is rolled back). `conn` must be a superuser's (auto_explain)."""
    notices: list[str] = []
    conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
    conn.execute("load 'auto_explain'")
    settings = [("log_min_duration", "0"), ("log_nested_statements", "on"), ("log_level", "notice"),
                ("log_format", "json")]
    if analyze:
        settings += [("log_analyze", "on"), ("log_timing", "off")]
    for name, value in settings:
        conn.execute(f"set auto_explain.{name} = {value}")
    for _ in range(7):
        with postgrest.request(conn, who, method="POST", read_only=read_only):
            if generic:
                conn.execute("set local plan_cache_mode = force_generic_plan")
            notices.clear()
            conn.execute(statement, params)  # type: ignore[arg-type]
    return [json.loads(n.split("plan:", 1)[1]) for n in notices if "plan:" in n]
