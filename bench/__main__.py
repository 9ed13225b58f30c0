"""python -m bench: the performance figures of DESIGN §7, measured as ratios in one run.

    python -m bench                  # full: 1M messages / 10k threads / 5k users (about 6 minutes)
    python -m bench --quick          # a small dataset, one short trial each: checks that all runs
    python -m bench --json out.json --markdown out.md
    python -m bench --only estimates  # only some figures (repeat --only)
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from bench import figures, receipts
from bench.harness import embedded_server, prepare
from bench.report import render
from dbtool import __version__

STEPS = ("history", "member-reads", "estimates", "inserts", "limits", "realtime-checks", "guests", "inbox",
         "receipts", "receipts-send-cost", "reset")


def progress(message: str) -> None:
    click.echo(f"· {message}", err=True)


def machine(server_version: str) -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cores": os.cpu_count(), "cpu": model, "kernel": platform.release(), "python": platform.python_version(),
            "postgresql": server_version, "chat_db": __version__,
            "server_settings": "fsync=off, synchronous_commit=off (the dbtool local server)"}


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--quick", is_flag=True, help="Small dataset, one 1-second trial per variant (a smoke run for CI).")
@click.option("--messages", type=int, help="Messages in the large dataset (default 1,000,000; quick 20,000).")
@click.option("--trials", type=int, help="Interleaved trials per variant (default 5; quick 1).")
@click.option("--seconds", type=float, help="Seconds per pgbench trial (default 3; quick 1).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the results as JSON.")
@click.option("--markdown", "md_path", type=click.Path(dir_okay=False), help="Also write the Markdown table.")
@click.option("--only", multiple=True, type=click.Choice(STEPS),
              help="Measure only these figures (repeatable); the load rate is always reported.")
def main(quick: bool, messages: int | None, trials: int | None, seconds: float | None, json_path: str | None,
         md_path: str | None, only: tuple[str, ...]) -> None:
    """Measure the DESIGN §7 figures side by side on a private embedded server.

    \b
    Example:
      python -m bench --quick
      python -m bench --json bench/results/latest.json --markdown bench/results/latest.md
      python -m bench --only history --only member-reads --only estimates
      python -m bench --only inserts --only limits
    """
    settings = figures.Settings(trials or (1 if quick else 5), seconds or (1.0 if quick else 3.0))
    large_messages = messages or (20_000 if quick else 1_000_000)
    users, threads = (200, 400) if quick else (5_000, 10_000)
    small_threads = max(threads // 10, 10)
    began = time.monotonic()
    chosen = [step for step in STEPS if not only or step in only]
    with embedded_server(progress) as server:
        large = prepare(server, "bench", users, threads, large_messages, 1, progress)
        small = prepare(server, "bench_small", max(users // 5, 20), small_threads,
                        max(large_messages // 10, 1000), 2, progress) if "realtime-checks" in chosen else None
        with large.db.connect(admin=True) as conn:
            version = str(conn.execute("select current_setting('server_version')").fetchone()[0])  # type: ignore[index]
        results: list[figures.Figure] = []
        steps = {
            "history": lambda: figures.history(large, settings),
            "member-reads": lambda: figures.member_reads(large, settings),
            "estimates": lambda: figures.planned_estimates(large),
            "inserts": lambda: figures.inserts(large, settings),
            "limits": lambda: figures.limits(large, settings),
            "realtime-checks": lambda: figures.realtime_checks(small, large, settings) if small else [],
            "guests": lambda: figures.guests(large, settings),
            "inbox": lambda: receipts.inbox(large, settings),
            "receipts": lambda: receipts.marks(large, settings),
            "receipts-send-cost": lambda: receipts.send_cost(large, settings, figures.RPC_INSERT),
            "reset": lambda: figures.reset_vs_create(server, settings, progress),
        }
        for name in chosen:
            progress(f"measuring {name}")
            results.extend(steps[name]())
        results.append(figures.seeding(large))
    result = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "quick": quick, "machine": machine(version),
        "dataset": {"messages": large_messages, "threads": threads, "users": users, "small_threads": small_threads},
        "trials": settings.trials, "seconds": settings.seconds, "elapsed_seconds": round(time.monotonic() - began, 1),
        "figures": [f.as_dict() for f in results],
    }
    table = render(result)
    click.echo(table)
    if json_path:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(json_path).write_text(json.dumps(result, indent=2) + "\n")
    if md_path:
        Path(md_path).parent.mkdir(parents=True, exist_ok=True)
        Path(md_path).write_text(table + "\n")
    progress(f"done in {result['elapsed_seconds']}s")


if __name__ == "__main__":
    sys.exit(main())
