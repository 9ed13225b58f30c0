"""python -m bench.instructions: the instructions one request costs a backend, under callgrind.

    python -m bench.instructions                          # every request, 1M messages, n=200
    python -m bench.instructions --only send --only send-touch --messages 100000
    python -m bench.instructions --json bench/results/instructions.json

Wall-clock ratios on a shared 2-core machine move by ±10–30% between runs; the number of
instructions a backend executes for a request does not. This loads the benchmark's dataset on
a private embedded server, restarts that server under `valgrind --tool=callgrind`, and for each
request runs one connection with W+N requests and another with W+2N (PostgREST's request
shape: one transaction, `set_config` of role and claims, prepared statements); the difference
of the two backends' totals, divided by N, is what one request costs, with connection
start-up, warm-up and plan caching cancelled out. Each request is measured with its baseline,
as in `python -m bench`. Needs valgrind (Debian: `apt install valgrind`); a run takes a few
minutes.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click
import psycopg

from bench import receipts
from bench.harness import Dataset, embedded_server, prepare
from dbtool.database import Database
from dbtool.render import markdown
from dbtool.server import local
from dbtool.server.embedded import Server
from dbtool.server.pgbin import choose_runner

# Params of one request: (JWT claims, statement parameters).
Args = tuple[str, tuple[Any, ...]]


@dataclass(frozen=True)
class Request:
    """A statement sent as `role` in PostgREST's request shape, with the parameters of its k-th call."""

    role: str
    statement: str
    args: Callable[[int], Args]
    before: Callable[[psycopg.Connection[Any]], None] = lambda _conn: None  # as the admin, before each connection


@dataclass(frozen=True)
class Measured:
    name: str
    what: str
    variant_k: float
    baseline_k: float | None
    baseline: str

    @property
    def ratio(self) -> float | None:
        return self.baseline_k / self.variant_k if self.baseline_k else None


