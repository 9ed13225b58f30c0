"""abuse limits: per-key token buckets, messages per sender, new threads per user

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

How the limits of DESIGN §10 work (DBA notes):
* One generic mechanism: chat_private.take_tokens(limit, key, n) takes n tokens from the
  bucket of (limit, key) or raises PT429 (PostgREST answers HTTP 429) with a message naming
  the limit and a hint `retry after N s`. public.chat_rate_limits holds one row per limit
  (a burst, and the time it takes to earn one token back). A new limit is one more row and
  one call in the code that counts it.
* Counting happens in the transaction of the write it counts: a refused or failed write
  rolls its take back with it, an accepted one is counted once. Parallel takes on one key
  queue on that key's bucket row, so they never exceed the burst.
* Buckets are GCRA rows: one timestamp per (limit, key), `full_at`, the moment the bucket
  is full again; taking n tokens moves it n * refill_every later, and the take is refused
  when it would move past now() + burst * refill_every. Exact integer (microsecond)
  arithmetic, no float drift, and one narrow column to update. Moving full_at back by
  refill_every gives one token back (how tests make time pass without sleeping).
* The hot path is one UPDATE of the sender's own row and nothing else: no row that every
  send touches, not even a read of the settings, because each bucket carries its limit's
  values (a change of the limit drops its buckets). It is inlined in the message trigger:
  measured (callgrind, instructions per send), the nested call, PERFORM, a join with the
  settings and an IF with a subquery re-planned on every call each cost a good part of
  the update itself. full_at is in no index and the table keeps half of each page free
  (fillfactor 50), so the update is HOT: no index write, and page pruning reclaims the
  old versions without vacuum.
* A bucket that is full is the same as no bucket, so rows can be deleted at any time
  without changing any answer. Each new bucket deletes those among the 16 keys after it
  that have been full for an hour (skipping rows someone is using): keys are spread
  evenly, so the sweeps cover the table and it stays near the number of recently active
  keys, with no scheduler.
* Who is limited: every role that row-level security applies to (the API roles), decided
  in the triggers' WHEN clauses in the writer's own context. service_role, the owner and
  superusers bypass RLS, so they are exempt and pay nothing (the trigger does not fire).
* Messages: a BEFORE INSERT row trigger, so a bulk insert is refused at its first row over
  the limit (after burst + 1 rows of work, not after 20,000), and nothing of it remains;
  its hint is for that row. The count comes before the row policy (a table insert with the
  bucket empty is PT429 even where RLS would refuse it) and is the caller's (auth.uid()),
  never the row's claimed sender, so a forged row cannot touch another user's bucket. A
  retry whose _client_id is already used writes nothing, so its token is given back.
* Threads: an AFTER INSERT row trigger, so only threads really created count:
  ensure_chat_thread returning an existing thread (ON CONFLICT DO NOTHING) is free.
* Tuning without a migration: `update public.chat_rate_limits set burst = 40 where
  limit_name = 'messages_per_sender'` as the owner, or PATCH /rest/v1/chat_rate_limits
  with the service_role key; check constraints refuse values out of range. No other API
  role may read or change them (clients learn a limit from the PT429). A change applies at
  once: the limit's buckets are dropped, so every key starts from a full bucket under the
  new values (at most one extra burst each, once).
* Locks: creating the two triggers takes SHARE ROW EXCLUSIVE on chat_messages and
  chat_threads for the (millisecond) length of this revision; nothing is rewritten.
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# Frozen with this revision: a later fix is a new revision, never an edit here.
UPGRADE = r"""
-- The limits, one row each: a bucket of `burst` tokens per key that earns one token back
-- every `refill_every`. Tuned here by the project, without a migration.
create table public.chat_rate_limits (
  limit_name text not null,
  burst integer not null,
  refill_every interval not null,
  enabled boolean not null default true,
  description text not null,
  constraint chat_rate_limits_pkey primary key (limit_name),
  constraint chat_rate_limits_limit_name_check check (limit_name ~ '^[a-z][a-z0-9_]{0,62}$'),
  constraint chat_rate_limits_burst_1_to_1000000_check check (burst between 1 and 1000000),
  constraint chat_rate_limits_refill_every_1ms_to_7days_check
    check (refill_every between interval '1 millisecond' and interval '7 days')
);
comment on table public.chat_rate_limits is
  'Abuse limits (token buckets per key): the owner or service_role tunes burst, refill_every and enabled';
comment on column public.chat_rate_limits.refill_every is
  'Time to earn one token back; a bucket holds at most burst tokens';
alter table public.chat_rate_limits enable row level security;

insert into public.chat_rate_limits (limit_name, burst, refill_every, description) values
  ('messages_per_sender', 20, interval '1 second',
   'messages a user sends: every insert into chat_messages, through insert_chat_message or the table'),
  ('threads_per_user', 30, interval '2 minutes',
   'threads a user creates (30 per hour): ensure_chat_thread creating one, or a table insert');

