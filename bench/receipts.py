"""The figures of DESIGN §7 for receipts and the inbox (revisions 0008 and 0010).

* chat_inbox's first page (30 threads) for a user in 1,000 threads vs the same rows by a
  hand-written query as the owner, and its latency at 1,000 vs 100 threads (flat).
* mark_chat_read vs a bare UPDATE of one receipt row, throughput at 2 clients. Every call
  moves the cursor (a write and a broadcast, the real cost): each client marks the next
  message of its own thread, a counter kept in pgbench's client variables.
* What the inbox costs a send: insert_chat_message with the activity trigger (0008, moved to
  its own table by 0010) and the unread index vs without them, in the same run.
"""

from __future__ import annotations

import statistics

from bench.figures import Figure, Settings, _paired_latency
from bench.harness import Dataset, interleave, pgbench

INBOX_SIZES = (100, 1000)  # threads of the two inbox users (a tenth of that on a dataset with too few users)
MARK_MESSAGES = 200_000  # per client thread: more than any trial can mark (a bare UPDATE on a quiet machine: ~15k/s)

# Heavy inbox users: one with 100 threads, one with 1,000, their partners picked from the
# loaded users (half sort before them: both participant columns are used), 6 messages per
# thread spread over the load's 90 days, receipts leaving 0..3 unread.
INBOX_SQL = """
insert into auth.users (id, email) values (%(uid)s, %(email)s);
insert into public.chat_identities (supabase_user_id, mongo_id) values (%(uid)s, %(mongo)s);
insert into public.chat_threads (thread_id, user_a_mongo_id, user_a_supabase_id, user_b_mongo_id, user_b_supabase_id,
                                 created_at)
select least(i.mongo_id, %(mongo)s) || '_' || greatest(i.mongo_id, %(mongo)s), least(i.mongo_id, %(mongo)s),
       case when i.mongo_id < %(mongo)s then i.supabase_user_id else %(uid)s::uuid end,
       greatest(i.mongo_id, %(mongo)s),
       case when i.mongo_id < %(mongo)s then %(uid)s::uuid else i.supabase_user_id end,
       timestamptz '2025-10-01'
from (select * from public.chat_identities where mongo_id <> %(mongo)s
      order by md5(mongo_id || %(mongo)s) limit %(threads)s) i;
insert into public.chat_messages (thread_id, sender_mongo_id, recipient_mongo_id, sender_supabase_id, body, created_at)
select t.thread_id,
       case when g %% 2 = 0 then t.user_a_mongo_id else t.user_b_mongo_id end,
       case when g %% 2 = 0 then t.user_b_mongo_id else t.user_a_mongo_id end,
       case when g %% 2 = 0 then t.user_a_supabase_id else t.user_b_supabase_id end,
       'inbox message ' || g, timestamptz '2025-10-03' + make_interval(secs => (abs(hashtext(t.thread_id)) %% 7000000) + g * 60)
from public.chat_threads t cross join generate_series(1, 6) g
where %(uid)s::uuid in (t.user_a_supabase_id, t.user_b_supabase_id);
insert into chat_private.chat_thread_activity (thread_id, user_a_supabase_id, user_b_supabase_id, activity_at,
                                               last_message_id)
select t.thread_id, t.user_a_supabase_id, t.user_b_supabase_id, l.created_at, l.id
from public.chat_threads t
cross join lateral (select m.id, m.created_at from public.chat_messages m where m.thread_id = t.thread_id
                    order by m.created_at desc, m.id desc limit 1) l
where %(uid)s::uuid in (t.user_a_supabase_id, t.user_b_supabase_id);
insert into public.chat_receipts (thread_id, supabase_user_id, delivered_up_to, read_up_to)
select a.thread_id, p.uid, a.last_message_id, r.id
from chat_private.chat_thread_activity a
cross join lateral (values (a.user_a_supabase_id), (a.user_b_supabase_id)) p(uid)
cross join lateral (select m.id from public.chat_messages m where m.thread_id = a.thread_id
                    order by m.id desc offset abs(hashtext(a.thread_id || p.uid::text)) %% 4 limit 1) r
where %(uid)s::uuid in (a.user_a_supabase_id, a.user_b_supabase_id);
"""

