"""`dbtool verify`: the access matrix measured on any database with the schema, every cell
checked against the contract (dbtool.policy.contract).

The probes are the ones `dbtool audit` measures (dbtool.policy.matrix.probe_all), run as the 13
standard personas in savepoints of one transaction that is rolled back (dbtool.policy.worlds), so
this is safe on a staging copy of production; the report proves it by comparing the row
counts and a checksum of every chat table and realtime.messages before and after the run.
"""

from __future__ import annotations

import socket
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from dbtool.errors import VerifyError
from dbtool.ops.schema import require_chat_schema
from dbtool.policy import contract, probes, worlds
from dbtool.policy.matrix import LEGEND, Cell, as_table, probe_all
from dbtool.urls import conninfo, redact

WATCHED = ("auth.users", "public.chat_identities", "public.chat_threads", "public.chat_links", "public.chat_messages",
           "public.chat_receipts",
           "realtime.messages")
COVERAGE = "the contract covers every probe and persona"


@dataclass
class Report:
    database: str
    cells: list[Cell] = field(default_factory=list)
    other_failures: list[str] = field(default_factory=list)
    before: dict[str, str] = field(default_factory=dict)
    after: dict[str, str] = field(default_factory=dict)
    sequence_advance: int = 0
    seconds: float = 0.0
    cell_seconds: list[float] = field(default_factory=list, repr=False)  # per cell, for the JUnit report

    @property
    def failed(self) -> list[Cell]:
        return [c for c in self.cells if not c.passed]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.other_failures

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


def _judge_all(conn: psycopg.Connection[Any], report: Report, exact: bool,
               progress: Callable[[str], None] | None) -> None:
    with worlds.rolled_back(conn, exact=exact) as session:
        callers = probes.callers(session.world)
        total = len(probes.ALL_PROBES) * len(callers)
        if progress:
            progress(f"probing {total} cells ({len(probes.ALL_PROBES)} probes x {len(callers)} personas) in a "
                     "transaction that is rolled back")
        step = max(total // 4, 1)
        last = time.monotonic()
        for probe, who, got in probe_all(conn, session.world, callers):
            report.cells.append(contract.judge(session.world, probe, who, got))
            now = time.monotonic()
            report.cell_seconds.append(now - last)
            last = now
            done = len(report.cells)
            if progress and done % step == 0 and done < total:
                progress(f"{done}/{total} cells, {len(report.failed)} not as the contract says")


def run(url: str, *, exact: bool = False, junit_xml: str | None = None,
        progress: Callable[[str], None] | None = None) -> Report:
    """Measure the matrix on `url` (a role that bypasses RLS and may become the API roles:
    postgres on Supabase) and check every cell against the contract. `exact` also keeps the
    chat sequences still, pausing the application's message inserts for the run."""
    began = time.monotonic()
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        require_chat_schema(conn, "verify")
    report = Report(redact(url))
    report.before, seq_before = fingerprints(url)
    report.other_failures = contract.gaps()
    try:
        with psycopg.connect(conninfo(url), autocommit=True) as conn:
            _judge_all(conn, report, exact, progress)
    except psycopg.OperationalError:
        raise
    except psycopg.Error as exc:  # probes catch what a request may raise: this is the world's set-up
        raise VerifyError(
            f"cannot probe {report.database}: {str(exc).strip()}; the URL's role must bypass RLS, create roles and "
            "become anon/authenticated/service_role (postgres on Supabase)"
        ) from None
    report.after, seq_after = fingerprints(url)
    report.sequence_advance = seq_after - seq_before
    report.seconds = time.monotonic() - began
    if junit_xml:
        write_junit(report, junit_xml)
    return report


def junit(report: Report) -> ET.Element:
    """One testcase per cell (named like the report's FAILED lines), plus one for the
    contract's coverage; a failure carries what was expected and what was measured."""
    suites = ET.Element("testsuites")
    suite = ET.SubElement(suites, "testsuite", {
        "name": "dbtool verify", "tests": str(len(report.cells) + 1),
        "failures": str(len(report.failed) + (1 if report.other_failures else 0)), "errors": "0", "skipped": "0",
        "time": f"{report.seconds:.3f}", "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "hostname": socket.gethostname(),
    })
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", name="database", value=report.database)
    coverage = ET.SubElement(suite, "testcase", classname="dbtool.policy.contract", name=COVERAGE, time="0")
    if report.other_failures:
        ET.SubElement(coverage, "failure", message=report.other_failures[0]).text = "\n".join(report.other_failures)
    seconds: Sequence[float] = report.cell_seconds or [0.0] * len(report.cells)
    for cell, took in zip(report.cells, seconds, strict=True):
        case = ET.SubElement(suite, "testcase", classname="dbtool.policy.verify", name=cell.key, time=f"{took:.3f}")
        if cell.failure is not None:
            ET.SubElement(case, "failure", message=cell.failure).text = (
                f"{cell.key}\n{cell.failure}\nmeasured: {cell.result}")
    return suites


def write_junit(report: Report, path: str) -> None:
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        ET.ElementTree(junit(report)).write(target, encoding="utf-8", xml_declaration=True)
    except OSError as exc:
        raise VerifyError(f"cannot write the JUnit report {path}: {exc.strerror}; choose a writable path "
                          "for --junit-xml") from None


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