-- service_role bypasses RLS; the policy says who the table is for (with none, the table would
-- look like one that was forgotten), and no API role other than service_role holds a privilege.
create policy chat_rate_limits__all_service_role on public.chat_rate_limits
  for all to service_role
  using (true)
  with check (true);
comment on policy chat_rate_limits__all_service_role on public.chat_rate_limits is
  'Only the backend (service_role) and the owner read and tune the limits';

revoke all on table public.chat_rate_limits from public, anon, authenticated, service_role;
grant select, update (burst, refill_every, enabled) on table public.chat_rate_limits to service_role;

-- One row per (limit, key) in use: the moment the bucket is full again (GCRA), and the
-- limit's values when the bucket was made, so a take reads no other row. Only the owner's
-- functions touch it; full_at is in no index and half of each page stays free, so every
-- take is a HOT update.
create table chat_private.chat_rate_limit_buckets (
  limit_name text collate "C" not null,
  key text collate "C" not null,
  full_at timestamp with time zone not null,
  burst integer not null,
  refill_every interval not null,
  constraint chat_rate_limit_buckets_pkey primary key (limit_name, key)
) with (fillfactor = 50);
comment on table chat_private.chat_rate_limit_buckets is
  'Token buckets of the abuse limits: full again at full_at; a full bucket is the same as no row';
revoke all on table chat_private.chat_rate_limit_buckets from public, anon, authenticated, service_role;

-- A limit changed or removed: its buckets go, and every key starts again from a full bucket
-- under the new values (at most one extra burst each, once).
create function chat_private.chat_rate_limits_changed() returns trigger
language plpgsql
volatile
security definer
set search_path = ''
as $$
begin
  if tg_op = 'UPDATE' and new is not distinct from old then
    return null;
  end if;
  delete from chat_private.chat_rate_limit_buckets b where b.limit_name = old.limit_name;
  return null;
end
$$;
comment on function chat_private.chat_rate_limits_changed() is
  'Drops the buckets of a changed or removed limit, which carry its old values';
revoke all on function chat_private.chat_rate_limits_changed() from public, anon, authenticated, service_role;
-- No grant: trigger functions need none.

create trigger chat_rate_limits__drop_buckets
  after update or delete on public.chat_rate_limits
  for each row execute function chat_private.chat_rate_limits_changed();

-- Take _n tokens from the bucket of (_limit_name, _key), or refuse with PT429; a negative
-- _n gives tokens back (for a counted write that turned out to write nothing). Returns the
-- tokens left (null when the limit is switched off). Callers assign the result rather than
-- PERFORM it: an assignment is a simple expression in PL/pgSQL, PERFORM a whole query.
create function chat_private.take_tokens(_limit_name text, _key text, _n integer default 1) returns integer
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  full_at timestamp with time zone;
  burst integer;
  refill interval;
  enabled boolean;
begin
  if _key is null or _n is null or _n = 0 then
    raise exception using errcode = '22023', message = '_key must not be null and _n must not be null or 0';
  end if;

  -- The common case in one statement: a key with a bucket (a limit that is off has none).
  update chat_private.chat_rate_limit_buckets b
     set full_at = greatest(greatest(b.full_at, now()) + b.refill_every * _n, now())
   where b.limit_name = _limit_name and b.key = _key
  returning b.full_at, b.burst, b.refill_every into full_at, burst, refill;

  if not found then
    -- FOR SHARE: a change of the limit (which drops its buckets) and this new bucket wait
    -- for each other, so no bucket keeps values that are no longer the limit's.
    select l.burst, l.refill_every, l.enabled into burst, refill, enabled
    from public.chat_rate_limits l where l.limit_name = _limit_name
    for share;
    if not found then
      raise exception using errcode = '42704', message = format('rate limit %s is not defined', _limit_name),
        hint = 'add a row to public.chat_rate_limits';
    end if;
    if not enabled then
      return null;  -- switched off
    end if;
    if _n < 0 then
      return burst;  -- tokens given back to a bucket that is full anyway
    end if;
    -- A key without a bucket (new, or swept while full) starts full.
    insert into chat_private.chat_rate_limit_buckets as b (limit_name, key, full_at, burst, refill_every)
    values (_limit_name, _key, now() + refill * _n, burst, refill)
    on conflict (limit_name, key) do update set full_at = greatest(b.full_at, now()) + b.refill_every * _n
    returning b.full_at, b.burst, b.refill_every into full_at, burst, refill;
    -- Sweep: buckets full for an hour among the next 16 keys go (rows in use are skipped).
    delete from chat_private.chat_rate_limit_buckets d
    where (d.limit_name, d.key) in (
      select s.limit_name, s.key from chat_private.chat_rate_limit_buckets s
      where s.limit_name = _limit_name
        and s.key = any (array(
          select n.key from chat_private.chat_rate_limit_buckets n
          where n.limit_name = _limit_name and n.key > _key
          order by n.key limit 16))
        and s.full_at < now() - interval '1 hour'
      for update skip locked);
  end if;

  -- Refused: raising undoes the update above with the rest of the statement.
  if _n > 0 and full_at > now() + refill * burst then
    raise exception using errcode = 'PT429',
      message = format('rate limit exceeded: %s allows a burst of %s, then 1 every %s s',
                       _limit_name, burst, trim_scale(extract(epoch from refill))),
      hint = format('retry after %s s',
                    greatest(ceil(extract(epoch from full_at - now() - refill * burst)), 1));
  end if;
  return floor(extract(epoch from now() + refill * burst - full_at) / extract(epoch from refill));
