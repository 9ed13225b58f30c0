"""`dbtool up`: the local stack in one go — start the server, reset its database, verify."""

from __future__ import annotations

from dataclasses import dataclass

from dbtool.config import LocalConfig
from dbtool.database import Database
from dbtool.ops import reset
from dbtool.policy import verify
from dbtool.progress import Progress, quiet
from dbtool.server import local


@dataclass(frozen=True)
class Stack:
    server: local.ServerStatus
    reset: reset.ResetResult
    verify: verify.Report | None  # None when asked not to verify

    @property
    def ok(self) -> bool:
        return self.verify is None or self.verify.ok


def run(cfg: LocalConfig, *, with_verify: bool = True, progress: Progress = quiet) -> Stack:
    started = local.start(cfg, progress)
    st = started.status
    assert st.url is not None and st.admin_url is not None
    db = Database(st.url, st.admin_url, "local server", True)
    result = reset.reset(db, progress=progress)
    report = verify.run(st.admin_url, exact=True, progress=progress) if with_verify else None  # a local server
    return Stack(st, result, report)
