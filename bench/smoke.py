"""python -m bench.smoke: the quick benchmark end to end, checked (a step of `./dev test`).

No thresholds: performance is judged by the full benchmark (see the README), never on a shared
CI machine; this proves every measurement runs, yields a number and reads against its goal.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

FIGURES = {
    "history_rls", "history_rpc", "member_page", "member_count", "estimate_planned", "estimate_before_0005",
    "insert_1_durable", "insert_2_durable", "insert_8_durable", "insert_1_fsync_off", "insert_2_fsync_off",
    "insert_8_fsync_off", "insert_2_bare", "limits_2", "limits_8", "limits_2_client_id",
    "join_read_400", "join_read_40", "join_read_flat", "join_write_flat",
    "reset", "reset_cli", "seed", "guest_insert", "guest_join",
    "inbox_large", "inbox_small", "inbox_flat", "mark_read_2", "mark_read_2_bare",
    "insert_touch_2", "insert_touch_8", "insert_unread_index_2",
}


def problems(result: dict[str, Any], table: str) -> list[str]:
    """What is wrong with a quick run's JSON result and Markdown table (empty: all is well)."""
    found: list[str] = []
    figures = {f["key"]: f for f in result["figures"]}
    if set(figures) != FIGURES:
        found.append(f"figures missing: {sorted(FIGURES - set(figures))}, unexpected: {sorted(set(figures) - FIGURES)}")
    for key, figure in figures.items():
        if not (math.isfinite(figure["value"]) and figure["value"] > 0):
            found.append(f"{key}: value {figure['value']!r} is not a positive number")
        verdict = figure["verdict"]
        if not (verdict in ("information", "met") or verdict.startswith("missed")):
            found.append(f"{key}: verdict {verdict!r} is none of information, met, missed by ...")
    for key in ("member_page", "member_count"):
        for mode in ("custom", "generic"):
            plan = figures.get(key, {}).get("data", {}).get("plans", {}).get(mode)
            if plan is None or plan["subplans"] != 0:  # plan evidence is recorded, and shows no per-row subquery
                found.append(f"{key}: {mode} plan evidence missing or with subplans: {plan!r}")
    if figures.get("estimate_planned", {}).get("verdict") != "met":  # an estimate, not a time: exact at any size
        found.append(f"estimate_planned: {figures.get('estimate_planned')!r} is not met")
    if not figures.get("estimate_before_0005", {}).get("value", 0) > 1:  # the figure sees a leak where there is one
        found.append(f"estimate_before_0005: {figures.get('estimate_before_0005')!r} does not see the leak")
    machine = result["machine"]
    if not (machine["cores"] and str(machine["postgresql"]).startswith("17")):
        found.append(f"machine: {machine!r} lacks cores or PostgreSQL 17")
    if table.count("\n|") != len(FIGURES) + 2:  # header, rule, one row per figure
        found.append(f"markdown: {table.count(chr(10) + '|')} table lines, expected {len(FIGURES) + 2}")
    if "| figure | goal | measured | verdict |" not in table:
        found.append("markdown: no '| figure | goal | measured | verdict |' header")
    return found


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="chat-db-bench-") as tmp:
        out, md = Path(tmp) / "bench.json", Path(tmp) / "bench.md"
        run = subprocess.Popen([sys.executable, "-m", "bench", "--quick", "--json", str(out), "--markdown", str(md)])
        try:
            status = run.wait(timeout=900)
        except KeyboardInterrupt:
            run.wait()  # interrupted alike, the run stops its server on the way out
            raise
        if status != 0:
            print(f"bench.smoke: python -m bench --quick exited {status}", file=sys.stderr)
            return 1
        found = problems(json.loads(out.read_text()), md.read_text())
    for problem in found:
        print(f"bench.smoke: {problem}", file=sys.stderr)
    if not found:
        print(f"bench.smoke: all {len(FIGURES)} figures computed, each with a verdict", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
