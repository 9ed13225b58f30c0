"""The figures of DESIGN §7, each a variant measured side by side with its baseline.

pgbench scripts reproduce PostgREST's request (one transaction, `set_config` of role and
claims, then the query) and the Realtime server's checks. A variant and its baseline run the
same script shape, so the ratio isolates what is being judged (RLS, the RPC and trigger, the
policies on realtime.messages).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg

from bench.harness import Database, Dataset, Paired, Progress, Server, interleave, pgbench, timed
from dbtool.ops import reset
from dbtool.policy import estimates, plans
from dbtool.supabase import personas, postgrest, realtime


@dataclass
class Figure:
    key: str
    title: str
    goal: str  # "<= 1.15", ">= 0.65", "< 1", "== 1", ">= 150000" or "" (information only)
    value: float
    unit: str
    spread: tuple[float, float] | None = None
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def measured(self) -> str:
        if self.unit == "x":
            spread = f" ({self.spread[0]:.2f}–{self.spread[1]:.2f})" if self.spread else ""
            return f"{self.value:.2f}x{spread}"
        return f"{self.value:,.0f} {self.unit}"

    @property
    def verdict(self) -> str:
        if not self.goal:
            return "information"
        op, target = self.goal.split()
        bound = float(target)
        ok = {"<=": self.value <= bound, "<": self.value < bound, ">=": self.value >= bound, "==": self.value == bound}[op]
        if ok:
            return "met"
        miss = abs(self.value / bound - 1) if op in ("<=", "<", "==") else (1 - self.value / bound)
        return f"missed by {miss * 100:.0f}%"

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "title": self.title, "goal": self.goal, "value": round(self.value, 4),
                "unit": self.unit, "spread": self.spread, "measured": self.measured, "verdict": self.verdict,
                "data": self.data}


@dataclass(frozen=True)
class Settings:
    trials: int
    seconds: float


PICK = "\\set n random(1, :members)\n"
LOOKUP = ("SELECT uid, thread_id AS tid, claims, topic, cursor_at AS cat, cursor_id AS cid "
          "FROM bench.members WHERE n = :n \\gset\n")
READ_REQUEST = (
    "BEGIN ISOLATION LEVEL READ COMMITTED READ ONLY;\n"
    "SELECT set_config('search_path', '\"public\", \"extensions\"', true), set_config('role', :role, true), "
    "set_config('request.jwt.claims', :claims, true), set_config('request.method', 'GET', true), "
    "set_config('request.path', '/chat_messages', true), set_config('request.headers', '{}', true), "
    "set_config('request.cookies', '{}', true);\n"
)
HISTORY_PAGE = ("SELECT * FROM public.chat_messages m WHERE m.thread_id = :tid "
                "AND (m.created_at, m.id) < (:cat::timestamptz, :cid::bigint) "
                "ORDER BY m.created_at DESC, m.id DESC LIMIT 50;\n")
# The membership filter by hand, in a form whose plan does not rest on value statistics: since
# 0005 there are none on thread and user ids, and `thread_id IN (SELECT ...)` is then planned
# from default estimates (100 threads of 5,000 messages each) as a hash join over a sequential
# scan of chat_messages: 130-220 ms at 1M messages instead of about 0.3 ms, which would make
# any variant look fast. The array form is computed once and walks the index with or without them.
MEMBERSHIP = ('"public"."chat_messages".thread_id = ANY (ARRAY(SELECT t.thread_id FROM public.chat_threads t '
              "WHERE t.user_a_supabase_id = :uid::uuid OR t.user_b_supabase_id = :uid::uuid))")
# A query through RLS never runs in parallel (auth.uid() is parallel unsafe). From default
# estimates the owner's page would (a parallel bitmap scan: ~19 ms at 1M messages, workers'
# start-up, against ~2.5 ms serial): the baseline runs serial too, so that the figure
# compares the same plan with and without RLS.
SERIAL = "SET LOCAL max_parallel_workers_per_gather = 0;\n"


def _request(query: str) -> str:
    return PICK + LOOKUP + READ_REQUEST + query + "COMMIT;\n"


def _statement(prefix: str) -> Callable[[str], bool]:
    return lambda text: text.startswith(prefix)


def _paired_latency(db: Database, s: Settings, variant: str, baseline: str, measure: Callable[[str], bool],
                    members: int, variant_vars: dict[str, Any], baseline_vars: dict[str, Any],
                    admin: bool = False) -> Paired:
    def run(script: str, extra: dict[str, Any]) -> float:
        result = pgbench(db, script, seconds=s.seconds, admin=admin, variables={"members": members, **extra})
        return result.latency_ms(measure)

    return interleave(s.trials, lambda: run(variant, variant_vars), lambda: run(baseline, baseline_vars))


def history(data: Dataset, s: Settings) -> list[Figure]:
    """A history page (50 rows, keyset) as a participant through RLS vs the owner without RLS;
    and, for information, the chat_history RPC against the same owner query."""
    script = _request(HISTORY_PAGE)
    measure = _statement("SELECT * FROM public.chat_messages m")
    rls = _paired_latency(data.db, s, script, script, measure, data.members, {"role": "authenticated"},
                          {"role": "postgres"})
    rpc_script = _request("SELECT * FROM public.chat_history(:tid, :cat::timestamptz, :cid::bigint, 50);\n")
    rpc = interleave(
        s.trials,
        lambda: pgbench(data.db, rpc_script, seconds=s.seconds,
                        variables={"members": data.members, "role": "authenticated"}).latency_ms(
            _statement("SELECT * FROM public.chat_history")),
        lambda: pgbench(data.db, script, seconds=s.seconds, variables={"members": data.members, "role": "postgres"})
        .latency_ms(measure))
    return [
        Figure("history_rls", "history page (50 rows, keyset): participant through RLS vs owner without RLS",
               "<= 1.15", rls.ratio, "x", rls.spread, rls.as_dict("ms per page")),
        Figure("history_rpc", "chat_history() RPC as participant vs the page query as owner (PL/pgSQL, checks)",
               "", rpc.ratio, "x", rpc.spread, rpc.as_dict("ms per call")),
    ]


def _plan_evidence(data: Dataset, query: str) -> dict[str, Any]:
    with data.db.connect(admin=True) as conn:
        row = conn.execute("select uid from bench.members where n = 1").fetchone()
        assert row is not None
        who = personas.user("member", row[0])
        return {mode: plans.shape(plans.explain(conn, who, query, [], [], generic=mode == "generic")).as_dict()
                for mode in ("custom", "generic")}


def member_reads(data: Dataset, s: Settings) -> list[Figure]:
    """A member's unfiltered page and count through RLS vs the hand-filtered query as owner."""
    page_rls = postgrest.read_query("chat_messages", "created_at", count=False, limit="50", offset="0")
    page_hand = postgrest.read_query("chat_messages", "created_at", count=False, where=MEMBERSHIP, limit="50",
                                     offset="0")
    count_rls = "SELECT count(*) FROM public.chat_messages"
    count_hand = f"SELECT count(*) FROM public.chat_messages WHERE {MEMBERSHIP}"
    page = _paired_latency(data.db, s, _request(page_rls + ";\n"), _request(SERIAL + page_hand + ";\n"),
                           _statement("WITH pgrst_source"), data.members, {"role": "authenticated"},
                           {"role": "postgres"})
    count = _paired_latency(data.db, s, _request(count_rls + ";\n"), _request(SERIAL + count_hand + ";\n"),
                            _statement("SELECT count(*)"), data.members, {"role": "authenticated"},
                            {"role": "postgres"})
    return [
        Figure("member_page", "member's unfiltered GET /chat_messages?limit=50&order=created_at.desc through RLS vs "
               "the membership filter by hand as owner", "<= 1.3", page.ratio, "x", page.spread,
               {**page.as_dict("ms per request"), "plans": _plan_evidence(data, page_rls.replace("50", "50"))}),
        Figure("member_count", "member's count(*) through RLS vs the membership filter by hand as owner",
               "<= 1.3", count.ratio, "x", count.spread,
               {**count.as_dict("ms per count"), "plans": _plan_evidence(data, count_rls)}),
    ]


