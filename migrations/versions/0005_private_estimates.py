"""private estimates: no value statistics on columns that name people, threads or texts

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

Why (DBA notes):
* PostgREST answers `Prefer: count=planned|estimated` with the planner's row estimate, and
  the planner estimates from statistics built over all rows. RLS does not stop it: `=`, `<`
  and the other comparison operators on text and uuid are leakproof, so the planner may use
  the most-common values and histograms of a table under RLS. Measured at 1M messages, an
  outsider's estimate for a thread of 20,000 messages she cannot see was 19 rows and 1 for a
  thread that does not exist; the same for heavy senders, Mongo ids and bodies others sent
  many times, and ranges traced the spread of other people's texts. Thread ids derive from
  public Mongo ids, so this mapped who talks to whom.
* A statistics target of 0 makes ANALYZE skip the column. With no statistics, `=` is
  estimated from a default number of distinct values (a fixed share of the table, or one row
  on a unique column) and ranges from a fixed selectivity: the same for every value, so an
  estimate reveals nothing beyond the table's size (pg_class.reltuples, visible anyway).
* chat_messages.created_at goes too, for the plan cache. PostgREST and PL/pgSQL run
  prepared statements, which turn generic only when the generic plan does not cost more
  than the custom ones. With thread ids estimated at a default share, a history page's
  custom plan costs less than the generic one whenever the cursor's created_at falls late in
  the histogram, and measured at 1M messages every request was planned anew (2x the
  owner's time instead of 1.3x). Without it both cost the same and the generic plan, the
  same index walk, is kept. (It also stops ranges from tracing the global timeline.)
  id keeps its statistics (unique: estimates say nothing about anyone).
* Plans keep their shapes (tests/test_rls_plans.py, custom and generic plans): history
  pages walk (thread_id, created_at, id) without a sort, member reads use the InitPlan and
  that index. Measured side by side at 1M messages by bench/ (README, Performance).
* Locks: SET STATISTICS takes SHARE UPDATE EXCLUSIVE (reads and writes go on) and only
  changes the catalog: constant time at any table size.
* Statistics collected before this revision SURVIVE ANALYZE (a column with target 0 is
  skipped, not cleared), and only a superuser may delete from pg_statistic, which postgres
  on Supabase is not. Removing them needs `alter column ... type <its own type>` with the
  policies on those columns dropped and recreated; it re-checks their CHECK constraints and
  rebuilds the partial unique index on (sender_supabase_id, client_id), both by scanning the
  table. In one migration transaction those scans would run under ACCESS EXCLUSIVE (about
  1 s at 1M messages, growing with the table). So it is a separate, measured step:
  `dbtool clear-stats` (README, Operating notes) runs the scans concurrently and holds the
  lock 10-60 ms at 1M and 5M messages. It is needed once, on a database analysed before this
  revision; `dbtool audit` reports it (stale_statistics) until then.
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# Frozen with this revision: a later fix is a new revision, never an edit here.
UPGRADE = r"""
-- Who talks to whom, how much, and what: ANALYZE keeps no value statistics on these columns,
-- so the planner's estimate for any one value is the same as for a value that does not exist;
-- created_at so that a history page costs the same for every cursor (prepared statements
-- then keep their generic plan instead of planning every request anew).
alter table public.chat_messages
  alter column thread_id set statistics 0,
  alter column sender_mongo_id set statistics 0,
  alter column recipient_mongo_id set statistics 0,
  alter column sender_supabase_id set statistics 0,
  alter column body set statistics 0,
  alter column client_id set statistics 0,
  alter column created_at set statistics 0;
alter table public.chat_threads
  alter column thread_id set statistics 0,
  alter column user_a_mongo_id set statistics 0,
  alter column user_a_supabase_id set statistics 0,
  alter column user_b_mongo_id set statistics 0,
  alter column user_b_supabase_id set statistics 0;
-- Histogram bounds are real values: they would name registered users.
alter table public.chat_identities
  alter column supabase_user_id set statistics 0,
  alter column mongo_id set statistics 0;
"""

DOWNGRADE = r"""
alter table public.chat_identities
  alter column supabase_user_id set statistics -1,
  alter column mongo_id set statistics -1;
alter table public.chat_threads
  alter column thread_id set statistics -1,
  alter column user_a_mongo_id set statistics -1,
  alter column user_a_supabase_id set statistics -1,
  alter column user_b_mongo_id set statistics -1,
  alter column user_b_supabase_id set statistics -1;
alter table public.chat_messages
  alter column thread_id set statistics -1,
  alter column sender_mongo_id set statistics -1,
  alter column recipient_mongo_id set statistics -1,
  alter column sender_supabase_id set statistics -1,
  alter column body set statistics -1,
  alter column client_id set statistics -1,
  alter column created_at set statistics -1;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
