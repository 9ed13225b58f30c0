"""`dbtool audit`: static findings, the effective access matrix, snapshots and drift.

What the CLI calls is here; the parts are `config` (what the audit is told), `findings`
(the checks), `snapshot` (recording and comparing), `report` (running and rendering).
"""

from __future__ import annotations

from dbtool.audit.config import AuditConfig
from dbtool.audit.config import load as load_config
from dbtool.audit.findings import at_least
from dbtool.audit.report import (
    AuditReport,
    Drift,
    drift,
    load_snapshot,
    render,
    render_diff,
    run,
    snapshot_of,
)

__all__ = ["AuditConfig", "AuditReport", "Drift", "at_least", "drift", "load_config", "load_snapshot", "render",
           "render_diff", "run", "snapshot_of"]
