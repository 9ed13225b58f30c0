"""`dbtool verify`: the packaged policy suite against any database with the schema.

Every probe runs inside a transaction that is rolled back (see dbtool.pytest_plugin's
`chat_world`), so this is safe on a staging copy of production; the report proves it by
comparing the row counts and a checksum of every chat table and realtime.messages before
and after the run.
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from dbtool.matrix import LEGEND, Cell, as_table
from dbtool.schema import require_chat_schema
from dbtool.urls import conninfo, redact

SUITE = Path(__file__).resolve().parent / "policy_suite"
WATCHED = ("auth.users", "public.chat_identities", "public.chat_threads", "public.chat_links", "public.chat_messages",
           "public.chat_receipts",
           "realtime.messages")


@dataclass
class Report:
    database: str
    cells: list[Cell] = field(default_factory=list)
    other_failures: list[str] = field(default_factory=list)
    before: dict[str, str] = field(default_factory=dict)
    after: dict[str, str] = field(default_factory=dict)
    sequence_advance: int = 0
    seconds: float = 0.0
    exit_code: int = 0

    @property
    def failed(self) -> list[Cell]:
        return [c for c in self.cells if not c.passed]

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.failed and not self.other_failures

    @property
    def unchanged(self) -> bool:
        return self.before == self.after

    def as_dict(self) -> dict[str, Any]:
        return {
            "database": self.database, "ok": self.ok, "cells": [asdict(c) for c in self.cells],
            "passed": len(self.cells) - len(self.failed), "failed": len(self.failed),
            "other_failures": self.other_failures, "database_unchanged": self.unchanged,
            "fingerprints_before": self.before, "fingerprints_after": self.after,
            "message_id_sequence_advance": self.sequence_advance, "seconds": round(self.seconds, 2),
        }


def fingerprints(url: str) -> tuple[dict[str, str], int]:
    """Row count and checksum of every watched table's content; the message id sequence value."""
    out: dict[str, str] = {}
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        for name in WATCHED:
            # constant memory on a big staging table: a sum of per-row hashes, not one long string
            row = conn.execute(
                f"select count(*), coalesce(sum(hashtextextended(t::text, 0)::numeric), 0) from {name} t"
            ).fetchone()
            out[name] = f"{row[0]} rows, checksum {row[1]}" if row else "?"
        seq = conn.execute("select last_value from public.chat_messages_id_seq").fetchone()
    return out, int(seq[0]) if seq else 0


class _Collector:
    """pytest plugin: gathers each cell's outcome and any other failure."""

    def __init__(self) -> None:
        self.cells: list[Cell] = []
        self.other: list[str] = []

    def pytest_runtest_logreport(self, report: Any) -> None:
        props = dict(report.user_properties)
        cell = props.get("chat_db_cell")
        if report.when == "call" and cell:
            failure = str(report.longrepr.reprcrash.message) if report.failed and report.longrepr else None
            self.cells.append(Cell(**{**cell, "passed": report.passed, "failure": failure}))
        elif report.failed and not cell:
            crash = getattr(report.longrepr, "reprcrash", None)
            self.other.append(f"{report.nodeid} ({report.when}): {crash.message if crash else report.longrepr}")


def run(url: str, *, junit_xml: str | None = None, quiet: bool = False, exact: str = "auto") -> Report:
    """Run the policy suite against `url` (a role that bypasses RLS and may become the API
    roles: postgres on Supabase). pytest's progress goes to stderr."""
    import pytest

    began = time.monotonic()
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        require_chat_schema(conn, "verify")
    report = Report(redact(url))
    report.before, seq_before = fingerprints(url)
    collector = _Collector()
    args = [str(SUITE), "-p", "no:cacheprovider", "-o", "addopts=", "--rootdir", str(SUITE), "-q",
            "--no-header", "-W", "ignore::DeprecationWarning", f"--chat-db-url={url}", f"--chat-db-exact={exact}"]
    if quiet:
        args.append("-q")
    if junit_xml:
        args.append(f"--junitxml={junit_xml}")
    with contextlib.redirect_stdout(sys.stderr):
        report.exit_code = int(pytest.main(args, plugins=[collector]))
    report.cells, report.other_failures = collector.cells, collector.other
    report.after, seq_after = fingerprints(url)
    report.sequence_advance = seq_after - seq_before
    report.seconds = time.monotonic() - began
    return report


def render(report: Report) -> str:
    lines = [as_table(report.cells), ""]
    passed = len(report.cells) - len(report.failed)
    lines.append(f"{passed}/{len(report.cells)} cells as the contract says"
                 + (f", {len(report.failed)} NOT" if report.failed else "") + f" ({report.seconds:.1f}s)")
    lines.append(f"legend: {LEGEND}; ! = differs from the contract")
    for cell in report.failed:
        lines.append(f"FAILED {cell.persona} | {cell.object} {cell.operation}: {cell.failure}")
    lines.extend(f"FAILED {f}" for f in report.other_failures)
    state = "unchanged" if report.unchanged else "CHANGED"
    lines.append(f"database {state}: row counts and checksums of {', '.join(WATCHED)}")
    if report.sequence_advance:
        lines.append(f"the message id sequence moved by {report.sequence_advance} (sequences are not transactional; "
                     "--exact keeps it still, pausing message inserts for the run)")
    return "\n".join(lines)
