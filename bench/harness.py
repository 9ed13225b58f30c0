"""The benchmark's machinery: a private embedded server, datasets, pgbench runs, statistics.

Every figure compares a variant with its baseline measured side by side in the same run:
trials alternate the two (in alternating order, so drift on a shared machine hits both)
and the figure is the median of the per-trial ratios, with their range as the spread.
pgbench drives the load: a C client, with prepared statements like PostgREST, so plans turn
generic after a few executions exactly as in production.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dbtool.database import Database
from dbtool.ops import build, seed
from dbtool.progress import Progress
from dbtool.server import local
from dbtool.server.embedded import Server, running
from dbtool.server.pgbin import find_binaries


@contextmanager
def embedded_server(progress: Progress) -> Iterator[Server]:
    """A server of our own (same launcher and settings as `dbtool local start`)."""
    home = Path(tempfile.mkdtemp(prefix="chat-db-bench-"))
    home.chmod(0o755)
    try:
        with running(home / "server", progress) as server:
            yield server
    finally:
        subprocess.run(["rm", "-rf", str(home)], check=False)


MEMBERS_SQL = """
create schema bench;
-- One row per probed participant: a thread, which side of it, a history cursor 10 messages deep.
create table bench.members as
with picked as (
  select t.*, (hashtext(t.thread_id) & 1) = 0 as as_a
  from public.chat_threads t order by md5(t.thread_id) limit %(limit)s
)
select row_number() over (order by p.thread_id) as n,
       case when p.as_a then p.user_a_supabase_id else p.user_b_supabase_id end::text as uid,
       case when p.as_a then p.user_a_mongo_id else p.user_b_mongo_id end as mongo,
       case when p.as_a then p.user_b_mongo_id else p.user_a_mongo_id end as partner,
       p.thread_id, 'chat:' || p.thread_id as topic,
       json_build_object('sub', case when p.as_a then p.user_a_supabase_id else p.user_b_supabase_id end,
                         'role', 'authenticated', 'aud', 'authenticated')::text as claims,
       c.created_at::text as cursor_at, c.id as cursor_id
from picked p cross join lateral (
  select m.created_at, m.id from public.chat_messages m where m.thread_id = p.thread_id
  order by m.created_at desc, m.id desc offset 10 limit 1) c;
alter table bench.members add primary key (n);
grant usage on schema bench to authenticated;
grant select on bench.members to authenticated;
"""

# Guest links (DESIGN §8): each probed participant also hosts a link redeemed by one
# anonymous guest, whose thread holds as many messages as the participant's direct thread.
GUESTS_SQL = """
insert into auth.users (id, aud, role, is_anonymous)
select ('00000000-0000-4000-8000-' || lpad(to_hex(n), 12, '0'))::uuid, 'authenticated', 'authenticated', true
from bench.members;
insert into public.chat_links (link_id, host_supabase_id, host_mongo_id, token_hash, max_guests, expires_at)
select ('00000000-0000-4000-9000-' || lpad(to_hex(n), 12, '0'))::uuid, uid::uuid, mongo,
       sha256(convert_to('bench link ' || n, 'UTF8')), 1, now() + interval '30 days'
from bench.members;
insert into public.chat_threads (thread_id, kind, user_a_mongo_id, user_a_supabase_id, guest_link_id,
                                 guest_supabase_id, guest_display_name, guest_expires_at)
select 'g_' || md5('bench guest ' || n), 'guest', mongo, uid::uuid,
       ('00000000-0000-4000-9000-' || lpad(to_hex(n), 12, '0'))::uuid,
       ('00000000-0000-4000-8000-' || lpad(to_hex(n), 12, '0'))::uuid, 'Guest ' || n, now() + interval '30 days'
from bench.members;
alter table public.chat_messages disable trigger chat_messages__broadcast;  -- history, not news
insert into public.chat_messages (thread_id, sender_mongo_id, recipient_mongo_id, sender_supabase_id, body,
                                  created_at)
select 'g_' || md5('bench guest ' || b.n), case when m.sender_supabase_id::text = b.uid then b.mongo end, null,
       case when m.sender_supabase_id::text = b.uid then b.uid::uuid
            else ('00000000-0000-4000-8000-' || lpad(to_hex(b.n), 12, '0'))::uuid end, m.body, m.created_at
from bench.members b join public.chat_messages m on m.thread_id = b.thread_id;
alter table public.chat_messages enable trigger chat_messages__broadcast;
create table bench.guests as
select n, ('00000000-0000-4000-8000-' || lpad(to_hex(n), 12, '0')) as uid, 'g_' || md5('bench guest ' || n) as thread_id,
       'chat:g_' || md5('bench guest ' || n) as topic,
       json_build_object('sub', '00000000-0000-4000-8000-' || lpad(to_hex(n), 12, '0'), 'role', 'authenticated',
                         'aud', 'authenticated', 'is_anonymous', true)::text as claims
