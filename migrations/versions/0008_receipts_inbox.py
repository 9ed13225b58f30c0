"""receipts and the inbox: delivered/read cursors, their live events, chat_inbox

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01

Why the shapes below (DBA notes, DESIGN §9):
* One row per (thread, participant) in chat_receipts holds both monotonic cursors. The row
  is written only by chat_private.chat_mark_receipt (SECURITY DEFINER): end users get
  SELECT (participants, through chat_threads' own policy) and no INSERT/UPDATE/DELETE, so a
  cursor can only move forward, to a message of its thread, by its owner. Reading implies
  delivered: both move in the same UPDATE. The row has no foreign key to auth.users: a
  deleted guest's cursors stay with the host's thread (ticks keep their meaning); the
  thread's cascade removes them.
* A cursor that moves broadcasts one private event on chat:<thread_id>: READ when the read
  cursor moved (the delivered tick moves with it), else DELIVERED. The broadcast helper
  mirrors chat_private.broadcast_chat_message (0004): owner's rights, lock_timeout 250ms,
  any failure is a WARNING and never fails the cursor update. No move, no write, no event.
* The inbox must be flat in the number of threads a user has: chat_threads carries its
  last message (last_message_id, last_message_at) and activity_at (a stored generated
  column: the last message's time, else created_at), kept by an AFTER INSERT trigger on
  chat_messages (one UPDATE of the thread row per message, monotonic on (created_at, id),
  so concurrent sends in either order end on the newest). Per participant column an index
  (participant's Supabase id, their Mongo id, activity_at, thread_id): the first page is a
  merge of at most three index range scans that stops after _limit rows, whatever the
  user's thread count. They replace 0001's participant indexes (same leading columns: the
  membership lookups and the identity foreign keys use them), so the update costs three
  index entries, not five.
* Unread counts use a new index (thread_id, id) including sender_supabase_id: the count of
  the other party's messages after a cursor is an index-only range scan over exactly those
  messages (the history index would read the whole thread).
* chat_inbox reads through chat_private.chat_inbox_rows (SECURITY DEFINER): under the
  messages policy every message row would be checked against the array of all the caller's
  thread ids (per row, O(threads)); the helper applies the membership itself, once per
  thread row, from auth.uid(). The public RPCs stay thin SECURITY INVOKER wrappers.
* Dependence on revision 0007 (guest threads) is confined to the membership terms below,
  marked "0007": kind, guest_supabase_id, guest_display_name, guest_ended_at and
  guest_expires_at of chat_threads, with 0007's rule for an active guest.
* Abuse limits (DESIGN §10: 120 cursor moves per minute per user) hook into
  chat_mark_receipt where a cursor is about to move (marked below); a call that moves
  nothing is free.
* Adding a stored generated column rewrites chat_threads under ACCESS EXCLUSIVE (one row
  per conversation, a small table next to chat_messages) and the backfill reads every
  thread's newest message through the history index; policy DDL comes last and is one
  CREATE POLICY.
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

# Frozen with this revision: a later fix is a new revision, never an edit here.
UPGRADE = r"""
-- The inbox's ordering data, kept on the thread row by a trigger on chat_messages.
alter table public.chat_threads
  add column last_message_id bigint,
  add column last_message_at timestamp with time zone,
  add column activity_at timestamp with time zone not null
    generated always as (coalesce(last_message_at, created_at)) stored;
comment on column public.chat_threads.last_message_id is
  'The newest message (by created_at, id), kept by chat_messages__touch_thread; null before the first';
comment on column public.chat_threads.activity_at is 'The inbox order: the newest message''s time, else created_at';

update public.chat_threads t set (last_message_id, last_message_at) = (
  select m.id, m.created_at from public.chat_messages m
  where m.thread_id = t.thread_id
  order by m.created_at desc, m.id desc
  limit 1)
where exists (select from public.chat_messages m where m.thread_id = t.thread_id);

-- The inbox: per participant column, threads in activity order (first page = a merge of
-- these range scans, stopping after _limit rows).
create index chat_threads_user_a_activity_idx
  on public.chat_threads (user_a_supabase_id, user_a_mongo_id, activity_at, thread_id);
create index chat_threads_user_b_activity_idx
  on public.chat_threads (user_b_supabase_id, user_b_mongo_id, activity_at, thread_id)
  where user_b_supabase_id is not null;
create index chat_threads_guest_activity_idx on public.chat_threads (guest_supabase_id, activity_at, thread_id)
  where guest_supabase_id is not null;