def backend_total(path: Path, timeout: float = 60.0) -> int:
    """The instruction total callgrind writes when a backend exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            for line in path.read_text(errors="replace").splitlines():
                if line.startswith(("totals:", "summary:")):
                    return int(line.split()[1])
        time.sleep(0.1)
    raise RuntimeError(f"callgrind wrote no totals to {path} within {timeout:.0f}s")


def per_request(first: int, second: int, n: int) -> float:
    """Thousands of instructions per request, from two backends that ran W+N and W+2N."""
    return (second - first) / n / 1000.0


PREAMBLE = ("select set_config('search_path', '\"public\", \"extensions\"', true), set_config('role', %s, true), "
            "set_config('request.jwt.claims', %s, true), set_config('request.method', 'POST', true), "
            "set_config('request.path', '/rpc', true), set_config('request.headers', '{}', true), "
            "set_config('request.cookies', '{}', true)")


class Callgrind:
    """The dataset's server, restarted under callgrind (same data directory and settings)."""

    def __init__(self, server: Server, out: Path) -> None:
        self.server = server
        self.out = out
        state = json.loads(server.config.state_file.read_text())
        self.postgres = str(Path(state["bin_dir"]) / "postgres")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        local.stop(self.server.config)
        self.out.mkdir(parents=True, exist_ok=True)
        self.out.chmod(0o777)  # the server's user writes the profiles
        runner = choose_runner(self.server.config.root_mode)
        self.process = subprocess.Popen(
            runner.command(["valgrind", "--tool=callgrind", "--trace-children=yes",
                            f"--callgrind-out-file={self.out}/cg.%p", self.postgres,
                            "-D", str(self.server.config.data_dir), "-p", str(self.server.port),
                            "-c", "autovacuum=off"]),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                with psycopg.connect(self.server.database("postgres").admin_url, connect_timeout=5):
                    return
            except psycopg.OperationalError:
                if self.process.poll() is not None:
                    raise RuntimeError("PostgreSQL under valgrind exited at start-up") from None
                time.sleep(1)
        raise RuntimeError("PostgreSQL under valgrind did not accept connections within 180s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process = None

    def run(self, db: Database, request: Request, count: int) -> int:
        """One connection sends `count` requests; its backend's instruction total."""
        with db.connect(admin=True) as admin:
            request.before(admin)
        with psycopg.connect(db.url, autocommit=True) as conn:
            pid = conn.execute("select pg_backend_pid()").fetchone()[0]  # type: ignore[index]
            for k in range(1, count + 1):
                claims, params = request.args(k)
                with conn.transaction():
                    conn.execute(PREAMBLE, (request.role, claims), prepare=True)
                    cur = conn.execute(request.statement, params, prepare=True)
                    if cur.description:
                        cur.fetchall()
        return backend_total(self.out / f"cg.{pid}")

    def measure(self, db: Database, request: Request, n: int, warm: int) -> float:
        return per_request(self.run(db, request, warm + n), self.run(db, request, warm + 2 * n), n)


def _toggle(trigger: str, on: bool) -> Callable[[psycopg.Connection[Any]], None]:
    state = "enable" if on else "disable"

    def run(conn: psycopg.Connection[Any]) -> None:
        conn.execute(f"alter table public.chat_messages {state} trigger {trigger}")
    return run


def requests(data: Dataset) -> dict[str, tuple[str, Request, Request | None, str]]:
    """name -> (what, the request, its baseline, what the baseline is)."""
    busy_threads = receipts.inbox_sizes(data)[1]
    busy_uid = receipts._inbox_users(data)[busy_threads]
    with data.db.connect(admin=True) as conn:
        members = conn.execute("select uid, thread_id, claims, mongo, partner, cursor_at, cursor_id "
                               "from bench.members order by n").fetchall()
        marks = conn.execute("select uid, thread_id, claims, first_id from bench.marks where c = 0").fetchone()
        # The member of 1,000 threads (bench.receipts' inbox user), on 50 of them, in bench.members' shape.
        busy = conn.execute(
            """
            select %(uid)s, t.thread_id,
                   json_build_object('sub', %(uid)s, 'role', 'authenticated', 'aud', 'authenticated')::text,
                   i.mongo_id, case when t.user_a_supabase_id = %(uid)s then t.user_b_mongo_id else t.user_a_mongo_id end,
                   c.created_at::text, c.id
            from public.chat_threads t
            join public.chat_identities i on i.supabase_user_id = %(uid)s
            cross join lateral (select m.created_at, m.id from public.chat_messages m where m.thread_id = t.thread_id
                                order by m.created_at desc, m.id desc offset 3 limit 1) c
            where %(uid)s in (t.user_a_supabase_id, t.user_b_supabase_id)
            order by t.thread_id limit 50
            """, {"uid": busy_uid}).fetchall()
    assert members and marks and busy, "the dataset lacks bench.members, bench.marks or the inbox users"
    rng = random.Random(2)
    picks = [rng.randrange(len(members)) for _ in range(10_000)]

    def member(k: int) -> tuple[Any, ...]:
        return tuple(members[picks[k % len(picks)]])

    def busy_member(k: int) -> tuple[Any, ...]:
        return tuple(busy[k % len(busy)])

    page = ("select * from public.chat_messages m where m.thread_id = %s "
            "and (m.created_at, m.id) < (%s::timestamptz, %s::bigint) order by m.created_at desc, m.id desc limit 50")

    def page_args(k: int, who: Callable[[int], tuple[Any, ...]] = member) -> Args:
        _uid, thread, claims, _, _, at, cursor = who(k)
        return claims, (thread, at, cursor)

    # The busy member's threads hold 6 messages: these comparisons read pages of 3 rows on both sides.
    short_page = page.replace("limit 50", "limit 3")
    rpc_page = "select * from public.chat_history(%s, %s::timestamptz, %s::bigint, 3)"
    send = "select r.id from public.insert_chat_message(%s, %s, %s, 'benchmark message') r"
    raw = ("insert into public.chat_messages (thread_id, sender_mongo_id, recipient_mongo_id, sender_supabase_id, "
           "body) values (%s, %s, %s, %s::uuid, 'benchmark message')")

    def send_args(k: int, who: Callable[[int], tuple[Any, ...]] = member) -> Args:
        _uid, thread, claims, mongo, partner, _, _ = who(k)
        return claims, (thread, mongo, partner)

    def raw_args(k: int) -> Args:
        uid, thread, claims, mongo, partner, _, _ = member(k)
        return claims, (thread, mongo, partner, uid)

    mark_uid, mark_thread, mark_claims, base = marks

    def rewind(conn: psycopg.Connection[Any]) -> None:
        conn.execute("update public.chat_receipts set delivered_up_to = 0, read_up_to = 0 "
                     "where thread_id = %s and supabase_user_id = %s", (mark_thread, mark_uid))
        conn.execute("delete from realtime.messages where event = 'READ'")
        conn.execute("update chat_private.chat_rate_limit_buckets set full_at = now() - interval '1 day' "
                     "where limit_name = 'receipts_per_user'")

    def both(*steps: Callable[[psycopg.Connection[Any]], None]) -> Callable[[psycopg.Connection[Any]], None]:
        def run(conn: psycopg.Connection[Any]) -> None:
            for step in steps:
                step(conn)
        return run

    on = both(_toggle("chat_messages__broadcast", True), _toggle("chat_messages__touch_thread", True))
    return {
        "history": ("history page (50 rows, keyset) as a participant through RLS",
                    Request("authenticated", page, page_args),
                    Request("postgres", page, page_args), "the owner's page"),
        "history-busy": (f"a page of 3 rows through RLS by a member of {busy_threads:,} threads",
                         Request("authenticated", short_page, lambda k: page_args(k, busy_member)),
                         Request("authenticated", short_page, page_args), "a typical member's"),
        "history-rpc-busy": (f"chat_history() for 3 rows by a member of {busy_threads:,} threads",
                             Request("authenticated", rpc_page, lambda k: page_args(k, busy_member)),
                             Request("authenticated", rpc_page, page_args), "a typical member's"),
        "send": ("insert_chat_message (RPC, RLS, limits, triggers, broadcast)",
                 Request("authenticated", send, send_args, on),
                 Request("postgres", raw, raw_args, both(on, _toggle("chat_messages__broadcast", False))),
                 "a raw INSERT as the owner, broadcast trigger off"),
        "send-busy": (f"the same send by a member of {busy_threads:,} threads",
                      Request("authenticated", send, lambda k: send_args(k, busy_member), on),
                      Request("authenticated", send, send_args, on), "a typical member's send"),
        "send-touch": ("the same send: what the inbox's trigger (chat_messages__touch_thread) adds",
                       Request("authenticated", send, send_args, on),
                       Request("authenticated", send, send_args, both(on, _toggle("chat_messages__touch_thread", False))),
                       "the send with that trigger off"),
        "mark-read": ("mark_chat_read that moves the cursor (and broadcasts READ)",
                      Request("authenticated", "select r.read_up_to from public.mark_chat_read(%s, %s::bigint) r",
                              lambda k: (mark_claims, (mark_thread, base + k)), rewind),
                      Request("postgres", "update public.chat_receipts set read_up_to = %s, read_at = now(), "
                              "delivered_up_to = greatest(delivered_up_to, %s::bigint) "
                              "where thread_id = %s and supabase_user_id = %s::uuid",
                              lambda k: (mark_claims, (base + k, base + k, mark_thread, mark_uid)), rewind),
                      "a raw UPDATE of the row"),
    }


NAMES = ("history", "history-busy", "history-rpc-busy", "send", "send-busy", "send-touch", "mark-read")


@contextmanager
def dataset(messages: int, say: Callable[[str], None]) -> Iterator[tuple[Server, Dataset]]:
    with embedded_server(say) as server:
        threads = max(messages // 100, 100)
        data = prepare(server, "bench", max(threads // 2, 50), threads, messages, 1, say)
        receipts._mark_threads(data)
        yield server, data


def render(results: Sequence[Measured]) -> str:
    rows = [(r.name, r.what, f"{r.variant_k:,.0f}k", f"{r.baseline_k:,.0f}k ({r.baseline})" if r.baseline_k else "—",
             f"{r.ratio:.2f}x" if r.ratio else "—") for r in results]
    return markdown(["request", "what", "instructions", "baseline", "baseline / request"], rows)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--only", "only", multiple=True, type=click.Choice(NAMES), help="Measure only these (repeatable).")
@click.option("--messages", default=1_000_000, show_default=True, help="Messages in the dataset.")
@click.option("-n", "n", default=200, show_default=True, help="N: the second connection sends N more requests.")
@click.option("--warm", default=30, show_default=True, help="Requests both connections send first.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Also write the results as JSON.")
def main(only: tuple[str, ...], messages: int, n: int, warm: int, json_path: str | None) -> None:
    """Instructions per request, under callgrind: deterministic where wall-clock ratios are noisy.

    \b
    Example:
      python -m bench.instructions --only mark-read --messages 100000
    """
    if shutil.which("valgrind") is None:
        raise click.ClickException("valgrind is not installed (Debian: apt install valgrind)")

    def say(message: str) -> None:
        click.echo(f"· {message}", err=True)

    results = []
    with dataset(messages, say) as (server, data), tempfile.TemporaryDirectory(prefix="chat-db-callgrind-") as out:
        found = requests(data)
        grind = Callgrind(server, Path(out))
        say("restarting the server under callgrind")
        grind.start()
        try:
            for name in only or NAMES:
                what, request, baseline, baseline_what = found[name]
                say(f"measuring {name}")
                variant = grind.measure(data.db, request, n, warm)
                base = grind.measure(data.db, baseline, n, warm) if baseline else None
                results.append(Measured(name, what, variant, base, baseline_what))
        finally:
            grind.stop()
            local.start(server.config)  # so the harness stops it as it expects
    click.echo(render(results))
    if json_path:
        Path(json_path).write_text(json.dumps({"messages": messages, "n": n, "warm": warm,
                                               "results": [asdict(r) | {"ratio": r.ratio} for r in results]},
                                              indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
