"""chat RPCs: ensure_chat_thread, insert_chat_message, chat_history

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21

The RPCs are SECURITY INVOKER: RLS, constraints and column grants do the enforcing, and
the functions add the contract's clear errors (DESIGN §3) before anything is written.
The only privileged code is chat_private.chat_identity_user_id: a user may read only
their own identity row, but ensure_chat_thread must learn the partner's Supabase id
(which the thread row then shows to both participants anyway).

Checks run in an order that leaks nothing: authentication, then argument shape, then the
caller's own identity, and only then anything about other users or threads. A thread
that does not exist and one the caller cannot see give the same P0002.
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# Frozen with this revision: a later fix is a new revision, never an edit here.
UPGRADE = r"""
-- Why a body is invalid, for insert_chat_message's messages; the table's inline checks (0001)
-- state the same rule (a test proves they agree).
-- PL/pgSQL rather than SQL: with its pinned search_path a SQL function cannot be inlined and
-- would be planned again on every call; PL/pgSQL keeps its plans for the session.
create function chat_private.chat_body_problem(_body text) returns text
language plpgsql
immutable
parallel safe
set search_path = ''
as $$
begin
  if _body is null or _body = '' then
    return 'body must not be empty';
  elsif char_length(_body) > 4000 then
    return format('body must be at most 4000 characters (got %s)', char_length(_body));
  elsif _body ~ '^[\s\u0085\u00a0\u1680\u180e\u2000-\u200b\u2028\u2029\u202f\u205f\u2060\u3000\ufeff]*$' then
    return 'body must not be only whitespace';
  end if;
  return null;
end
$$;
comment on function chat_private.chat_body_problem(text) is
  'Why a message body is invalid (NULL when valid): empty, over 4000 characters, or only (Unicode) whitespace';
revoke all on function chat_private.chat_body_problem(text) from public;
grant execute on function chat_private.chat_body_problem(text) to authenticated, service_role;

-- The partner lookup of ensure_chat_thread (definer: identity rows are private to their owner).
create function chat_private.chat_identity_user_id(_mongo_id text) returns uuid
language sql
stable
security definer
set search_path = ''
as $$
  select i.supabase_user_id from public.chat_identities i where i.mongo_id = _mongo_id
$$;
comment on function chat_private.chat_identity_user_id(text) is
  'Supabase user of a Mongo id, for ensure_chat_thread only (security definer, not exposed by PostgREST)';
revoke all on function chat_private.chat_identity_user_id(text) from public;
grant execute on function chat_private.chat_identity_user_id(text) to authenticated;

create function public.ensure_chat_thread(_user_a_mongo_id text, _user_b_mongo_id text)
returns public.chat_threads
language plpgsql
volatile
security invoker
set search_path = ''
as $$
declare
  caller uuid := auth.uid();
  a text := lower(_user_a_mongo_id);
  b text := lower(_user_b_mongo_id);
  caller_mongo text;
  low text;
  high text;
  partner_arg text;
  low_user uuid;
  high_user uuid;
  thread public.chat_threads;
begin
  if caller is null then
    raise exception using errcode = '42501', message = 'not authenticated',
      hint = 'call with a signed-in user''s access token';
  end if;
  if a is null or a !~ '^[0-9a-f]{24}$' then
    raise exception using errcode = '22023',
      message = '_user_a_mongo_id must be a 24-character hexadecimal Mongo ObjectId';
  end if;
  if b is null or b !~ '^[0-9a-f]{24}$' then
    raise exception using errcode = '22023',
      message = '_user_b_mongo_id must be a 24-character hexadecimal Mongo ObjectId';
  end if;
  if a = b then
    raise exception using errcode = '22023', message = '_user_b_mongo_id must differ from _user_a_mongo_id';
  end if;

  -- The caller's own identity row is the only one RLS lets them read.
  select i.mongo_id into caller_mongo from public.chat_identities i where i.supabase_user_id = caller;
  if caller_mongo is null or caller_mongo not in (a, b) then
    raise exception using errcode = '42501',
      message = 'not a participant: the caller is neither _user_a_mongo_id nor _user_b_mongo_id';
  end if;

  if a collate "C" < b collate "C" then low := a; high := b; else low := b; high := a; end if;
  partner_arg := case when caller_mongo = a then '_user_b_mongo_id' else '_user_a_mongo_id' end;
  low_user := chat_private.chat_identity_user_id(low);
  high_user := chat_private.chat_identity_user_id(high);
  if low_user is null or high_user is null then
    raise exception using errcode = '22023', message = partner_arg || ' has no chat identity yet',
      hint = 'the backend creates identities (chat_identities) when a user signs in';
  end if;

  -- Idempotent under concurrency: a racing insert waits for the first and does nothing.
  insert into public.chat_threads (thread_id, user_a_mongo_id, user_a_supabase_id, user_b_mongo_id, user_b_supabase_id)
  values (low || '_' || high, low, low_user, high, high_user)
  on conflict (thread_id) do nothing
  returning * into thread;
  if thread.thread_id is null then
    select * into strict thread from public.chat_threads t where t.thread_id = low || '_' || high;
  end if;
  return thread;
end
$$;
comment on function public.ensure_chat_thread(text, text) is
  'Create or return the thread of the caller and another user (argument order does not matter)';

create function public.insert_chat_message(
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
  message public.chat_messages;
begin
  if caller is null then
    raise exception using errcode = '42501', message = 'not authenticated',
      hint = 'call with a signed-in user''s access token';
  end if;
  if wanted_thread is null or wanted_thread !~ '^[0-9a-f]{24}_[0-9a-f]{24}$' then
    raise exception using errcode = '22023',
      message = '_thread_id must look like <mongo id>_<mongo id> (24 hexadecimal characters each)';
  end if;
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
  'Send a message as the caller; a retry with the same _client_id returns the first row';

create function public.chat_history(
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
  if wanted_thread is null or wanted_thread !~ '^[0-9a-f]{24}_[0-9a-f]{24}$' then
    raise exception using errcode = '22023',
      message = '_thread_id must look like <mongo id>_<mongo id> (24 hexadecimal characters each)';
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

-- Default privileges granted these to anon, authenticated, service_role and PUBLIC.
revoke all on function public.ensure_chat_thread(text, text) from public, anon, authenticated, service_role;
revoke all on function public.insert_chat_message(text, text, text, text, uuid)
  from public, anon, authenticated, service_role;
revoke all on function public.chat_history(text, timestamp with time zone, bigint, integer)
  from public, anon, authenticated, service_role;
grant execute on function public.ensure_chat_thread(text, text) to authenticated, service_role;
grant execute on function public.insert_chat_message(text, text, text, text, uuid) to authenticated, service_role;
grant execute on function public.chat_history(text, timestamp with time zone, bigint, integer)
  to authenticated, service_role;
"""

DOWNGRADE = r"""
drop function public.chat_history(text, timestamp with time zone, bigint, integer);
drop function public.insert_chat_message(text, text, text, text, uuid);
drop function public.ensure_chat_thread(text, text);
drop function chat_private.chat_identity_user_id(text);
drop function chat_private.chat_body_problem(text);
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
