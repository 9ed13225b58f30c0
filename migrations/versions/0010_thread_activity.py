"""lighter sends and pages: the inbox's order off the thread row; sends and pages flat in the thread count

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01

Why the shapes below (DBA notes, DESIGN §7 and §9; chat_inbox answers the same rows):
* 0008 kept each thread's last message on its chat_threads row: every message updated that
  row. PostgreSQL checks every CHECK constraint of a row it updates, and prepares each
  constraint's expression again for every statement; chat_threads carries four (the pair
  order, the derived id, the guest name and the thread kind), and its stored generated
  activity_at is prepared the same way. Measured in instructions per send (callgrind, 1M
  messages): the thread update cost about 430k of a 1.9M send.
* The activity now lives in chat_private.chat_thread_activity, one row per thread with no
  CHECK and no generated column: activity_at (the newest message's time, else the thread's
  creation) and last_message_id, written by the same trigger (chat_messages__touch_thread,
  monotonic on (activity_at, id), so concurrent sends in either order end on the newest).
  About 60-150k per send. chat_threads is written once per thread again, so the tables the
  policies read no longer churn.
* The inbox's first page is still a merge of at most three index range scans that stops
  after _limit rows, whatever the user's thread count: the activity row carries copies of
  the participants' Supabase ids (kept by a trigger on chat_threads, which end users never
  write; a deleted guest's id goes to null through the foreign key, which fires it) and
  one index per participant column, (participant, activity_at, thread_id). chat_threads
  gets back 0001's participant indexes (membership lookups, the identity foreign keys).
* The table is in chat_private, which PostgREST does not expose: no privilege for any API
  role; chat_inbox_rows (SECURITY DEFINER) and the triggers read and write it. Its columns
  keep their statistics (0005's rule is for what PostgREST can estimate: nobody can ask for a
  planned count of this table), so the inbox's plans rest on real figures.
* chat_threads loses last_message_id, last_message_at and activity_at (0008, never
  released); chat_inbox returns them as before (last_message_at from the message row).
* insert_chat_message no longer inserts with RETURNING. A RETURNING checks the new row
  against the messages select policy, whose InitPlan computes every thread id of the
  caller: a send by a member of 1,000 threads cost 3.2M instructions, a typical one 1.7M.
  The function now builds the returned row from what it inserted (the id from the identity
  sequence's currval, created_at the column default's now() of this transaction): 1.54M
  for both. That needs USAGE on the sequence for the roles that call it (currval; nextval
  is not reachable through PostgREST, and identity inserts need no sequence privilege).
  The insert's WITH CHECK policy and the limits are unchanged. Otherwise 0007's text.
* chat_history reads its page through chat_private.chat_history_rows (SECURITY DEFINER) for
  callers RLS applies to. Through the messages policy, each row of the page was compared
  with the array of every thread id of the caller (a linear scan per row, after the
  InitPlan built the array): a 3-row page cost a member of 1,000 threads 4.5M instructions,
  a typical member 0.3M; now 0.7M for both. The helper applies the policy's membership rule itself, once, from
  auth.uid() (as chat_inbox_rows does since 0008); service_role and the owner read as before.
  The table endpoint (GET /chat_messages) keeps the policy, and its cost for such members.
* The participant indexes carry thread_id, so the policies' list of the caller's threads
  comes from index-only scans.
* No policy changes: no lock on auth.users (DESIGN §2). The backfill reads each thread once.
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# Frozen with this revision: a later fix is a new revision, never an edit here.
UPGRADE = r"""
create table chat_private.chat_thread_activity (
  thread_id text not null,
  user_a_supabase_id uuid not null,
  user_b_supabase_id uuid,
  guest_supabase_id uuid,
  activity_at timestamp with time zone not null,
  last_message_id bigint,
  constraint chat_thread_activity_pkey primary key (thread_id),
  constraint chat_thread_activity_thread_id_fkey
    foreign key (thread_id) references public.chat_threads (thread_id) on delete cascade
);
comment on table chat_private.chat_thread_activity is
  'Per thread, the inbox order: the newest message (by created_at, id) and its time, else the thread''s creation; '
  'copies of the participants'' Supabase ids for the per-participant indexes. Kept by triggers';
revoke all on table chat_private.chat_thread_activity from public, anon, authenticated, service_role;

insert into chat_private.chat_thread_activity (thread_id, user_a_supabase_id, user_b_supabase_id, guest_supabase_id,
                                               activity_at, last_message_id)