# The best hand-written query for the same rows, as the owner: the same merge of three
# index range scans and per-row lookups, with the caller's id inlined.
INBOX_BY_HAND = """
WITH page AS (
  (SELECT a.thread_id, a.activity_at, a.last_message_id FROM chat_private.chat_thread_activity a
   WHERE a.user_a_supabase_id = :uid::uuid ORDER BY a.activity_at DESC, a.thread_id DESC LIMIT 30)
  UNION ALL
  (SELECT a.thread_id, a.activity_at, a.last_message_id FROM chat_private.chat_thread_activity a
   WHERE a.user_b_supabase_id = :uid::uuid ORDER BY a.activity_at DESC, a.thread_id DESC LIMIT 30)
  UNION ALL
  (SELECT a.thread_id, a.activity_at, a.last_message_id FROM chat_private.chat_thread_activity a
   JOIN public.chat_threads g ON g.thread_id = a.thread_id WHERE a.guest_supabase_id = :uid::uuid
     AND g.guest_ended_at IS NULL AND g.guest_expires_at > now() ORDER BY a.activity_at DESC, a.thread_id DESC LIMIT 30)
  ORDER BY activity_at DESC, thread_id DESC LIMIT 30)
SELECT p.thread_id, t.kind, CASE WHEN t.user_a_supabase_id = :uid::uuid THEN t.user_b_mongo_id ELSE t.user_a_mongo_id END,
       p.last_message_id, m.sender_supabase_id, m.created_at, left(m.body, 200), p.activity_at,
       (SELECT count(*)::integer FROM public.chat_messages u WHERE u.thread_id = p.thread_id
          AND u.id > coalesce(mine.read_up_to, 0) AND u.sender_supabase_id <> :uid::uuid),
       other.delivered_up_to, other.read_up_to
FROM page p
JOIN public.chat_threads t ON t.thread_id = p.thread_id
LEFT JOIN public.chat_messages m ON m.id = p.last_message_id
LEFT JOIN public.chat_receipts mine ON mine.thread_id = p.thread_id AND mine.supabase_user_id = :uid::uuid
LEFT JOIN public.chat_receipts other ON other.thread_id = p.thread_id AND other.supabase_user_id <> :uid::uuid
ORDER BY p.activity_at DESC, p.thread_id DESC;
""".replace("\n", " ").strip() + "\n"


def _inbox_request(role: str, query: str) -> str:
    return ("BEGIN ISOLATION LEVEL READ COMMITTED READ ONLY;\n"
            "SELECT set_config('search_path', '\"public\", \"extensions\"', true), set_config('role', :role, true), "
            "set_config('request.jwt.claims', :claims, true), set_config('request.method', 'POST', true), "
            "set_config('request.path', '/rpc/chat_inbox', true), set_config('request.headers', '{}', true), "
            "set_config('request.cookies', '{}', true);\n" + query + "COMMIT;\n")


INBOX_RPC = _inbox_request("authenticated", "SELECT * FROM public.chat_inbox(30);\n")
INBOX_HAND = _inbox_request("postgres", INBOX_BY_HAND)