from bench.members;
alter table bench.guests add primary key (n);
grant select on bench.guests to authenticated;
analyze public.chat_links, public.chat_threads, public.chat_messages;
"""


# pgbench sends far faster than any user may: the abuse limits stay on (every send does the
# full work of counting) but never refuse, or pgbench would stop at the first PT429.
UNLIMITED = "update public.chat_rate_limits set burst = 1000000, refill_every = interval '1 millisecond'"


@dataclass(frozen=True)
class Dataset:
    db: Database
    users: int
    threads: int
    messages: int
    members: int
    load: seed.LoadResult


def prepare(server: Server, name: str, users: int, threads: int, messages: int, seed_value: int,
            progress: Progress) -> Dataset:
    """A migrated database loaded with `dbtool seed --profile load`, then vacuumed and
    analysed, with a table of participants for pgbench to pick from."""
    db = server.database(name)
    build.create_database(db.admin_url, name)
    build.prepare(db.admin_url, db.url)
    progress(f"loading {messages:,} messages in {threads:,} threads ({users:,} users) into {name}")
    with db.connect(admin=True) as conn:
        result = seed.load(conn, users=users, threads=threads, messages=messages, seed=seed_value)
        conn.execute("vacuum (analyze) public.chat_messages, public.chat_threads, public.chat_identities")
        conn.execute(MEMBERS_SQL.replace("%(limit)s", str(min(threads, 2000))))
        conn.execute(UNLIMITED)
        conn.execute(GUESTS_SQL)
        # Copying the guest threads' history fired the activity trigger once per message: about
        # 100 dead versions of each guest thread's activity row, which autovacuum removes in a
        # running project. Measure that steady state, not the bulk copy's leftovers.
        conn.execute("vacuum (analyze) public.chat_threads, public.chat_links, public.chat_messages, "
                     "chat_private.chat_thread_activity")
        members = conn.execute("select count(*) from bench.members").fetchone()
    return Dataset(db, users, threads, messages, int(members[0]) if members else 0, result)


# --- pgbench ---------------------------------------------------------------------------------


@dataclass
class Run:
    tps: float
    statements: list[tuple[float, str]]  # (average latency ms, statement) per script line
    transactions: int

    def latency_ms(self, select: Callable[[str], bool]) -> float:
        """Summed average latency of the script lines `select` picks."""
        return sum(ms for ms, text in self.statements if select(text))


class PgbenchError(RuntimeError):
    pass


def pgbench(db: Database, script: str, *, clients: int = 1, seconds: float = 3.0, admin: bool = False,
            variables: dict[str, Any] | None = None) -> Run:
    """Run one pgbench script; fail loudly if any transaction failed."""
    tool = find_binaries(None).tool("pgbench")
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as handle:
        handle.write(script)
        path = handle.name
    user = local.ADMIN_ROLE if admin else local.APP_ROLE
    args = [tool, "-n", "-M", "prepared", "-r", "-f", path, "-c", str(clients), "-j", str(min(clients, 2)),
            "-T", str(max(1, round(seconds))), "-h", "127.0.0.1", "-p", str(db.port), "-U", user]
    for key, value in (variables or {}).items():
        args += ["-D", f"{key}={value}"]
    args.append(db.name)
    try:
        done = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "PGPASSWORD": db.password},
                              timeout=seconds + 120)
    finally:
        os.unlink(path)
    out = done.stdout
    failed = re.search(r"number of failed transactions: (\d+)", out)
    if done.returncode != 0 or (failed and int(failed.group(1))) or "aborted" in done.stderr:
        raise PgbenchError(f"pgbench failed ({done.returncode}): {done.stderr.strip()[-800:]}\n{out[-800:]}")
    tps = re.search(r"tps = ([\d.]+)", out)
    txs = re.search(r"number of transactions actually processed: (\d+)", out)
    statements = []
    if "statement latencies" in out:
        for line in out.split("statement latencies", 1)[1].splitlines()[1:]:
            match = re.match(r"\s+([\d.]+)\s+\d+\s+(.*)", line)
            if match:
                statements.append((float(match.group(1)), match.group(2).strip()))
    return Run(float(tps.group(1)) if tps else 0.0, statements, int(txs.group(1)) if txs else 0)


# --- statistics -------------------------------------------------------------------------------


@dataclass
class Paired:
    """Side-by-side trials of a variant and its baseline (each value: ms or tps)."""

    variant: list[float] = field(default_factory=list)
    baseline: list[float] = field(default_factory=list)

    @property
    def ratios(self) -> list[float]:
        return [v / b for v, b in zip(self.variant, self.baseline, strict=True) if b]

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)

    @property
    def spread(self) -> tuple[float, float]:
        return min(self.ratios), max(self.ratios)

    def as_dict(self, unit: str) -> dict[str, Any]:
        return {"unit": unit, "variant": [round(x, 4) for x in self.variant],
                "baseline": [round(x, 4) for x in self.baseline],
                "variant_median": round(statistics.median(self.variant), 4),
                "baseline_median": round(statistics.median(self.baseline), 4),
                "ratio_median": round(self.ratio, 3), "ratio_spread": [round(x, 3) for x in self.spread]}


def interleave(trials: int, variant: Callable[[], float], baseline: Callable[[], float],
               between: Callable[[str], None] | None = None) -> Paired:
    """Run variant and baseline `trials` times each, alternating which goes first."""
    paired = Paired()
    for trial in range(trials):
        order = [("variant", variant), ("baseline", baseline)]
        if trial % 2:
            order.reverse()
        for which, run in order:
            if between:
                between(which)
            value = run()
            (paired.variant if which == "variant" else paired.baseline).append(value)
    return paired


def timed(action: Callable[[], object]) -> float:
    """Milliseconds one call takes."""
    began = time.perf_counter()
    action()
    return (time.perf_counter() - began) * 1000