select t.thread_id, t.user_a_supabase_id, t.user_b_supabase_id, t.guest_supabase_id, t.activity_at, t.last_message_id
from public.chat_threads t;

-- The inbox: per participant column, threads in activity order (first page = a merge of
-- these range scans, stopping after _limit rows).
create index chat_thread_activity_user_a_idx
  on chat_private.chat_thread_activity (user_a_supabase_id, activity_at, thread_id);
create index chat_thread_activity_user_b_idx
  on chat_private.chat_thread_activity (user_b_supabase_id, activity_at, thread_id)
  where user_b_supabase_id is not null;
create index chat_thread_activity_guest_idx
  on chat_private.chat_thread_activity (guest_supabase_id, activity_at, thread_id)
  where guest_supabase_id is not null;

-- A new message moves its thread's activity; owner's rights (end users have no access).
create or replace function chat_private.chat_thread_touch() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  update chat_private.chat_thread_activity a set activity_at = new.created_at, last_message_id = new.id
  where a.thread_id = new.thread_id
    and (a.last_message_id is null or (a.activity_at, a.last_message_id) < (new.created_at, new.id));
  return null;
end
$$;
comment on function chat_private.chat_thread_touch() is
  'Moves chat_thread_activity to a new message when it is the newest (by created_at, id)';

-- A thread's activity row comes with the thread and follows its participants.
create function chat_private.chat_thread_activity_sync() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  if tg_op = 'INSERT' then
    insert into chat_private.chat_thread_activity (thread_id, user_a_supabase_id, user_b_supabase_id,
                                                   guest_supabase_id, activity_at)
    values (new.thread_id, new.user_a_supabase_id, new.user_b_supabase_id, new.guest_supabase_id, new.created_at);
  else
    update chat_private.chat_thread_activity a
    set user_a_supabase_id = new.user_a_supabase_id, user_b_supabase_id = new.user_b_supabase_id,
        guest_supabase_id = new.guest_supabase_id,
        activity_at = case when a.last_message_id is null then new.created_at else a.activity_at end
    where a.thread_id = new.thread_id;
  end if;
  return null;
end
$$;
comment on function chat_private.chat_thread_activity_sync() is
  'Creates a thread''s chat_thread_activity row and keeps its participant ids (and, before a message, its time)';
revoke all on function chat_private.chat_thread_activity_sync() from public;

create trigger chat_threads__activity
  after insert or update of user_a_supabase_id, user_b_supabase_id, guest_supabase_id, created_at
  on public.chat_threads
  for each row execute function chat_private.chat_thread_activity_sync();

-- chat_inbox's work, now from the activity rows; the same rows, columns and order as 0008.
create or replace function chat_private.chat_inbox_rows(_limit integer, _before_activity_at timestamp with time zone,
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
      (select a.thread_id, a.activity_at, a.last_message_id from chat_private.chat_thread_activity a
       where a.user_a_supabase_id = caller
         and (a.activity_at, a.thread_id) < (bound_at, bound_id)
       order by a.activity_at desc, a.thread_id desc limit _limit)
      union all
      (select a.thread_id, a.activity_at, a.last_message_id from chat_private.chat_thread_activity a
       where a.user_b_supabase_id = caller
         and (a.activity_at, a.thread_id) < (bound_at, bound_id)
       order by a.activity_at desc, a.thread_id desc limit _limit)
      union all
      -- A guest sees their thread while the session is active (0007).
      (select a.thread_id, a.activity_at, a.last_message_id from chat_private.chat_thread_activity a
       join public.chat_threads g on g.thread_id = a.thread_id
       where a.guest_supabase_id = caller and g.guest_ended_at is null and g.guest_expires_at > now()
         and (a.activity_at, a.thread_id) < (bound_at, bound_id)
       order by a.activity_at desc, a.thread_id desc limit _limit)
      order by activity_at desc, thread_id desc
      limit _limit)
    -- kind, guest_display_name and the guest session's state are 0007's columns.
    select p.thread_id, t.kind,
           case when t.kind = 'guest' and t.user_a_supabase_id = caller then null
                when t.user_a_supabase_id = caller then t.user_b_mongo_id
                else t.user_a_mongo_id end,
           case when t.kind = 'guest' and t.user_a_supabase_id = caller then t.guest_display_name end,
           p.last_message_id, m.sender_supabase_id, m.created_at, left(m.body, 200), p.activity_at,
           coalesce((select count(*)::integer from public.chat_messages u
                     where u.thread_id = p.thread_id and u.id > coalesce(mine.read_up_to, 0)
                       and u.sender_supabase_id <> caller), 0),
           coalesce(other.delivered_up_to, 0), coalesce(other.read_up_to, 0),
           case when t.kind <> 'guest' then null
                when t.guest_supabase_id is not null and t.guest_ended_at is null and t.guest_expires_at > now()
                  then 'active'
                else 'ended' end
    from page p
    join public.chat_threads t on t.thread_id = p.thread_id
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
  'read through chat_thread_activity''s per-participant indexes';

