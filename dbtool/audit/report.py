"""Running the audit and rendering it as a text table, JSON or Markdown."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psycopg

from dbtool.audit import findings as checks
from dbtool.audit import snapshot
from dbtool.audit.config import AuditConfig
from dbtool.errors import AuditError
from dbtool.policy import matrix
from dbtool.render import markdown, table, to_json
from dbtool.urls import conninfo, redact

if TYPE_CHECKING:
    from dbtool.database import Database


@dataclass
class AuditReport:
    database: str
    exposed_schemas: list[str]
    findings: list[checks.Finding]
    cells: list[matrix.Cell] | None = None
    isolated_sequences: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {s: sum(1 for f in self.findings if f.severity == s) for s in reversed(checks.SEVERITIES)}

    def as_dict(self) -> dict[str, Any]:
        return {
            "database": self.database, "exposed_schemas": self.exposed_schemas, "counts": self.counts(),
            "findings": [f.as_dict() for f in self.findings],
            "matrix": None if self.cells is None else [
                {"persona": c.persona, "object": c.object, "operation": c.operation, "allowed": c.allowed,
                 "result": c.short} for c in self.cells],
        }


def run(url: str, cfg: AuditConfig, *, exact: bool = False, with_matrix: bool = True) -> AuditReport:
    """Static findings (read-only) and, unless disabled, the measured matrix (rolled back;
    `exact` keeps sequences still too)."""
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        found = checks.run(conn, cfg)
        measured = snapshot.effective_matrix(conn, cfg, exact) if with_matrix else None
    if measured:
        found = checks.ordered(found + checks.anonymous_access(measured.cells))
    return AuditReport(redact(url), list(cfg.exposed_schemas), found, measured.cells if measured else None,
                       measured.isolated_sequences if measured else [])


def _summary(report: AuditReport) -> str:
    counts = report.counts()
    total = sum(counts.values())
    return f"{total} finding(s): " + ", ".join(f"{n} {s}" for s, n in counts.items())


def render(report: AuditReport, fmt: str) -> str:
    if fmt == "json":
        return to_json(report.as_dict())
    if fmt == "markdown":
        parts = [f"## RLS audit of `{report.database}`", "", _summary(report), ""]
        if report.findings:
            parts.append(markdown(["severity", "finding", "object", "why", "fix"],
                                  [(f.severity, f.code, f"`{f.object}`", f.message + (
                                      f" (accepted: {f.justification})" if f.justification else ""), f"`{f.fix}`")
                                   for f in report.findings]))
        if report.cells is not None:
            parts += ["", "### Effective access (measured)", "", matrix.as_markdown(report.cells), "",
                      f"_{matrix.LEGEND}._"]
        return "\n".join(parts)
    lines = []
    for f in report.findings:
        lines.append(f"{f.severity.upper():5}  {f.code}  {f.object}")
        lines.append(f"       {f.message}" + (f" (accepted: {f.justification})" if f.justification else ""))
        lines.append(f"       fix: {f.fix}")
    lines.append(_summary(report))
    if report.cells is not None:
        lines += ["", matrix.as_table(report.cells), f"legend: {matrix.LEGEND}"]
    return "\n".join(lines)


def load_snapshot(path: str) -> dict[str, Any]:
    try:
        with open(path) as handle:
            data = json.load(handle)
    except OSError as exc:
        raise AuditError(f"cannot read snapshot {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise AuditError(f"{path} is not JSON ({exc}); create one with `dbtool audit snapshot > {path}`") from None
    if not isinstance(data, dict) or data.get("format") != snapshot.FORMAT:
        raise AuditError(f"{path} is not a dbtool audit snapshot ({snapshot.FORMAT})")
    return data


def snapshot_of(db: Database, cfg: AuditConfig, *, with_matrix: bool = True) -> dict[str, Any]:
    """`dbtool audit snapshot`: what decides who may do what in `db` (sequences kept still
    while measuring only on a database on this machine)."""
    with db.connect(admin=True) as conn:
        return snapshot.take(conn, cfg, db.describe(), with_matrix=with_matrix, exact=db.local)


@dataclass(frozen=True)
class Drift:
    since: str  # when the old snapshot was taken
    changes: list[snapshot.Change]


def drift(db: Database, cfg: AuditConfig, old: dict[str, Any]) -> Drift:
    """`dbtool audit diff`: `db` now against a snapshot (see load_snapshot), the matrix
    measured again only if the snapshot has one."""
    new = snapshot_of(db, cfg, with_matrix="matrix" in old)
    return Drift(str(old.get("taken_at")), snapshot.diff(old, new))


def render_diff(changes: list[snapshot.Change], fmt: str, taken_at: str) -> str:
    if fmt == "json":
        return to_json({"since": taken_at, "changed": bool(changes), "changes": [c.as_dict() for c in changes]})
    counts = {g: sum(1 for c in changes if c.grade == g) for g in reversed(snapshot.GRADES)}
    summary = (f"{len(changes)} change(s) since the snapshot of {taken_at}: "
               + ", ".join(f"{n} {g}" for g, n in counts.items())) if changes else f"no change since {taken_at}"
    rows = [(c.grade, c.kind, c.object, c.message) for c in changes]
    if fmt == "markdown":
        return "\n".join([summary, "", markdown(["grade", "kind", "object", "change"], rows)] if rows else [summary])
    return "\n".join([table(["grade", "kind", "object", "change"], rows), summary] if rows else [summary])