end
$$;
comment on function chat_private.take_tokens(text, text, integer) is
  'Count _n writes against limit _limit_name for _key (PT429 over it), return the tokens left; _n < 0 gives back';
revoke all on function chat_private.take_tokens(text, text, integer) from public, anon, authenticated, service_role;
-- No grant: today only the owner's trigger functions below call it.

-- Messages per sender, for every insert by a role that RLS applies to (see the trigger).
create function chat_private.chat_messages_rate_limit() returns trigger
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  caller text := auth.uid()::text;
  tokens_left integer;
begin
  if caller is null then
    return new;  -- no session: the insert policy refuses the row
  end if;
  -- take_tokens' common case inline (one statement instead of a nested call, on the path of
  -- every message): a token when the bucket has one. Anything else (no bucket yet, limit
  -- off, over the limit: the PT429) is take_tokens' to decide, under the row lock.
  update chat_private.chat_rate_limit_buckets b
     set full_at = greatest(b.full_at, now()) + b.refill_every
   where b.limit_name = 'messages_per_sender' and b.key = caller
     and greatest(b.full_at, now()) + b.refill_every <= now() + b.refill_every * b.burst;
  if not found then
    tokens_left := chat_private.take_tokens('messages_per_sender', caller, 1);
  end if;
  -- A _client_id already used: this insert writes nothing (insert_chat_message's on conflict
  -- do nothing) or fails, so it costs nothing. Checked after the take, which waits for the
  -- caller's other sends to commit, so a racing retry sees the first message. (Two IFs: with
  -- a null _client_id in it the query would be planned again on every call.)
  if new.client_id is not null then
    if exists (select from public.chat_messages m
               where m.sender_supabase_id = new.sender_supabase_id and m.client_id = new.client_id) then
      tokens_left := chat_private.take_tokens('messages_per_sender', caller, -1);
    end if;
  end if;
  return new;
end
$$;
comment on function chat_private.chat_messages_rate_limit() is
  'Counts each message row against messages_per_sender of the caller, before it is written';
revoke all on function chat_private.chat_messages_rate_limit() from public, anon, authenticated, service_role;
-- No grant: trigger functions need none.

-- Before the row: a bulk insert stops at its first row over the limit. The WHEN clause runs
-- as the writer: roles that bypass RLS (service_role, the owner, superusers) never pay.
create trigger chat_messages__rate_limit
  before insert on public.chat_messages
  for each row
  when (pg_catalog.row_security_active('public.chat_messages'::regclass))
  execute function chat_private.chat_messages_rate_limit();

-- New threads per user: only threads really created (AFTER: ON CONFLICT DO NOTHING skips it).
create function chat_private.chat_threads_rate_limit() returns trigger
language plpgsql
volatile
security definer
set search_path = ''
as $$
declare
  caller text := auth.uid()::text;
  tokens_left integer;
begin
  if caller is not null then
    tokens_left := chat_private.take_tokens('threads_per_user', caller, 1);
  end if;
  return null;
end
$$;
comment on function chat_private.chat_threads_rate_limit() is
  'Counts each thread a user creates against threads_per_user (ensure_chat_thread returning one is free)';
revoke all on function chat_private.chat_threads_rate_limit() from public, anon, authenticated, service_role;
-- No grant: trigger functions need none.

create trigger chat_threads__rate_limit
  after insert on public.chat_threads
  for each row
  when (pg_catalog.row_security_active('public.chat_threads'::regclass))
  execute function chat_private.chat_threads_rate_limit();
"""

DOWNGRADE = r"""
drop trigger chat_threads__rate_limit on public.chat_threads;
drop function chat_private.chat_threads_rate_limit();
drop trigger chat_messages__rate_limit on public.chat_messages;
drop function chat_private.chat_messages_rate_limit();
drop function chat_private.take_tokens(text, text, integer);
drop trigger chat_rate_limits__drop_buckets on public.chat_rate_limits;
drop function chat_private.chat_rate_limits_changed();
drop table chat_private.chat_rate_limit_buckets;
drop table public.chat_rate_limits;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
