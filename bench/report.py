"""The Markdown report of a benchmark run, from its JSON (what `python -m bench --json` writes).

    python -m bench.report bench/results/2026-12-01.json             # the table docs/performance.md shows
    python -m bench.report --targets bench/results/2026-12-01.json   # only the figures with a goal (README)

`python -m bench` prints the same rendering at the end of a run, so the committed results and
the table in the docs can never disagree with the run they come from.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from dbtool.render import markdown


def render(result: dict[str, Any], targets_only: bool = False) -> str:
    """One line describing the machine and the dataset, then a row per figure (with
    `targets_only`, per figure that has a goal: DESIGN §7's targets)."""
    rows = [(f["title"], f["goal"] or "—", f["measured"], f["verdict"]) for f in result["figures"]
            if f["goal"] or not targets_only]
    m = result["machine"]
    head = (f"{m['cores']} cores ({m['cpu']}), PostgreSQL {m['postgresql']}, {m['server_settings']}; dataset "
            f"{result['dataset']['messages']:,} messages / {result['dataset']['threads']:,} threads / "
            f"{result['dataset']['users']:,} users; {result['trials']} interleaved trials of {result['seconds']}s "
            f"each; ratio = median of per-trial ratios (min–max). {result['date']}.")
    return head + "\n\n" + markdown(["figure", "goal", "measured", "verdict"], rows)


def render_file(path: str | Path, targets_only: bool = False) -> str:
    """The report of a run saved with `python -m bench --json PATH`."""
    return render(json.loads(Path(path).read_text()), targets_only)


def main(argv: list[str]) -> int:
    targets_only = argv[:1] == ["--targets"]
    files = argv[1:] if targets_only else argv
    if len(files) != 1:
        print("usage: python -m bench.report [--targets] RESULTS.json", file=sys.stderr)
        return 2
    print(render_file(files[0], targets_only))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
