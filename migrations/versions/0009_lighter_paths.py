"""lighter read and receipt paths: the caller's threads without a second policy, receipts in one call

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01

Why the shapes below (DBA notes, DESIGN §7 and §9; behaviour is unchanged):
* The messages policy read the caller's thread ids from chat_threads as the caller, so
  chat_threads' own select policy was applied again inside it: six evaluations of
  auth.uid() (each parses the JWT claims) and the membership test twice, per statement.
  chat_private.caller_threads is a view (owner's rights: the owner reads chat_threads
  without its policy) with the same membership rule as chat_threads__select_participants,
  one index range scan per participant column and auth.uid() read once; the policy reads
  it once per statement, as before (InitPlan), so a page still walks the history index.
  Measured in instructions per history page request (callgrind, 1M messages): about
  750k -> 600k, the owner's 475k. The view is in chat_private (not exposed by PostgREST)
  and shows only the caller's own thread ids, which chat_threads already shows them.
  `dbtool clear-stats` drops and recreates it (and the policy) around the columns it alters.
* mark_chat_read / mark_chat_delivered / chat_inbox were SQL wrappers with a SET clause:
  never inlined, their query was planned again on every call. They are PL/pgSQL
  wrappers now (plans cached per session), still SECURITY INVOKER with search_path ''.
* chat_mark_receipt checks the thread id with string functions instead of a regular
  expression, takes its token like the message trigger does (the common case inline,
  take_tokens for the rest) and broadcasts inline instead of through a helper
  with two SET clauses; the broadcast keeps 0008's guarantees (lock wait at most 250ms,
  a failure is a WARNING with the same text, never a failed cursor update).
* Policy DDL is one ALTER POLICY, last.
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# Frozen with this revision: a later fix is a new revision, never an edit here.
UPGRADE = r"""
-- The caller's thread ids (a guest's only while the session is active). A view runs with its
-- owner's rights, so chat_threads' own policy is not applied a second time; it is inlined
-- into the query that reads it, so there is no function call. auth.uid() is read once, in
-- `me` (written inside each branch it costs more).
create view chat_private.caller_threads as
  select t.thread_id
  from (select auth.uid() as uid offset 0) me
  cross join lateral (
    select a.thread_id from public.chat_threads a where a.user_a_supabase_id = me.uid
    union all
    select b.thread_id from public.chat_threads b where b.user_b_supabase_id = me.uid
    union all
    select g.thread_id from public.chat_threads g
    where g.guest_supabase_id = me.uid and g.guest_ended_at is null and g.guest_expires_at > now()) t;
comment on view chat_private.caller_threads is
  'The caller''s thread ids (auth.uid()), as chat_threads__select_participants admits them; read by the messages policy';
revoke all on table chat_private.caller_threads from public, anon, authenticated, service_role;
grant select on table chat_private.caller_threads to authenticated;

create or replace function chat_private.chat_mark_receipt(_thread_id text, _up_to_id bigint, _read boolean)
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
  event_name text := case when _read then 'READ' else 'DELIVERED' end;
  lock_wait text;
