"""Reading plan shapes: what runs once per statement (InitPlan) and what per row (SubPlan)."""

from __future__ import annotations

from typing import Any

from dbtool.policy import plans

ONCE: dict[str, Any] = {"Plan": {
    "Node Type": "Index Scan", "Index Name": "chat_messages_thread_idx",
    "Index Cond": "(thread_id = $1)", "Filter": "(sender_supabase_id = $0)",
    "Plans": [{"Node Type": "Result", "Parent Relationship": "InitPlan",
               "Filter": "(auth.uid() IS NOT NULL)",
               "Plans": [{"Node Type": "Seq Scan", "Parent Relationship": "Outer", "Filter": "(auth.uid() = id)"}]}],
}}

PER_ROW: dict[str, Any] = {"Plan": {
    "Node Type": "Seq Scan", "Filter": "((SubPlan 1) AND (sender_supabase_id = auth.uid()))",
    "Plans": [{"Node Type": "Index Only Scan", "Parent Relationship": "SubPlan", "Index Name": "chat_threads_pkey",
               "Index Cond": "(id = chat_messages.thread_id)"},
              {"Node Type": "Index Scan", "Parent Relationship": "SubPlan", "Index Name": "chat_identities_pkey"}],
}}


def test_walk_marks_everything_under_an_initplan() -> None:
    assert [(n["Node Type"], once) for n, once in plans.walk(ONCE["Plan"])] == [
        ("Index Scan", False), ("Result", True), ("Seq Scan", True)]


def test_uid_inside_an_initplan_runs_once_per_statement() -> None:
    got = plans.shape(ONCE)
    assert (got.subplans, got.initplans, got.uid_per_row) == (0, 1, [])
    assert got.once_per_statement
    assert got.as_dict() == {"subplans": 0, "initplans": 1, "uid_per_row": [], "indexes": ["chat_messages_thread_idx"],
                             "nodes": ["Index Scan", "Result", "Seq Scan"]}


def test_subplans_and_uid_outside_an_initplan_run_per_row() -> None:
    got = plans.shape(PER_ROW)
    assert (got.subplans, got.initplans) == (2, 0)
    assert got.uid_per_row == ["Seq Scan: ((SubPlan 1) AND (sender_supabase_id = auth.uid()))"]
    assert got.indexes == ["chat_identities_pkey", "chat_threads_pkey"]
    assert not got.once_per_statement