BUSY_SHARE = 50  # the busy thread gets 1/50 of the dataset's messages: 20,000 at 1M, as in the issue


def planned_estimates(data: Dataset) -> list[Figure]:
    """An outsider's Prefer: count=planned on a busy thread vs on a thread that does not exist
    (estimates, not times), at head and, for information, with the statistics 0005 takes away
    (what a database analysed before 0005 answers until `dbtool clear-stats`). The busy thread
    and the statistics exist only inside a transaction that is rolled back."""
    busy_messages = max(data.messages // BUSY_SHARE, 100)
    with data.db.connect(admin=True) as conn, conn.transaction():
        busy, uid = conn.execute(  # a member's thread, and a member who takes no part in it
            "select b.thread_id, o.uid from bench.members b join public.chat_threads t on t.thread_id = b.thread_id "
            "join bench.members o on o.uid::uuid not in (t.user_a_supabase_id, t.user_b_supabase_id) "
            "where b.n = 1 order by o.n limit 1").fetchone()  # type: ignore[misc]
        conn.execute("set local session_replication_role = replica")  # history, not live traffic: no broadcasts
        conn.execute(
            "insert into public.chat_messages (thread_id, sender_mongo_id, recipient_mongo_id, sender_supabase_id, body) "
            "select b.thread_id, b.mongo, b.partner, b.uid::uuid, 'busy ' || g "
            "from bench.members b, generate_series(1, %s) g where b.n = 1", (busy_messages,))
        conn.execute("analyze public.chat_messages")
        outsider = personas.user("outsider", uid)
        values = {"missing": "ffffffffffffffffffffffff_fffffffffffffffffffffffe", "busy thread": busy}

        def counts() -> dict[str, int]:
            got = estimates.planned_counts(conn, outsider, "chat_messages", "thread_id", values)
            assert got.ok, got.describe()
            return {r["value"]: r["planned"] for r in got.rows}

        now = counts()
        conn.execute("alter table public.chat_messages alter column thread_id set statistics -1")
        conn.execute("analyze public.chat_messages (thread_id)")
        before = counts()
        raise psycopg.Rollback
    title = (f"an outsider's Prefer: count=planned on a busy thread ({busy_messages:,} messages she cannot see) vs on "
             "a missing thread (the estimate, not time)")
    return [
        Figure("estimate_planned", title, "== 1", now["busy thread"] / now["missing"], "x", None,
               {"planned_rows": now}),
        Figure("estimate_before_0005", "the same with statistics from before 0005 (until dbtool clear-stats)", "",
               before["busy thread"] / before["missing"], "x", None, {"planned_rows": before}),
    ]


def _post(role: str, path: str, statement: str, callers: str = "bench.members") -> str:
    """A PostgREST POST request: one transaction, its settings, the statement."""
    return (PICK + "BEGIN;\n"
            "SELECT set_config('search_path', '\"public\", \"extensions\"', true), "
            f"set_config('role', '{role}', true), set_config('request.jwt.claims', b.claims, true), "
            f"set_config('request.method', 'POST', true), set_config('request.path', '{path}', true), "
            "set_config('request.headers', '{}', true), set_config('request.cookies', '{}', true) "
            f"FROM {callers} b WHERE b.n = :n;\n" + statement + "COMMIT;\n")


RAW_ROW = ("INSERT INTO public.chat_messages (thread_id, sender_mongo_id, recipient_mongo_id, sender_supabase_id, body) "
           "SELECT b.thread_id, b.mongo, b.partner, b.uid::uuid, 'benchmark message' FROM bench.members b WHERE b.n = :n;\n")
RPC_INSERT = _post("authenticated", "/rpc/insert_chat_message",
                   "SELECT r.id FROM bench.members b CROSS JOIN LATERAL "
                   "public.insert_chat_message(b.thread_id, b.mongo, b.partner, 'benchmark message') r WHERE b.n = :n;\n")
GUEST_RPC_INSERT = _post("authenticated", "/rpc/insert_chat_message",
                         "SELECT r.id FROM bench.guests g CROSS JOIN LATERAL "
                         "public.insert_chat_message(g.thread_id, null, null, 'benchmark message') r WHERE g.n = :n;\n",
                         callers="bench.guests")
# The same row as the owner, in the same request shape: no RPC, no RLS, broadcast trigger off.
RAW_INSERT = _post("postgres", "/chat_messages", RAW_ROW)
BARE_INSERT = PICK + RAW_ROW  # one autocommit statement, no request around it


DURABLE = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
DEV = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


def _server_settings(conn: psycopg.Connection[Any], settings: dict[str, str]) -> None:
    for name, value in settings.items():
        conn.execute(f"alter system set {name} = {value}")
    conn.execute("select pg_reload_conf()")
    time.sleep(0.2)


def inserts(data: Dataset, s: Settings, clients: tuple[int, ...] = (1, 2, 8)) -> list[Figure]:
    """insert_chat_message through PostgREST (RPC, RLS, trigger, broadcast) vs a raw INSERT of
    the same row as the owner in the same request (no RPC, no RLS, trigger off): throughput at
    N clients, with durable commits as in production and with the dev server's fsync=off
    (which leaves only CPU to compare). Also, for information, against a bare autocommit INSERT."""
    figures = []
    with data.db.connect(admin=True) as conn:

        def trigger(which: str) -> None:
            state = "enable" if which == "variant" else "disable"
            conn.execute(f"alter table public.chat_messages {state} trigger chat_messages__broadcast")

        def tps(script: str, n: int) -> float:
            return pgbench(data.db, script, clients=n, seconds=s.seconds, variables={"members": data.members}).tps

        try:
            for label, settings in (("durable commits", DURABLE), ("fsync off", DEV)):
                _server_settings(conn, settings)
                for n in clients:
                    pair = interleave(s.trials, lambda n=n: tps(RPC_INSERT, n), lambda n=n: tps(RAW_INSERT, n),
                                      between=trigger)
                    figures.append(Figure(
                        f"insert_{n}_{'durable' if settings is DURABLE else 'fsync_off'}",
                        f"insert_chat_message (RPC + trigger + broadcast) vs raw INSERT in the same request, "
                        f"{n} client(s), {label}", ">= 0.65" if n > 1 else "", pair.ratio, "x", pair.spread,
                        pair.as_dict("transactions/s")))
            bare = interleave(s.trials, lambda: tps(RPC_INSERT, 2), lambda: tps(BARE_INSERT, 2), between=trigger)
            figures.append(Figure("insert_2_bare", "insert_chat_message request vs a bare autocommit INSERT (one "
                                  "round trip, no request), 2 clients, fsync off", "", bare.ratio, "x", bare.spread,
                                  bare.as_dict("transactions/s")))
        finally:
            trigger("variant")
            _server_settings(conn, DEV)
    return figures


RPC_INSERT_CLIENT_ID = _post("authenticated", "/rpc/insert_chat_message",
                             "SELECT r.id FROM bench.members b CROSS JOIN LATERAL public.insert_chat_message("
                             "b.thread_id, b.mongo, b.partner, 'benchmark message', gen_random_uuid()) r "
                             "WHERE b.n = :n;\n")
LIMIT_TRIGGER = "chat_messages__rate_limit"


def limits(data: Dataset, s: Settings, clients: tuple[int, ...] = (2, 8)) -> list[Figure]:
    """The same insert_chat_message request with the abuse limits on vs off (the limit trigger
    disabled, so no limiter code runs at all): throughput at N clients, fsync off (CPU only,
    the strictest comparison). The bench raised the limits so that nothing is refused: every
    send does the full work of counting, none stops early. For information, the same with a
    _client_id (the limiter then also checks for a retry)."""
    figures = []
    with data.db.connect(admin=True) as conn:

        def trigger(which: str) -> None:
            state = "enable" if which == "variant" else "disable"
            conn.execute(f"alter table public.chat_messages {state} trigger {LIMIT_TRIGGER}")

        def tps(script: str, n: int) -> float:
            return pgbench(data.db, script, clients=n, seconds=s.seconds, variables={"members": data.members}).tps

        try:
            for n in clients:
                pair = interleave(s.trials, lambda n=n: tps(RPC_INSERT, n), lambda n=n: tps(RPC_INSERT, n),
                                  between=trigger)
                figures.append(Figure(f"limits_{n}", f"insert_chat_message with the abuse limits vs the same send "
                                      f"with them switched off, {n} clients, fsync off", ">= 0.9", pair.ratio, "x",
                                      pair.spread, pair.as_dict("transactions/s")))
            keyed = interleave(s.trials, lambda: tps(RPC_INSERT_CLIENT_ID, 2), lambda: tps(RPC_INSERT_CLIENT_ID, 2),
                               between=trigger)
            figures.append(Figure("limits_2_client_id", "the same with a _client_id (the limiter also looks for a "
                                  "retry), 2 clients, fsync off", "", keyed.ratio, "x", keyed.spread,
                                  keyed.as_dict("transactions/s")))
        finally:
            trigger("variant")
    return figures


REALTIME_SETTINGS = (
    "SELECT set_config('role', :role, true), set_config('realtime.topic', :topic, true), "
    "set_config('request.jwt.claims', :claims, true), set_config('request.jwt.claim.sub', :uid, true), "
    "set_config('request.jwt.claim.role', 'authenticated', true), set_config('request.headers', '{}', true);\n"
)
READ_CHECK = (
    PICK + LOOKUP + "BEGIN;\n"
    "WITH probe AS (INSERT INTO realtime.messages (id, topic, extension, inserted_at, updated_at) "
    "SELECT gen_random_uuid(), :topic, e, now() AT TIME ZONE 'utc', now() AT TIME ZONE 'utc' "
    "FROM unnest(array['broadcast', 'presence']) e RETURNING id) SELECT array_agg(id)::text AS ids FROM probe \\gset\n"
    + REALTIME_SETTINGS + "SELECT id FROM realtime.messages WHERE id = ANY(:ids::uuid[]);\nROLLBACK;\n"
)
WRITE_CHECK = (
    PICK + LOOKUP + "BEGIN;\n" + REALTIME_SETTINGS + "SAVEPOINT write_check;\n"
    "INSERT INTO realtime.messages (topic, extension, updated_at, inserted_at) "
    "VALUES (:topic, 'presence', now() AT TIME ZONE 'utc', now() AT TIME ZONE 'utc');\n"
    "ROLLBACK TO SAVEPOINT write_check;\nROLLBACK;\n"
)


GUEST_READ_CHECK = READ_CHECK.replace(LOOKUP, "SELECT uid, topic, claims FROM bench.guests WHERE n = :n \\gset\n")


def _check_transaction(text: str) -> bool:
    """The Realtime server's transaction, without pgbench's own member lookup."""
    return not text.startswith(("\\set", "SELECT uid, thread_id", "SELECT uid, topic, claims"))


def guests(data: Dataset, s: Settings) -> list[Figure]:
    """Guest links (DESIGN §8): a guest's send in their guest thread vs a participant's in a
    direct thread (the same RPC, request shape and thread size), throughput at 2 clients; and
    the Realtime join read check of a guest vs of a direct-thread participant."""
    with data.db.connect(admin=True) as conn:
        uid, topic = conn.execute("select uid, topic from bench.guests where n = 1").fetchone()  # type: ignore[misc]
        assert realtime.read_check(conn, personas.anonymous("guest", uid), topic).can_join
        conn.execute("truncate realtime.messages")

    def tps(script: str) -> float:
        return pgbench(data.db, script, clients=2, seconds=s.seconds, variables={"members": data.members}).tps

    send = interleave(s.trials, lambda: tps(GUEST_RPC_INSERT), lambda: tps(RPC_INSERT))

    def check(script: str) -> float:
        return pgbench(data.db, script, seconds=s.seconds, admin=True,
                       variables={"members": data.members, "role": "authenticated"}).latency_ms(_check_transaction)

    join = interleave(s.trials, lambda: check(GUEST_READ_CHECK), lambda: check(READ_CHECK))
    return [
        Figure("guest_insert", "a guest's insert_chat_message in a guest thread vs a participant's in a direct "
               "thread, 2 clients", ">= 0.9", send.ratio, "x", send.spread, send.as_dict("transactions/s")),
        Figure("guest_join", "Realtime join (read) check of a guest vs of a direct-thread participant",
               "<= 1.2", join.ratio, "x", join.spread, join.as_dict("ms per check")),
    ]


def _sanity(data: Dataset) -> None:
    """The checks must really succeed for these participants (else we would time refusals)."""
    with data.db.connect(admin=True) as conn:
        uid, topic = conn.execute("select uid, topic from bench.members where n = 1").fetchone()  # type: ignore[misc]
        who = personas.user("member", uid)
        assert realtime.read_check(conn, who, topic).allowed == {"broadcast": True, "presence": True}
        assert realtime.write_check(conn, who, topic, ("presence",)).allowed == {"presence": True}


def realtime_checks(small: Dataset, large: Dataset, s: Settings) -> list[Figure]:
    """The join read check and the presence write check, as a participant vs the same
    transaction as the owner, on 1k and on 10k threads."""
    figures = []
    latency: dict[tuple[str, int], Paired] = {}
    for data in (small, large):
        # Earlier figures left their broadcasts in the queue (hundreds of thousands on the large
        # dataset only); Realtime prunes it in production. Compare like with like: empty both.
        with data.db.connect(admin=True) as conn:
            conn.execute("truncate realtime.messages")
        _sanity(data)
        for name, script in (("read", READ_CHECK), ("write", WRITE_CHECK)):
            latency[(name, data.threads)] = _paired_latency(
                data.db, s, script, script, _check_transaction, data.members, {"role": "authenticated"},
                {"role": "supabase_admin"}, admin=True)
    for data in (large, small):
        pair = latency[("read", data.threads)]
        figures.append(Figure(f"join_read_{data.threads}", f"Realtime join (read) check vs the owner's transaction, "
                              f"{data.threads:,} threads", "<= 2", pair.ratio, "x", pair.spread,
                              pair.as_dict("ms per check")))
    for name in ("read", "write"):
        at_small = statistics.median(latency[(name, small.threads)].variant)
        at_large = statistics.median(latency[(name, large.threads)].variant)
        figures.append(Figure(
            f"join_{name}_flat", f"Realtime {name} check latency at {large.threads:,} vs {small.threads:,} threads "
            "(flat = ~1)", "<= 1.25", at_large / at_small, "x", None,
            {"unit": "ms per check", f"{small.threads}_threads": round(at_small, 4),
             f"{large.threads}_threads": round(at_large, 4),
             "owner_ratio": {str(k[1]): round(v.ratio, 3) for k, v in latency.items() if k[0] == name}}))
    return figures


def reset_vs_create(server: Server, s: Settings, progress: Progress) -> list[Figure]:
    """A repeat `dbtool reset` of an unchanged schema vs one bare CREATE DATABASE, same server."""
    db = server.database("bench_reset")
    target = Database(db.url, db.admin_url, "bench", True)
    progress("reset: first build")
    reset.reset(target)
    with psycopg.connect(db.admin_url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:

        def create() -> float:
            ms = timed(lambda: conn.execute("create database bench_bare"))
            conn.execute("drop database bench_bare")
            return ms

        pair = interleave(max(s.trials, 3) * 3, lambda: timed(lambda: reset.reset(target)), create)
    cli = [timed(lambda: subprocess.run([sys.executable, "-m", "dbtool", "reset", "--database-url", db.admin_url],
                                        capture_output=True, check=True)) for _ in range(3)]
    return [
        Figure("reset", "repeat dbtool reset (schema unchanged) vs one bare CREATE DATABASE", "< 1",
               pair.ratio, "x", pair.spread, pair.as_dict("ms")),
        Figure("reset_cli", "the same reset as a command (`dbtool reset`, including Python start-up), ms",
               "", statistics.median(cli), "ms", None, {"ms": [round(x, 1) for x in cli]}),
    ]


def seeding(data: Dataset) -> Figure:
    load = data.load
    return Figure("seed", f"dbtool seed --profile load ({load.messages:,} messages, COPY + index and constraint "
                  "rebuild)", ">= 150000", load.rate, "messages/s", None, load.as_dict())