begin
  if caller is null then
    raise exception using errcode = '42501', message = 'not authenticated',
      hint = 'call with a signed-in user''s access token';
  end if;
  -- <24 hex>_<24 hex> or g_<32 hex>, checked with string functions: the same test as
  -- 0008's regular expression at a fraction of its cost on every call.
  if wanted_thread is null or not (
       (length(wanted_thread) = 49 and strpos(wanted_thread, '_') = 25
        and translate(wanted_thread, '0123456789abcdef', '') = '_')
    or (length(wanted_thread) = 34 and starts_with(wanted_thread, 'g_')
        and translate(substr(wanted_thread, 3), '0123456789abcdef', '') = '')) then
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
    -- take_tokens' common case inline, as in the message trigger (0006): a token when the
    -- bucket has one; anything else (no bucket yet, limit off, the PT429) is take_tokens'.
    update chat_private.chat_rate_limit_buckets b
       set full_at = greatest(b.full_at, now()) + b.refill_every
     where b.limit_name = 'receipts_per_user' and b.key = caller::text
       and greatest(b.full_at, now()) + b.refill_every <= now() + b.refill_every * b.burst;
    if not found then
      tokens_left := chat_private.take_tokens('receipts_per_user', caller::text);
    end if;
    -- The live event, as 0008's broadcast helper sent it, without a call of its own: the
    -- lock wait is bounded to 250ms around the send only (the cursor update above keeps
    -- the caller's), and any failure is a WARNING that never fails the cursor update.
    lock_wait := pg_catalog.current_setting('lock_timeout');
    perform pg_catalog.set_config('lock_timeout', '250ms', true);
    begin
      perform realtime.send(
        jsonb_build_object('thread_id', wanted_thread, 'reader_supabase_id', caller, 'up_to_id', _up_to_id,
                           'at', moved_at),
        event_name, 'chat:' || wanted_thread, true);
      perform pg_catalog.set_config('realtime.topic', '', true);
    exception when others then
      raise warning 'chat receipt % up to % saved but not broadcast to chat:%: %', event_name, _up_to_id,
        wanted_thread, sqlerrm;
    end;
    perform pg_catalog.set_config('lock_timeout', lock_wait, true);
    return query select wanted_thread, delivered, did_read;
    return;
  end if;
  -- Nothing moved (a lower or equal id, or a concurrent first receipt won): the current state.
  return query
    select r.thread_id, r.delivered_up_to, r.read_up_to from public.chat_receipts r
    where r.thread_id = wanted_thread and r.supabase_user_id = caller;
end
$$;

drop function chat_private.broadcast_chat_receipt(text, uuid, text, bigint, timestamp with time zone);

create or replace function public.mark_chat_delivered(_thread_id text, _up_to_id bigint)
returns table (thread_id text, delivered_up_to bigint, read_up_to bigint)
language plpgsql
volatile
security invoker
set search_path = ''
as $$
begin
  return query select * from chat_private.chat_mark_receipt(_thread_id, _up_to_id, false);
end
$$;

create or replace function public.mark_chat_read(_thread_id text, _up_to_id bigint)
returns table (thread_id text, delivered_up_to bigint, read_up_to bigint)
language plpgsql
volatile
security invoker
set search_path = ''
as $$
begin
  return query select * from chat_private.chat_mark_receipt(_thread_id, _up_to_id, true);
end
$$;

create or replace function public.chat_inbox(
  _limit integer default 30,
  _before_activity_at timestamp with time zone default null,
  _before_thread_id text default null
) returns table (thread_id text, kind text, other_mongo_id text, other_display_name text, last_message_id bigint,
                 last_sender_supabase_id uuid, last_message_at timestamp with time zone, last_body text,
                 activity_at timestamp with time zone, unread integer, delivered_up_to bigint, read_up_to bigint,
                 guest_status text)
language plpgsql
stable
security invoker
set search_path = ''
as $$
begin
  return query select * from chat_private.chat_inbox_rows(_limit, _before_activity_at, _before_thread_id);
end
$$;

-- Policy DDL last (on hosted Supabase it locks auth.users until commit).
alter policy chat_messages__select_participants on public.chat_messages
  using (thread_id = any (array(select c.thread_id from chat_private.caller_threads c)));
comment on policy chat_messages__select_participants on public.chat_messages is
  'Participants may read their threads'' messages, a guest while active (thread ids computed once per statement)';
"""

DOWNGRADE = r"""
alter policy chat_messages__select_participants on public.chat_messages
  using (thread_id = any (array(
    select t.thread_id from public.chat_threads t
    where (select auth.uid()) in (t.user_a_supabase_id, t.user_b_supabase_id)
       or (t.guest_supabase_id = (select auth.uid()) and t.guest_ended_at is null and t.guest_expires_at > now()))));
comment on policy chat_messages__select_participants on public.chat_messages is
  'Participants may read their threads'' messages, a guest while active (thread ids computed once per statement)';
drop view chat_private.caller_threads;

create or replace function public.chat_inbox(
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

create or replace function public.mark_chat_read(_thread_id text, _up_to_id bigint)
returns table (thread_id text, delivered_up_to bigint, read_up_to bigint)
language sql
volatile
security invoker
set search_path = ''
as $$
  select * from chat_private.chat_mark_receipt(_thread_id, _up_to_id, true)
$$;

create or replace function public.mark_chat_delivered(_thread_id text, _up_to_id bigint)
returns table (thread_id text, delivered_up_to bigint, read_up_to bigint)
language sql
volatile
security invoker
set search_path = ''
as $$
  select * from chat_private.chat_mark_receipt(_thread_id, _up_to_id, false)
$$;

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

create or replace function chat_private.chat_mark_receipt(_thread_id text, _up_to_id bigint, _read boolean)
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
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