-- They lead with the identity foreign keys' columns (a user's Mongo id is fixed, so their
-- threads stay in activity order under it): they serve the policies' membership lookups and
-- the foreign keys' cascades, 0001's participant indexes go, and a message costs its thread
-- row three index entries (primary key, a, b) instead of five.
drop index public.chat_threads_user_a_supabase_id_idx;
drop index public.chat_threads_user_b_supabase_id_idx;

-- Unread counts: the other party's messages after a cursor, index-only.
create index chat_messages_thread_id_id_idx on public.chat_messages (thread_id, id) include (sender_supabase_id);

-- Each participant's cursors in a thread; written only by chat_private.chat_mark_receipt.
create table public.chat_receipts (
  thread_id text not null,
  supabase_user_id uuid not null,
  delivered_up_to bigint not null default 0,
  read_up_to bigint not null default 0,
  delivered_at timestamp with time zone,
  read_at timestamp with time zone,
  constraint chat_receipts_pkey primary key (thread_id, supabase_user_id),
  constraint chat_receipts_thread_id_fkey
    foreign key (thread_id) references public.chat_threads (thread_id) on delete cascade,
  constraint chat_receipts_cursors_check check (read_up_to >= 0 and delivered_up_to >= read_up_to)
);
comment on table public.chat_receipts is
  'Delivered and read cursors per thread participant (monotonic; reading implies delivered); moved by the receipt RPCs';
alter table public.chat_receipts enable row level security;

-- Keeps chat_threads' last message and activity_at; owner's rights (end users may not update threads).
create function chat_private.chat_thread_touch() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  update public.chat_threads t set last_message_id = new.id, last_message_at = new.created_at
  where t.thread_id = new.thread_id
    and (t.last_message_id is null or (t.last_message_at, t.last_message_id) < (new.created_at, new.id));
  return null;
end
$$;
comment on function chat_private.chat_thread_touch() is
  'Moves chat_threads.last_message_* to a new message when it is the newest (by created_at, id)';
revoke all on function chat_private.chat_thread_touch() from public;

create trigger chat_messages__touch_thread
  after insert on public.chat_messages
  for each row execute function chat_private.chat_thread_touch();

-- The live event of a cursor move, as broadcast_chat_message (0004) does for messages.
create function chat_private.broadcast_chat_receipt(_thread_id text, _reader uuid, _event text, _up_to_id bigint,
                                                    _at timestamp with time zone) returns void
language plpgsql
security definer
set search_path = ''
set lock_timeout = '250ms'
as $$
begin
  begin
    perform realtime.send(
      jsonb_build_object('thread_id', _thread_id, 'reader_supabase_id', _reader, 'up_to_id', _up_to_id, 'at', _at),
      _event, 'chat:' || _thread_id, true);
    perform pg_catalog.set_config('realtime.topic', '', true);
  exception when others then
    raise warning 'chat receipt % up to % saved but not broadcast to chat:%: %', _event, _up_to_id, _thread_id, sqlerrm;
  end;
end
$$;
comment on function chat_private.broadcast_chat_receipt(text, uuid, text, bigint, timestamp with time zone) is
  'Broadcasts a DELIVERED/READ event to chat:<thread_id> with the owner''s rights; '
  'waits at most 250ms for a lock; never fails the cursor update';
revoke all on function chat_private.broadcast_chat_receipt(text, uuid, text, bigint, timestamp with time zone) from public;

-- Abuse limits (DESIGN §10): 120 cursor moves per minute per user, tuned in public.chat_rate_limits.
insert into public.chat_rate_limits (limit_name, burst, refill_every, description) values
  ('receipts_per_user', 120, interval '500 milliseconds',
   'cursor moves a user makes (mark_chat_delivered, mark_chat_read; 120 per minute); a call that moves nothing is free');

create function chat_private.chat_mark_receipt(_thread_id text, _up_to_id bigint, _read boolean)
returns table (thread_id text, delivered_up_to bigint, read_up_to bigint)
language plpgsql
volatile
security definer
set search_path = ''
as $$
#variable_conflict use_column
declare
  caller uuid := auth.uid();
  wanted_thread text := lower(_thread_id);
  moved_at timestamp with time zone := now();
  visible boolean;
  is_message boolean;
  delivered bigint;
  did_read bigint;
  tokens_left integer;
