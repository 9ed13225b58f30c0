"""The benchmark runs end to end (`python -m bench --quick`) and reports every figure.

No thresholds here: performance is judged by the full benchmark (see the README), never by
timed tests on a shared machine; this only proves every measurement runs and yields numbers.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIGURES = {
    "history_rls", "history_rpc", "member_page", "member_count", "estimate_planned", "estimate_before_0005",
    "insert_1_durable", "insert_2_durable", "insert_8_durable", "insert_1_fsync_off", "insert_2_fsync_off",
    "insert_8_fsync_off", "insert_2_bare", "limits_2", "limits_8", "limits_2_client_id",
    "join_read_400", "join_read_40", "join_read_flat", "join_write_flat",
    "reset", "reset_cli", "seed", "guest_insert", "guest_join",
    "inbox_large", "inbox_small", "inbox_flat", "mark_read_2", "mark_read_2_bare",
    "insert_touch_2", "insert_touch_8", "insert_unread_index_2",
}


def test_quick_benchmark_produces_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    md = tmp_path / "bench.md"
    done = subprocess.run([sys.executable, "-m", "bench", "--quick", "--json", str(out), "--markdown", str(md)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    figures = {f["key"]: f for f in result["figures"]}
    assert set(figures) == FIGURES
    for figure in figures.values():
        assert math.isfinite(figure["value"]) and figure["value"] > 0, figure
        assert figure["verdict"] == "information" or figure["verdict"] == "met" or figure["verdict"].startswith("missed")
    for key in ("member_page", "member_count"):
        for mode in ("custom", "generic"):
            assert figures[key]["data"]["plans"][mode]["subplans"] == 0  # plan evidence is recorded
    assert figures["estimate_planned"]["verdict"] == "met"  # an estimate, not a time: exact at any size
    assert figures["estimate_before_0005"]["value"] > 1  # and the figure sees a leak where there is one
    assert result["machine"]["cores"] and result["machine"]["postgresql"].startswith("17")
    table = md.read_text()
    assert table.count("\n|") == len(FIGURES) + 2  # header, rule, one row per figure
    assert "| figure | goal | measured | verdict |" in table
