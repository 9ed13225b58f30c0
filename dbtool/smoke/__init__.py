"""`dbtool smoke`: one end-to-end scenario of the chat, run by a local or a live driver.

* `base` — statuses, step results, the report, and what a driver supplies (`Driver`).
* `scenario` — the steps, their expectations and the runner (clean-up included).
* `local` — through the package's PostgREST and Realtime reproduction, against a stand-in.
* `live` — through supabase-py against a real project (supabase-py is imported only there).
* `surface` — the RPC surface of each revision, to compare a project with this package.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

from dbtool.smoke.base import Report, SmokeRefused, Status, StepResult
from dbtool.smoke.scenario import run, steps

if TYPE_CHECKING:
    from dbtool.smoke.live import LiveConfig

__all__ = ["Report", "SmokeRefused", "Status", "StepResult", "run", "run_live", "run_local", "steps"]

Progress = Callable[[StepResult], None]


def run_local(url: str, admin_url: str, progress: Progress | None = None) -> Report:
    """The scenario against a database with the chat schema and the stand-in (see smoke.local)."""
    from dbtool.smoke.local import LocalDriver

    return run(LocalDriver(url, admin_url), progress=progress)


def run_live(cfg: LiveConfig, progress: Progress | None = None) -> Report:
    """The scenario against a Supabase project (see smoke.live); `cfg` from `live.live_config`.
    Every text it returns or raises is scrubbed of the keys."""
    from dbtool.smoke.live import LiveDriver

    def scrubbed(result: StepResult) -> StepResult:
        return dataclasses.replace(result, detail=cfg.scrub(result.detail))

    try:
        report = run(LiveDriver(cfg), progress=(lambda r: progress(scrubbed(r))) if progress else None)
    except SmokeRefused as exc:
        raise SmokeRefused(cfg.scrub(str(exc))) from None
    return dataclasses.replace(report, steps=[scrubbed(s) for s in report.steps],
                               notes=[cfg.scrub(n) for n in report.notes])