begin
  if caller is null then
    raise exception using errcode = '42501', message = 'not authenticated',
      hint = 'call with a signed-in user''s access token';
  end if;
  if wanted_thread is null or wanted_thread !~ '^(?:[0-9a-f]{24}_[0-9a-f]{24}|g_[0-9a-f]{32})$' then
    raise exception using errcode = '22023',
      message = '_thread_id must look like <mongo id>_<mongo id> (24 hexadecimal characters each) '
                || 'or g_<32 hexadecimal characters>';
  end if;
  if _up_to_id is null or _up_to_id < 1 then
    raise exception using errcode = '22023', message = '_up_to_id must be the id of a message of the thread';
  end if;
  -- Participants only, as chat_threads__select_participants says; a guest while active
  -- (0007). One statement for both checks; the thread is judged first, so an outsider
  -- learns nothing about message ids.
  select exists (
           select from public.chat_threads t
           where t.thread_id = wanted_thread
             and (caller in (t.user_a_supabase_id, t.user_b_supabase_id)
               or (t.guest_supabase_id = caller and t.guest_ended_at is null and t.guest_expires_at > now()))),
         exists (select from public.chat_messages m where m.id = _up_to_id and m.thread_id = wanted_thread)
  into visible, is_message;
  if not visible then
    raise exception using errcode = 'P0002', message = 'thread not found';
  end if;
  if not is_message then
    raise exception using errcode = '22023', message = '_up_to_id is not a message of this thread';
  end if;

  -- Abuse limits (DESIGN §10): receipts_per_user counts cursor moves, after the statements
  -- below moved one (a call that moves nothing is free); over it, the PT429 undoes the move.

  -- Forward only: a row changes only when the cursor moves; a concurrent mark waits for the
  -- row and re-checks the condition on its newest version (READ COMMITTED). The caller's
  -- first receipt in the thread inserts the row; if a concurrent first receipt inserted it
  -- meanwhile, the update runs again on that row.
  for attempt in 1..2 loop
    if _read then
      update public.chat_receipts r
      set read_up_to = _up_to_id, read_at = moved_at,
          delivered_up_to = greatest(r.delivered_up_to, _up_to_id),
          delivered_at = case when r.delivered_up_to < _up_to_id then moved_at else r.delivered_at end
      where r.thread_id = wanted_thread and r.supabase_user_id = caller and r.read_up_to < _up_to_id
      returning r.delivered_up_to, r.read_up_to into delivered, did_read;
    else
      update public.chat_receipts r set delivered_up_to = _up_to_id, delivered_at = moved_at
      where r.thread_id = wanted_thread and r.supabase_user_id = caller and r.delivered_up_to < _up_to_id
      returning r.delivered_up_to, r.read_up_to into delivered, did_read;
    end if;
    exit when delivered is not null or attempt = 2;
    insert into public.chat_receipts as r (thread_id, supabase_user_id, delivered_up_to, read_up_to,
                                           delivered_at, read_at)
    values (wanted_thread, caller, _up_to_id, case when _read then _up_to_id else 0 end, moved_at,
            case when _read then moved_at end)
    on conflict on constraint chat_receipts_pkey do nothing
    returning r.delivered_up_to, r.read_up_to into delivered, did_read;
    exit when delivered is not null;
    -- The row exists: the cursor is already at or past _up_to_id, or a concurrent first
    -- receipt inserted it after the update looked (then the update runs once more).
    exit when exists (select from public.chat_receipts r
                      where r.thread_id = wanted_thread and r.supabase_user_id = caller
                        and (case when _read then r.read_up_to else r.delivered_up_to end) >= _up_to_id);
  end loop;

  if delivered is not null then
    tokens_left := chat_private.take_tokens('receipts_per_user', caller::text);
    perform chat_private.broadcast_chat_receipt(wanted_thread, caller, case when _read then 'READ' else 'DELIVERED' end,
                                                _up_to_id, moved_at);
    return query select wanted_thread, delivered, did_read;
    return;
  end if;
  -- Nothing moved (a lower or equal id, or a concurrent first receipt won): the current state.
  return query
    select r.thread_id, r.delivered_up_to, r.read_up_to from public.chat_receipts r
    where r.thread_id = wanted_thread and r.supabase_user_id = caller;
end
$$;
comment on function chat_private.chat_mark_receipt(text, bigint, boolean) is
  'mark_chat_delivered/mark_chat_read''s work with the owner''s rights: moves the caller''s cursor forward '
  'and broadcasts the move';
revoke all on function chat_private.chat_mark_receipt(text, bigint, boolean) from public;
grant execute on function chat_private.chat_mark_receipt(text, bigint, boolean) to authenticated, service_role;

create function chat_private.chat_inbox_rows(_limit integer, _before_activity_at timestamp with time zone,
                                             _before_thread_id text)
returns table (thread_id text, kind text, other_mongo_id text, other_display_name text, last_message_id bigint,
               last_sender_supabase_id uuid, last_message_at timestamp with time zone, last_body text,
               activity_at timestamp with time zone, unread integer, delivered_up_to bigint, read_up_to bigint,
               guest_status text)