-- Sends without RETURNING (see the notes above): the returned row is built from the insert.
grant usage on sequence public.chat_messages_id_seq to authenticated, service_role;
create or replace function public.insert_chat_message(
  _thread_id text,
  _sender_mongo_id text,
  _recipient_mongo_id text,
  _body text,
  _client_id uuid default null
) returns public.chat_messages
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  caller uuid := auth.uid();
  wanted_thread text := lower(_thread_id);
  sender text := lower(_sender_mongo_id);
  recipient text := lower(_recipient_mongo_id);
  problem text := chat_private.chat_body_problem(_body);
  caller_mongo text;
  user_a text;
  user_b text;
  host uuid;
  open boolean;
  message public.chat_messages;
begin
  if caller is null then
    raise exception using errcode = '42501', message = 'not authenticated',
      hint = 'call with a signed-in user''s access token';
  end if;
  if wanted_thread is null or wanted_thread !~ '^(?:[0-9a-f]{24}_[0-9a-f]{24}|g_[0-9a-f]{32})$' then
    raise exception using errcode = '22023',
      message = '_thread_id must look like <mongo id>_<mongo id> (24 hex characters each) or g_<32 hex characters>';
  end if;

  if starts_with(wanted_thread, 'g_') then
    -- A guest thread: the guest sends with no Mongo ids, the host with their own as sender.
    if sender is not null and sender !~ '^[0-9a-f]{24}$' then
      raise exception using errcode = '22023',
        message = '_sender_mongo_id must be a 24-character hexadecimal Mongo ObjectId, or null for a guest';
    end if;
    if recipient is not null then
      raise exception using errcode = '22023', message = '_recipient_mongo_id must be null in a guest thread';
    end if;
    if problem is not null then
      raise exception using errcode = '22023', message = problem;
    end if;
    -- Abuse limits (DESIGN §10): messages per guest session are counted by the trigger
    -- chat_messages__guest_rate_limit, on every path, besides messages per sender.
    if _client_id is null then
      if sender is null then
        insert into public.chat_messages (thread_id, sender_mongo_id, recipient_mongo_id, sender_supabase_id, body)
        select wanted_thread, null, null, caller, _body
        where exists (
          select from public.chat_threads t
          where t.thread_id = wanted_thread and t.guest_supabase_id = caller
            and t.guest_ended_at is null and t.guest_expires_at > now());
      else
        insert into public.chat_messages (thread_id, sender_mongo_id, recipient_mongo_id, sender_supabase_id, body)
        select wanted_thread, sender, null, caller, _body
        where exists (
          select from public.chat_threads t
          where t.thread_id = wanted_thread and t.user_a_supabase_id = caller and t.user_a_mongo_id = sender
            and t.guest_supabase_id is not null and t.guest_ended_at is null and t.guest_expires_at > now());
      end if;
      if found then
        -- The row as the insert wrote it (id from the sequence, created_at the column's default:
        -- this transaction's now()), without RETURNING: RETURNING would check the new row
        -- against the select policy, which computes every thread id of the caller (a send by a
        -- member of 1,000 threads cost twice a typical one).
        message.id := currval('public.chat_messages_id_seq');
        message.thread_id := wanted_thread;
        message.sender_mongo_id := sender;
        message.recipient_mongo_id := recipient;
        message.sender_supabase_id := caller;
        message.body := _body;
        message.created_at := now();
        message.client_id := _client_id;
        return message;
      end if;
    end if;

    if sender is not null then
      select i.mongo_id into caller_mongo from public.chat_identities i where i.supabase_user_id = caller;
      if caller_mongo is distinct from sender then
        raise exception using errcode = '42501', message = 'sender does not match caller',
          hint = '_sender_mongo_id must be the Mongo id of the signed-in user (null for a guest)';
      end if;
    end if;
    -- RLS shows the host their guest threads and a guest only their active session.
    select t.user_a_supabase_id,
           t.guest_supabase_id is not null and t.guest_ended_at is null and t.guest_expires_at > now()
    into host, open
    from public.chat_threads t where t.thread_id = wanted_thread;
    if host is null then
      raise exception using errcode = 'P0002', message = 'thread not found';
    end if;
    if (host = caller) <> (sender is not null) then
      raise exception using errcode = '42501', message = 'sender does not match caller',
        hint = case when host = caller then 'the host sends with their own _sender_mongo_id'
                    else 'a guest sends with _sender_mongo_id null' end;
    end if;
    if not open then
      raise exception using errcode = '22023', message = 'thread is closed: the guest session has ended';
    end if;
    if _client_id is null then
      raise exception using errcode = 'P0002', message = 'thread not found';
    end if;
  else
    if sender is null or sender !~ '^[0-9a-f]{24}$' then
      raise exception using errcode = '22023',
        message = '_sender_mongo_id must be a 24-character hexadecimal Mongo ObjectId';
    end if;
    if recipient is null or recipient !~ '^[0-9a-f]{24}$' then
      raise exception using errcode = '22023',
        message = '_recipient_mongo_id must be a 24-character hexadecimal Mongo ObjectId';
    end if;
    if recipient = sender then
      raise exception using errcode = '22023', message = '_recipient_mongo_id must differ from _sender_mongo_id';
    end if;
    if problem is not null then
      raise exception using errcode = '22023', message = problem;
    end if;

    if _client_id is null then
      -- The common case in one statement: insert only if the caller is the sender and the
      -- recipient the other participant of a thread they can see (RLS applies to both reads).
      insert into public.chat_messages (thread_id, sender_mongo_id, recipient_mongo_id, sender_supabase_id, body)
      select wanted_thread, sender, recipient, caller, _body
      where exists (
        select from public.chat_identities i
        join public.chat_threads t on t.thread_id = wanted_thread
        where i.supabase_user_id = caller and i.mongo_id = sender
          and ((t.user_a_mongo_id = sender and t.user_b_mongo_id = recipient)
            or (t.user_b_mongo_id = sender and t.user_a_mongo_id = recipient)));
      if found then
        -- The row as the insert wrote it (id from the sequence, created_at the column's default:
        -- this transaction's now()), without RETURNING: RETURNING would check the new row
        -- against the select policy, which computes every thread id of the caller (a send by a
        -- member of 1,000 threads cost twice a typical one).
        message.id := currval('public.chat_messages_id_seq');
        message.thread_id := wanted_thread;
        message.sender_mongo_id := sender;
        message.recipient_mongo_id := recipient;
        message.sender_supabase_id := caller;
        message.body := _body;
        message.created_at := now();
        message.client_id := _client_id;
        return message;
      end if;
    end if;

    -- Nothing inserted yet (or a _client_id to honour): find out why, in the contract's order.
    -- The caller's identity and the thread in one read; RLS shows only the caller's own
    -- identity row and only threads they take part in.
    select i.mongo_id, t.user_a_mongo_id, t.user_b_mongo_id into caller_mongo, user_a, user_b
    from public.chat_identities i
    left join public.chat_threads t on t.thread_id = wanted_thread
    where i.supabase_user_id = caller;
    if caller_mongo is distinct from sender then
      raise exception using errcode = '42501', message = 'sender does not match caller',
        hint = '_sender_mongo_id must be the Mongo id of the signed-in user';
    end if;
    -- A thread the caller is not part of is as invisible as one that does not exist.
    if user_a is null then
      raise exception using errcode = 'P0002', message = 'thread not found';
    end if;
    if recipient is distinct from (case when user_a = sender then user_b else user_a end) then
      raise exception using errcode = '22023',
        message = '_recipient_mongo_id is not the other participant of this thread';
    end if;
    if _client_id is null then
      -- Every check passes now but the insert found nothing: the thread went away meanwhile.
      raise exception using errcode = 'P0002', message = 'thread not found';
    end if;
  end if;

  select * into message from public.chat_messages m where m.sender_supabase_id = caller and m.client_id = _client_id;
  if message.id is not null then
    if message.thread_id <> wanted_thread then
      raise exception using errcode = '22023',
        message = '_client_id was already used for a message in another thread';
    end if;
    return message;  -- a retry: the first row, nothing inserted
  end if;
  insert into public.chat_messages (thread_id, sender_mongo_id, recipient_mongo_id, sender_supabase_id, body, client_id)
  values (wanted_thread, sender, recipient, caller, _body, _client_id)
  on conflict (sender_supabase_id, client_id) where client_id is not null do nothing;
  if found then
    -- The row as the insert wrote it, as above.
    message.id := currval('public.chat_messages_id_seq');
    message.thread_id := wanted_thread;
    message.sender_mongo_id := sender;
    message.recipient_mongo_id := recipient;
    message.sender_supabase_id := caller;
    message.body := _body;
    message.created_at := now();
    message.client_id := _client_id;
    return message;
  else
    -- a concurrent call with the same _client_id won the race: its row, if it is a retry
    select * into strict message from public.chat_messages m
    where m.sender_supabase_id = caller and m.client_id = _client_id;
    if message.thread_id <> wanted_thread then
      raise exception using errcode = '22023',
        message = '_client_id was already used for a message in another thread';
    end if;
  end if;
  return message;
end
$$;
comment on function public.insert_chat_message(text, text, text, text, uuid) is
  'Send a message as the caller (a guest thread too); a retry with the same _client_id returns the first row';

-- History pages without the messages policy's per-row array test (see the notes above).
-- chat_history's page with the owner's rights, for callers RLS applies to (0010).
create function chat_private.chat_history_rows(_thread_id text, _before_created_at timestamp with time zone,
                                               _before_id bigint, _limit integer)
returns setof public.chat_messages
language plpgsql
stable
security definer
set search_path = ''
as $$
declare
  caller uuid := auth.uid();
begin
  -- The caller's own thread only, as chat_threads__select_participants admits it (a guest
  -- while the session is active, 0007): the same answer as chat_history's check.
  if caller is null or not exists (
       select from public.chat_threads t
       where t.thread_id = _thread_id
         and (caller in (t.user_a_supabase_id, t.user_b_supabase_id)
           or (t.guest_supabase_id = caller and t.guest_ended_at is null and t.guest_expires_at > now()))) then
    raise exception using errcode = 'P0002', message = 'thread not found';
  end if;
  if _before_id is null then
    return query
      select m.* from public.chat_messages m
      where m.thread_id = _thread_id
      order by m.created_at desc, m.id desc
      limit _limit;
  else
    return query
      select m.* from public.chat_messages m
      where m.thread_id = _thread_id and (m.created_at, m.id) < (_before_created_at, _before_id)
      order by m.created_at desc, m.id desc
      limit _limit;
  end if;
end
$$;
comment on function chat_private.chat_history_rows(text, timestamp with time zone, bigint, integer) is
  'chat_history''s page with the owner''s rights: the caller''s own thread only (membership from auth.uid())';
revoke all on function chat_private.chat_history_rows(text, timestamp with time zone, bigint, integer) from public;
grant execute on function chat_private.chat_history_rows(text, timestamp with time zone, bigint, integer)
  to authenticated;

create or replace function public.chat_history(
  _thread_id text,
  _before_created_at timestamp with time zone default null,
  _before_id bigint default null,
  _limit integer default 50
) returns setof public.chat_messages
language plpgsql
stable
security invoker
set search_path = ''
as $$
declare
  wanted_thread text := lower(_thread_id);
begin
  if auth.uid() is null then
    raise exception using errcode = '42501', message = 'not authenticated',
      hint = 'call with a signed-in user''s access token';
  end if;
  if wanted_thread is null or wanted_thread !~ '^(?:[0-9a-f]{24}_[0-9a-f]{24}|g_[0-9a-f]{32})$' then
    raise exception using errcode = '22023',
      message = '_thread_id must look like <mongo id>_<mongo id> (24 hex characters each) or g_<32 hex characters>';
  end if;
  if _limit is null or _limit not between 1 and 200 then
    raise exception using errcode = '22023', message = '_limit must be between 1 and 200';
  end if;
  if _before_created_at is null and _before_id is not null then
    raise exception using errcode = '22023',
      message = '_before_created_at is required with _before_id (pass both from the last row of the previous page)';
  end if;
  if _before_id is null and _before_created_at is not null then
    raise exception using errcode = '22023',
      message = '_before_id is required with _before_created_at (pass both from the last row of the previous page)';
  end if;
  -- RLS: participants, a guest thread's host, its guest while the session is active.
  if not exists (select from public.chat_threads t where t.thread_id = wanted_thread) then
    raise exception using errcode = 'P0002', message = 'thread not found';
  end if;

  -- A caller RLS applies to reads the page through chat_history_rows (owner's rights, the
  -- same membership rule checked again there): through the messages policy, each row would
  -- be compared with the array of every thread id of the caller (0010). service_role and the
  -- owner, whom RLS does not apply to, read as before.
  if pg_catalog.row_security_active('public.chat_messages'::regclass) then
    return query select * from chat_private.chat_history_rows(wanted_thread, _before_created_at, _before_id, _limit);
    return;
  end if;

  -- Two statements rather than one with "or ... is null", so both plans use the index.
  if _before_id is null then
    return query
      select m.* from public.chat_messages m
      where m.thread_id = wanted_thread
      order by m.created_at desc, m.id desc
      limit _limit;
  else
    return query
      select m.* from public.chat_messages m
      where m.thread_id = wanted_thread and (m.created_at, m.id) < (_before_created_at, _before_id)
      order by m.created_at desc, m.id desc
      limit _limit;
  end if;
end
$$;
comment on function public.chat_history(text, timestamp with time zone, bigint, integer) is
  'A page of a thread''s messages, newest first; the next page starts before the last row''s (created_at, id)';

-- chat_threads is written once per thread again: 0001's participant indexes come back (the
-- membership lookups and the identity foreign keys' cascades use them), 0008's go. They
-- carry thread_id, so the caller's thread ids that the policies list (caller_threads) come
-- from index-only scans of all-visible pages, which rows written once soon are.
create index chat_threads_user_a_supabase_id_idx on public.chat_threads (user_a_supabase_id, user_a_mongo_id)
  include (thread_id);
create index chat_threads_user_b_supabase_id_idx on public.chat_threads (user_b_supabase_id, user_b_mongo_id)
  include (thread_id);
drop index public.chat_threads_guest_activity_idx;
drop index public.chat_threads_user_b_activity_idx;
drop index public.chat_threads_user_a_activity_idx;
alter table public.chat_threads
  drop column activity_at,
  drop column last_message_at,
  drop column last_message_id;
"""

# 0007's and 0008's definitions, restored verbatim.
DOWNGRADE = r"""
create or replace function public.insert_chat_message(
  _thread_id text,
  _sender_mongo_id text,
  _recipient_mongo_id text,
  _body text,
  _client_id uuid default null
) returns public.chat_messages
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  caller uuid := auth.uid();
  wanted_thread text := lower(_thread_id);
  sender text := lower(_sender_mongo_id);
  recipient text := lower(_recipient_mongo_id);
  problem text := chat_private.chat_body_problem(_body);
  caller_mongo text;
  user_a text;
  user_b text;
  host uuid;
  open boolean;
  message public.chat_messages;
begin
  if caller is null then
    raise exception using errcode = '42501', message = 'not authenticated',
      hint = 'call with a signed-in user''s access token';
  end if;
  if wanted_thread is null or wanted_thread !~ '^(?:[0-9a-f]{24}_[0-9a-f]{24}|g_[0-9a-f]{32})$' then
    raise exception using errcode = '22023',
      message = '_thread_id must look like <mongo id>_<mongo id> (24 hex characters each) or g_<32 hex characters>';
  end if;

  if starts_with(wanted_thread, 'g_') then
    -- A guest thread: the guest sends with no Mongo ids, the host with their own as sender.
    if sender is not null and sender !~ '^[0-9a-f]{24}$' then
      raise exception using errcode = '22023',
        message = '_sender_mongo_id must be a 24-character hexadecimal Mongo ObjectId, or null for a guest';
    end if;
    if recipient is not null then
      raise exception using errcode = '22023', message = '_recipient_mongo_id must be null in a guest thread';
    end if;
    if problem is not null then
      raise exception using errcode = '22023', message = problem;
    end if;
    -- Abuse limits (DESIGN §10): messages per guest session are counted by the trigger
    -- chat_messages__guest_rate_limit, on every path, besides messages per sender.
    if _client_id is null then
      if sender is null then
        insert into public.chat_messages (thread_id, sender_mongo_id, recipient_mongo_id, sender_supabase_id, body)
        select wanted_thread, null, null, caller, _body
        where exists (
          select from public.chat_threads t
          where t.thread_id = wanted_thread and t.guest_supabase_id = caller
            and t.guest_ended_at is null and t.guest_expires_at > now())
        returning * into message;
      else
        insert into public.chat_messages (thread_id, sender_mongo_id, recipient_mongo_id, sender_supabase_id, body)
        select wanted_thread, sender, null, caller, _body
        where exists (
          select from public.chat_threads t
          where t.thread_id = wanted_thread and t.user_a_supabase_id = caller and t.user_a_mongo_id = sender
            and t.guest_supabase_id is not null and t.guest_ended_at is null and t.guest_expires_at > now())
        returning * into message;
      end if;
      if message.id is not null then
        return message;
      end if;
    end if;

    if sender is not null then
      select i.mongo_id into caller_mongo from public.chat_identities i where i.supabase_user_id = caller;
      if caller_mongo is distinct from sender then
        raise exception using errcode = '42501', message = 'sender does not match caller',
          hint = '_sender_mongo_id must be the Mongo id of the signed-in user (null for a guest)';
      end if;
    end if;
    -- RLS shows the host their guest threads and a guest only their active session.
    select t.user_a_supabase_id,
           t.guest_supabase_id is not null and t.guest_ended_at is null and t.guest_expires_at > now()
    into host, open
    from public.chat_threads t where t.thread_id = wanted_thread;
    if host is null then
      raise exception using errcode = 'P0002', message = 'thread not found';
    end if;
    if (host = caller) <> (sender is not null) then
      raise exception using errcode = '42501', message = 'sender does not match caller',
        hint = case when host = caller then 'the host sends with their own _sender_mongo_id'
                    else 'a guest sends with _sender_mongo_id null' end;
    end if;
    if not open then
      raise exception using errcode = '22023', message = 'thread is closed: the guest session has ended';
    end if;
    if _client_id is null then
      raise exception using errcode = 'P0002', message = 'thread not found';
    end if;
  else
    if sender is null or sender !~ '^[0-9a-f]{24}$' then
      raise exception using errcode = '22023',
        message = '_sender_mongo_id must be a 24-character hexadecimal Mongo ObjectId';
    end if;
    if recipient is null or recipient !~ '^[0-9a-f]{24}$' then
      raise exception using errcode = '22023',
        message = '_recipient_mongo_id must be a 24-character hexadecimal Mongo ObjectId';
    end if;
    if recipient = sender then
      raise exception using errcode = '22023', message = '_recipient_mongo_id must differ from _sender_mongo_id';
    end if;
    if problem is not null then
      raise exception using errcode = '22023', message = problem;
    end if;

    if _client_id is null then
      -- The common case in one statement: insert only if the caller is the sender and the
      -- recipient the other participant of a thread they can see (RLS applies to both reads).
      insert into public.chat_messages (thread_id, sender_mongo_id, recipient_mongo_id, sender_supabase_id, body)
      select wanted_thread, sender, recipient, caller, _body
      where exists (
        select from public.chat_identities i
        join public.chat_threads t on t.thread_id = wanted_thread
        where i.supabase_user_id = caller and i.mongo_id = sender
          and ((t.user_a_mongo_id = sender and t.user_b_mongo_id = recipient)
            or (t.user_b_mongo_id = sender and t.user_a_mongo_id = recipient)))
      returning * into message;
      if message.id is not null then
        return message;
      end if;
    end if;

    -- Nothing inserted yet (or a _client_id to honour): find out why, in the contract's order.
    -- The caller's identity and the thread in one read; RLS shows only the caller's own
    -- identity row and only threads they take part in.
    select i.mongo_id, t.user_a_mongo_id, t.user_b_mongo_id into caller_mongo, user_a, user_b
    from public.chat_identities i
    left join public.chat_threads t on t.thread_id = wanted_thread
    where i.supabase_user_id = caller;
    if caller_mongo is distinct from sender then
      raise exception using errcode = '42501', message = 'sender does not match caller',
        hint = '_sender_mongo_id must be the Mongo id of the signed-in user';
    end if;
    -- A thread the caller is not part of is as invisible as one that does not exist.
    if user_a is null then
      raise exception using errcode = 'P0002', message = 'thread not found';
    end if;
    if recipient is distinct from (case when user_a = sender then user_b else user_a end) then
      raise exception using errcode = '22023',
        message = '_recipient_mongo_id is not the other participant of this thread';
    end if;
    if _client_id is null then
      -- Every check passes now but the insert found nothing: the thread went away meanwhile.
      raise exception using errcode = 'P0002', message = 'thread not found';
    end if;
  end if;

  select * into message from public.chat_messages m where m.sender_supabase_id = caller and m.client_id = _client_id;
  if message.id is not null then
    if message.thread_id <> wanted_thread then
      raise exception using errcode = '22023',
        message = '_client_id was already used for a message in another thread';
    end if;
    return message;  -- a retry: the first row, nothing inserted
  end if;
  insert into public.chat_messages (thread_id, sender_mongo_id, recipient_mongo_id, sender_supabase_id, body, client_id)
  values (wanted_thread, sender, recipient, caller, _body, _client_id)
  on conflict (sender_supabase_id, client_id) where client_id is not null do nothing
  returning * into message;
  if message.id is null then
    -- a concurrent call with the same _client_id won the race: its row, if it is a retry
    select * into strict message from public.chat_messages m
    where m.sender_supabase_id = caller and m.client_id = _client_id;
    if message.thread_id <> wanted_thread then
      raise exception using errcode = '22023',
        message = '_client_id was already used for a message in another thread';
    end if;
  end if;
  return message;
end
$$;
comment on function public.insert_chat_message(text, text, text, text, uuid) is
  'Send a message as the caller (a guest thread too); a retry with the same _client_id returns the first row';
revoke all on sequence public.chat_messages_id_seq from authenticated, service_role;
create or replace function public.chat_history(
  _thread_id text,
  _before_created_at timestamp with time zone default null,
  _before_id bigint default null,
  _limit integer default 50
) returns setof public.chat_messages
language plpgsql
stable
security invoker
set search_path = ''
as $$
declare
  wanted_thread text := lower(_thread_id);
begin
  if auth.uid() is null then
    raise exception using errcode = '42501', message = 'not authenticated',
      hint = 'call with a signed-in user''s access token';
  end if;
  if wanted_thread is null or wanted_thread !~ '^(?:[0-9a-f]{24}_[0-9a-f]{24}|g_[0-9a-f]{32})$' then
    raise exception using errcode = '22023',
      message = '_thread_id must look like <mongo id>_<mongo id> (24 hex characters each) or g_<32 hex characters>';
  end if;
  if _limit is null or _limit not between 1 and 200 then
    raise exception using errcode = '22023', message = '_limit must be between 1 and 200';
  end if;
  if _before_created_at is null and _before_id is not null then
    raise exception using errcode = '22023',
      message = '_before_created_at is required with _before_id (pass both from the last row of the previous page)';
  end if;
  if _before_id is null and _before_created_at is not null then
    raise exception using errcode = '22023',
      message = '_before_id is required with _before_created_at (pass both from the last row of the previous page)';
  end if;
  -- RLS: participants, a guest thread's host, its guest while the session is active.
  if not exists (select from public.chat_threads t where t.thread_id = wanted_thread) then
    raise exception using errcode = 'P0002', message = 'thread not found';
  end if;

  -- Two statements rather than one with "or ... is null", so both plans use the index.
  if _before_id is null then
    return query
      select m.* from public.chat_messages m
      where m.thread_id = wanted_thread
      order by m.created_at desc, m.id desc
      limit _limit;
  else
    return query
      select m.* from public.chat_messages m
      where m.thread_id = wanted_thread and (m.created_at, m.id) < (_before_created_at, _before_id)
      order by m.created_at desc, m.id desc
      limit _limit;
  end if;
end
$$;
comment on function public.chat_history(text, timestamp with time zone, bigint, integer) is
  'A page of a thread''s messages, newest first; the next page starts before the last row''s (created_at, id)';
drop function chat_private.chat_history_rows(text, timestamp with time zone, bigint, integer);

alter table public.chat_threads
  add column last_message_id bigint,
  add column last_message_at timestamp with time zone,
  add column activity_at timestamp with time zone not null
    generated always as (coalesce(last_message_at, created_at)) stored;
comment on column public.chat_threads.last_message_id is
  'The newest message (by created_at, id), kept by chat_messages__touch_thread; null before the first';
comment on column public.chat_threads.activity_at is 'The inbox order: the newest message''s time, else created_at';

update public.chat_threads t set (last_message_id, last_message_at) = (a.last_message_id, a.activity_at)
from chat_private.chat_thread_activity a
where a.thread_id = t.thread_id and a.last_message_id is not null;

create index chat_threads_user_a_activity_idx
  on public.chat_threads (user_a_supabase_id, user_a_mongo_id, activity_at, thread_id);
create index chat_threads_user_b_activity_idx
  on public.chat_threads (user_b_supabase_id, user_b_mongo_id, activity_at, thread_id)
  where user_b_supabase_id is not null;
create index chat_threads_guest_activity_idx on public.chat_threads (guest_supabase_id, activity_at, thread_id)
  where guest_supabase_id is not null;
drop index public.chat_threads_user_a_supabase_id_idx;
drop index public.chat_threads_user_b_supabase_id_idx;

create or replace function chat_private.chat_thread_touch() returns trigger
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

create or replace function chat_private.chat_inbox_rows(_limit integer, _before_activity_at timestamp with time zone,
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

drop trigger chat_threads__activity on public.chat_threads;
drop function chat_private.chat_thread_activity_sync();
drop table chat_private.chat_thread_activity;
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