def inbox_sizes(data: Dataset) -> tuple[int, int]:
    small, big = INBOX_SIZES
    return (small, big) if data.users > big else (small // 10 + 5, big // 10 + 50)


def _inbox_users(data: Dataset) -> dict[int, str]:
    """Create the heavy inbox users once; their uid per thread count."""
    users = {}
    with data.db.connect(admin=True) as conn, conn.transaction():
        for n, threads in enumerate(inbox_sizes(data)):
            uid = f"1b0c0000-0000-4000-8000-{n:012d}"
            users[threads] = uid
            if conn.execute("select from auth.users where id = %s", (uid,)).fetchone():
                continue
            conn.execute("set local session_replication_role = replica")  # bulk data: no broadcasts
            for statement in INBOX_SQL.split(";\n"):
                if statement.strip():
                    conn.execute(statement, {"uid": uid, "email": f"inbox{threads}@bench.invalid",
                                             "mongo": f"8{n:023x}", "threads": threads})
    with data.db.connect(admin=True) as conn:
        conn.execute("vacuum (analyze) public.chat_threads, public.chat_messages, public.chat_receipts, "
                     "chat_private.chat_thread_activity")
    return users


def inbox(data: Dataset, s: Settings) -> list[Figure]:
    users = _inbox_users(data)
    latency = {}
    for n, (threads, uid) in enumerate(users.items()):
        mongo = f"8{n:023x}"
        claims = f'{{"sub": "{uid}", "role": "authenticated", "aud": "authenticated"}}'
        latency[threads] = _paired_latency(
            data.db, s, INBOX_RPC, INBOX_HAND,
            lambda text: text.startswith(("SELECT * FROM public.chat_inbox", "WITH page AS")), data.members,
            {"role": "authenticated", "claims": claims, "uid": uid},
            {"role": "postgres", "claims": claims, "uid": uid, "mongo": mongo})
    small, big = inbox_sizes(data)
    flat = statistics.median(latency[big].variant) / statistics.median(latency[small].variant)
    return [
        Figure("inbox_large", f"chat_inbox first page (30 threads) for a user in {big:,} threads vs the same rows by "
               "hand as owner", "<= 1.5", latency[big].ratio, "x", latency[big].spread,
               latency[big].as_dict("ms per page")),
        Figure("inbox_small", f"the same at {small} threads", "<= 1.5", latency[small].ratio, "x",
               latency[small].spread, latency[small].as_dict("ms per page")),
        Figure("inbox_flat", f"chat_inbox first page latency at {big:,} vs {small} threads (flat = ~1)", "<= 1.25",
               flat, "x", None, {"unit": "ms per page", f"{small}_threads": round(
                   statistics.median(latency[small].variant), 4),
                   f"{big}_threads": round(statistics.median(latency[big].variant), 4)}),
    ]


# --- mark_chat_read ------------------------------------------------------------------------

MARKS_SQL = """
create table bench.marks as
select b.n - 1 as c, b.uid, b.thread_id, b.claims, b.mongo, b.partner from bench.members b where b.n <= 2;
alter table bench.marks add column first_id bigint;
grant select on bench.marks to postgres, authenticated;
"""


def _mark_request(role: str, path: str, statement: str) -> str:
    """The client's next message id (a counter in pgbench's client variables, which persist
    across transactions), then one PostgREST request."""
    return ("\\set k :k + 1\n"
            "SELECT uid, thread_id AS tid, claims, first_id AS base FROM bench.marks WHERE c = :client_id \\gset\n"
            "\\set up :base + :k\n"
            "BEGIN;\n"
            "SELECT set_config('search_path', '\"public\", \"extensions\"', true), "
            f"set_config('role', '{role}', true), set_config('request.jwt.claims', :claims, true), "
            f"set_config('request.method', 'POST', true), set_config('request.path', '{path}', true), "
            "set_config('request.headers', '{}', true), set_config('request.cookies', '{}', true);\n"
            + statement + "COMMIT;\n")


ROW_UPDATE = ("UPDATE public.chat_receipts SET read_up_to = :up, read_at = now(), "
              "delivered_up_to = greatest(delivered_up_to, :up::bigint) "
              "WHERE thread_id = :tid AND supabase_user_id = :uid::uuid;\n")
MARK_RPC = _mark_request("authenticated", "/rpc/mark_chat_read",
                         "SELECT r.read_up_to FROM public.mark_chat_read(:tid, :up::bigint) r;\n")
MARK_RAW = _mark_request("postgres", "/chat_receipts", ROW_UPDATE)
MARK_BARE = ("\\set k :k + 1\n"
             "SELECT uid, thread_id AS tid, first_id AS base FROM bench.marks WHERE c = :client_id \\gset\n"
             "\\set up :base + :k\n" + ROW_UPDATE)


def _mark_threads(data: Dataset) -> None:
    """Two threads (one per client) with MARK_MESSAGES consecutive message ids each."""
    with data.db.connect(admin=True) as conn, conn.transaction():
        if conn.execute("select to_regclass('bench.marks')").fetchone() != (None,):
            return
        conn.execute(MARKS_SQL)
        conn.execute("set local session_replication_role = replica")
        for c, uid, thread, mongo, partner in conn.execute(
                "select c, uid, thread_id, mongo, partner from bench.marks order by c").fetchall():
            first = conn.execute(
                "insert into public.chat_messages (thread_id, sender_mongo_id, recipient_mongo_id, sender_supabase_id, "
                "body, created_at) select %s, %s, %s, i.supabase_user_id, 'to be read ' || g, "
                "timestamptz '2025-12-31' + make_interval(secs => g) from generate_series(1, %s) g "
                "join public.chat_identities i on i.mongo_id = %s returning id",
                (thread, partner, mongo, MARK_MESSAGES, partner)).fetchall()
            ids = sorted(r[0] for r in first)
            assert ids[-1] - ids[0] == MARK_MESSAGES - 1, "message ids must be consecutive"
            conn.execute("update bench.marks set first_id = %s where c = %s", (ids[0] - 1, c))
            conn.execute("insert into public.chat_receipts (thread_id, supabase_user_id) values (%s, %s) "
                         "on conflict do nothing", (thread, uid))
    with data.db.connect(admin=True) as conn:
        conn.execute("vacuum (analyze) public.chat_messages, public.chat_receipts")


def marks(data: Dataset, s: Settings) -> list[Figure]:
    _mark_threads(data)
    with data.db.connect(admin=True) as conn:

        def rewind(which: str) -> None:
            conn.execute("update public.chat_receipts r set delivered_up_to = 0, read_up_to = 0 from bench.marks b "
                         "where r.thread_id = b.thread_id and r.supabase_user_id = b.uid::uuid")
            conn.execute("delete from realtime.messages where event = 'READ'")

        def tps(script: str) -> float:
            run = pgbench(data.db, script, clients=2, seconds=s.seconds, variables={"k": 0})
            return run.tps

        pair = interleave(s.trials, lambda: tps(MARK_RPC), lambda: tps(MARK_RAW), between=rewind)
        bare = interleave(s.trials, lambda: tps(MARK_RPC), lambda: tps(MARK_BARE), between=rewind)
        moved = conn.execute("select min(read_up_to - b.first_id) from public.chat_receipts r join bench.marks b "
                             "on r.thread_id = b.thread_id and r.supabase_user_id = b.uid::uuid").fetchone()
    assert moved is not None and moved[0] and moved[0] < MARK_MESSAGES, "marks must move the cursor every time"
    return [
        Figure("mark_read_2", "mark_chat_read (moves the cursor, broadcasts READ) vs a raw UPDATE of the row in the "
               "same request, 2 clients", ">= 0.7", pair.ratio, "x", pair.spread, pair.as_dict("transactions/s")),
        Figure("mark_read_2_bare", "mark_chat_read request vs a bare autocommit UPDATE of the row, 2 clients", "",
               bare.ratio, "x", bare.spread, bare.as_dict("transactions/s")),
    ]


# --- what the inbox costs a send -------------------------------------------------------------

UNREAD_INDEX = "chat_messages_thread_id_id_idx"


def send_cost(data: Dataset, s: Settings, rpc_insert: str) -> list[Figure]:
    """insert_chat_message with vs without 0008's additions to the send, each measured on its
    own: the thread trigger (toggled; the index stays), and the unread index (dropped and
    rebuilt between trials, then a checkpoint, so that neither side runs behind the build's
    writes)."""
    with data.db.connect(admin=True) as conn:
        definition = conn.execute("select pg_get_indexdef(%s::regclass)", (f"public.{UNREAD_INDEX}",)).fetchone()
        assert definition is not None

        def trigger(which: str) -> None:
            state = "enable" if which == "variant" else "disable"
            conn.execute(f"alter table public.chat_messages {state} trigger chat_messages__touch_thread")
            conn.execute("checkpoint")

        def index(which: str) -> None:
            present = conn.execute("select to_regclass(%s)", (f"public.{UNREAD_INDEX}",)).fetchone() != (None,)
            if which == "variant" and not present:
                conn.execute(definition[0])
            elif which == "baseline" and present:
                conn.execute(f"drop index public.{UNREAD_INDEX}")
            conn.execute("checkpoint")

        def tps(n: int) -> float:
            return pgbench(data.db, rpc_insert, clients=n, seconds=s.seconds, variables={"members": data.members}).tps

        figures = []
        try:
            for n in (2, 8):
                pair = interleave(s.trials, lambda n=n: tps(n), lambda n=n: tps(n), between=trigger)
                figures.append(Figure(
                    f"insert_touch_{n}", f"insert_chat_message with vs without the inbox's activity trigger "
                    f"(chat_messages__touch_thread), {n} clients, fsync off", "", pair.ratio, "x", pair.spread,
                    pair.as_dict("transactions/s")))
            trigger("variant")
            pair = interleave(s.trials, lambda: tps(2), lambda: tps(2), between=index)
            figures.append(Figure(
                "insert_unread_index_2", "insert_chat_message with vs without 0008's unread index (thread_id, id), "
                "2 clients, fsync off", "", pair.ratio, "x", pair.spread, pair.as_dict("transactions/s")))
        finally:
            trigger("variant")
            index("variant")
    return figures