language plpgsql
stable
security definer
set search_path = ''
as $$
#variable_conflict use_column
declare
  caller uuid := auth.uid();
  -- The caller's Mongo id (null for an anonymous guest): with it the per-participant
  -- indexes return the threads already in activity order.
  caller_mongo text := (select i.mongo_id from public.chat_identities i where i.supabase_user_id = auth.uid());
  -- No cursor: a bound above every row ((activity_at, thread_id) < (infinity, '') holds for all).
  bound_at timestamp with time zone := coalesce(_before_activity_at, 'infinity');
  bound_id text := coalesce(_before_thread_id, '');
begin
  if caller is null then
    raise exception using errcode = '42501', message = 'not authenticated',
      hint = 'call with a signed-in user''s access token';
  end if;
  if _limit is null or _limit not between 1 and 100 then
    raise exception using errcode = '22023', message = '_limit must be between 1 and 100';
  end if;
  if _before_activity_at is null and _before_thread_id is not null then
    raise exception using errcode = '22023',
      message = '_before_activity_at is required with _before_thread_id (pass both from the last row of the previous page)';
  end if;
  if _before_thread_id is null and _before_activity_at is not null then
    raise exception using errcode = '22023',
      message = '_before_thread_id is required with _before_activity_at (pass both from the last row of the previous page)';
  end if;

  -- One range scan per participant column, merged in (activity_at, thread_id) order; a
  -- caller is in at most one of the columns of a thread, so nothing repeats.
  return query
    with page as (
      (select t.* from public.chat_threads t
       where t.user_a_supabase_id = caller and t.user_a_mongo_id = caller_mongo
         and (t.activity_at, t.thread_id) < (bound_at, bound_id)
       order by t.activity_at desc, t.thread_id desc limit _limit)
      union all
      (select t.* from public.chat_threads t
       where t.user_b_supabase_id = caller and t.user_b_mongo_id = caller_mongo
         and (t.activity_at, t.thread_id) < (bound_at, bound_id)
       order by t.activity_at desc, t.thread_id desc limit _limit)
      union all
      -- A guest sees their thread while the session is active (0007).
      (select t.* from public.chat_threads t
       where t.guest_supabase_id = caller and t.guest_ended_at is null and t.guest_expires_at > now()
         and (t.activity_at, t.thread_id) < (bound_at, bound_id)
       order by t.activity_at desc, t.thread_id desc limit _limit)
      order by activity_at desc, thread_id desc
      limit _limit)
    -- kind, guest_display_name and the guest session's state are 0007's columns.
    select p.thread_id, p.kind,
           case when p.kind = 'guest' and p.user_a_supabase_id = caller then null
                when p.user_a_supabase_id = caller then p.user_b_mongo_id
                else p.user_a_mongo_id end,
           case when p.kind = 'guest' and p.user_a_supabase_id = caller then p.guest_display_name end,
           p.last_message_id, m.sender_supabase_id, p.last_message_at, left(m.body, 200), p.activity_at,
           coalesce((select count(*)::integer from public.chat_messages u
                     where u.thread_id = p.thread_id and u.id > coalesce(mine.read_up_to, 0)
                       and u.sender_supabase_id <> caller), 0),
           coalesce(other.delivered_up_to, 0), coalesce(other.read_up_to, 0),
           case when p.kind <> 'guest' then null
                when p.guest_supabase_id is not null and p.guest_ended_at is null and p.guest_expires_at > now()
                  then 'active'
                else 'ended' end
    from page p
    left join public.chat_messages m on m.id = p.last_message_id
    left join public.chat_receipts mine on mine.thread_id = p.thread_id and mine.supabase_user_id = caller
    left join lateral (select r.delivered_up_to, r.read_up_to from public.chat_receipts r
                       where r.thread_id = p.thread_id and r.supabase_user_id <> caller
                       order by r.read_up_to desc limit 1) other on true
    order by p.activity_at desc, p.thread_id desc;
end
$$;
comment on function chat_private.chat_inbox_rows(integer, timestamp with time zone, text) is
  'chat_inbox''s work with the owner''s rights: the caller''s threads only (membership from auth.uid()), '
  'read through per-participant activity indexes';
revoke all on function chat_private.chat_inbox_rows(integer, timestamp with time zone, text) from public;
grant execute on function chat_private.chat_inbox_rows(integer, timestamp with time zone, text)
  to authenticated, service_role;

create function public.mark_chat_delivered(_thread_id text, _up_to_id bigint)
returns table (thread_id text, delivered_up_to bigint, read_up_to bigint)
language sql
volatile
security invoker
set search_path = ''
as $$
  select * from chat_private.chat_mark_receipt(_thread_id, _up_to_id, false)
$$;
comment on function public.mark_chat_delivered(text, bigint) is
  'The caller''s client received the thread''s messages up to _up_to_id (forward only; broadcasts DELIVERED)';
revoke all on function public.mark_chat_delivered(text, bigint) from public, anon, authenticated, service_role;
grant execute on function public.mark_chat_delivered(text, bigint) to authenticated, service_role;

create function public.mark_chat_read(_thread_id text, _up_to_id bigint)
returns table (thread_id text, delivered_up_to bigint, read_up_to bigint)
language sql
volatile
security invoker
set search_path = ''
as $$
  select * from chat_private.chat_mark_receipt(_thread_id, _up_to_id, true)
$$;
comment on function public.mark_chat_read(text, bigint) is
  'The caller saw the thread''s messages up to _up_to_id (forward only, delivered too; broadcasts READ)';
revoke all on function public.mark_chat_read(text, bigint) from public, anon, authenticated, service_role;
grant execute on function public.mark_chat_read(text, bigint) to authenticated, service_role;

create function public.chat_inbox(
  _limit integer default 30,
  _before_activity_at timestamp with time zone default null,
  _before_thread_id text default null
) returns table (thread_id text, kind text, other_mongo_id text, other_display_name text, last_message_id bigint,
                 last_sender_supabase_id uuid, last_message_at timestamp with time zone, last_body text,
                 activity_at timestamp with time zone, unread integer, delivered_up_to bigint, read_up_to bigint,
                 guest_status text)
language sql
stable
security invoker
set search_path = ''
as $$
  select * from chat_private.chat_inbox_rows(_limit, _before_activity_at, _before_thread_id)
$$;
comment on function public.chat_inbox(integer, timestamp with time zone, text) is
  'The caller''s threads, newest activity first, with unread counts and the other party''s cursors; '
  'the next page starts before the last row''s (activity_at, thread_id)';
revoke all on function public.chat_inbox(integer, timestamp with time zone, text) from public, anon, authenticated,
  service_role;
grant execute on function public.chat_inbox(integer, timestamp with time zone, text) to authenticated, service_role;

-- Privileges: take back Supabase's default grants; cursors move through the RPCs only.
revoke all on table public.chat_receipts from public, anon, authenticated, service_role;
grant select on table public.chat_receipts to authenticated;
grant select, insert, update, delete on table public.chat_receipts to service_role;

-- Policies last (on hosted Supabase, policy DDL locks auth.users until commit).
-- The caller's thread ids (participants; a guest while active), computed once per statement,
-- in the same words as chat_messages__select_participants (0007).
create policy chat_receipts__select_participants on public.chat_receipts
  for select to authenticated
  using (thread_id = any (array(
    select t.thread_id from public.chat_threads t
    where (select auth.uid()) in (t.user_a_supabase_id, t.user_b_supabase_id)
       or (t.guest_supabase_id = (select auth.uid()) and t.guest_ended_at is null and t.guest_expires_at > now()))));
comment on policy chat_receipts__select_participants on public.chat_receipts is
  'Participants may read the cursors of their threads, a guest while active (thread ids computed once per statement)';
"""

DOWNGRADE = r"""
delete from public.chat_rate_limits where limit_name = 'receipts_per_user';
drop function public.chat_inbox(integer, timestamp with time zone, text);
drop function public.mark_chat_read(text, bigint);
drop function public.mark_chat_delivered(text, bigint);
drop function chat_private.chat_inbox_rows(integer, timestamp with time zone, text);
drop function chat_private.chat_mark_receipt(text, bigint, boolean);
drop function chat_private.broadcast_chat_receipt(text, uuid, text, bigint, timestamp with time zone);
drop trigger chat_messages__touch_thread on public.chat_messages;
drop function chat_private.chat_thread_touch();
drop table public.chat_receipts;
drop index public.chat_messages_thread_id_id_idx;
create index chat_threads_user_a_supabase_id_idx on public.chat_threads (user_a_supabase_id, user_a_mongo_id);
create index chat_threads_user_b_supabase_id_idx on public.chat_threads (user_b_supabase_id, user_b_mongo_id);
drop index public.chat_threads_guest_activity_idx;
drop index public.chat_threads_user_b_activity_idx;
drop index public.chat_threads_user_a_activity_idx;
alter table public.chat_threads
  drop column activity_at,
  drop column last_message_at,
  drop column last_message_id;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
