"""realtime hardening: bounded broadcast wait, guards for every role, Postgres Changes opt-in

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

Why (DBA notes):
* A broadcast never costs the message. The Realtime server creates and drops the daily
  partitions of realtime.messages, and policy DDL on it (supautils) holds ACCESS EXCLUSIVE
  until commit. A send that queued behind such a lock ran into the caller's
  statement_timeout (8s for authenticated), which no exception handler can catch, and the
  message was lost. The trigger function now carries `lock_timeout = 250ms`: a blocked
  broadcast gives up quickly with a WARNING (lock timeouts can be caught), and the message
  is saved; the client recovers it through chat_history. The setting is the function's own
  and is restored when it returns, so it changes nothing else in the sender's transaction.
* Guards hold for every role. A JWT may carry any role that `authenticator` can become.
  0003's restrictive guards covered anon and authenticated only, so a custom role plus
  another feature's permissive policy could read a chat topic or forge broadcasts on it.
  chat_realtime__guard_other_roles applies to every role (TO public): on chat topics it lets
  through only roles that hold authenticated's privileges, where the participant guard of
  0003 then applies. It replaces chat_realtime__guard_anon. service_role and the owner
  bypass RLS, as the contract wants. pg_has_role is a built-in every role may call, so the
  guard needs no privilege on our helpers (a custom role has none).
* Postgres Changes is opt-in. Realtime sends DELETE events to every subscriber without an
  RLS check and runs an RLS check per subscriber per insert; 0003 put chat_messages in the
  supabase_realtime publication by default. This revision takes it out; a project that
  wants the fallback adds it itself (README, "Operating notes").
* The participant test of the chat:<thread_id> policies is PL/pgSQL instead of SQL: a SQL
  function with a pinned search_path is never inlined and is planned again on every call
  (twice per Realtime check, once per policy); PL/pgSQL keeps its plan for the session,
  which Realtime's pooled connections reuse (bench/: the join check's cost over the owner's).
* No COMMENT ON POLICY on realtime.messages (refused on hosted images before supautils 3.3):
  the policy's purpose is in its name and in the comments below.
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Frozen with this revision: a later fix is a new revision, never an edit here.
UPGRADE = r"""
create or replace function chat_private.broadcast_chat_message() returns trigger
language plpgsql
security definer
set search_path = ''
set lock_timeout = '250ms'
as $$
begin
  begin
    perform realtime.send(
      jsonb_build_object('old_record', null, 'record', to_jsonb(new), 'operation', tg_op,
                         'table', tg_table_name, 'schema', tg_table_schema),
      'INSERT', 'chat:' || new.thread_id, true);
    perform pg_catalog.set_config('realtime.topic', '', true);
  exception when others then
    raise warning 'chat message % saved but not broadcast to chat:%: %', new.id, new.thread_id, sqlerrm;
  end;
  return null;
end
$$;
comment on function chat_private.broadcast_chat_message() is
  'Broadcasts a new chat message to chat:<thread_id> with the owner''s rights; '
  'waits at most 250ms for a lock; never fails the insert';

create or replace function chat_private.is_chat_topic_participant(_topic text) returns boolean
language plpgsql
stable
security invoker
set search_path = ''
as $$
begin
  return starts_with(_topic, 'chat:') and exists (
    select from public.chat_threads t
    where t.thread_id = substr(_topic, 6)
      and (select auth.uid()) in (t.user_a_supabase_id, t.user_b_supabase_id));
end
$$;

drop policy chat_realtime__guard_anon on realtime.messages;

-- chat_realtime__guard_other_roles: whatever other policies allow, on chat topics only roles
-- with authenticated's privileges get anywhere (and there the participant guard applies);
-- anon, authenticator and custom JWT roles never read or write a chat topic.
create policy chat_realtime__guard_other_roles on realtime.messages
  as restrictive
  for all to public
  using (not starts_with(topic, 'chat:') or (select pg_catalog.pg_has_role('authenticated', 'USAGE')))
  with check (not starts_with(topic, 'chat:') or (select pg_catalog.pg_has_role('authenticated', 'USAGE')));

do $publication$
begin
  if exists (select from pg_catalog.pg_publication_tables
             where pubname = 'supabase_realtime' and schemaname = 'public' and tablename = 'chat_messages')
  then
    alter publication supabase_realtime drop table public.chat_messages;
  end if;
end
$publication$;
"""

DOWNGRADE = r"""
do $publication$
begin
  if exists (select from pg_catalog.pg_publication where pubname = 'supabase_realtime')
     and not exists (select from pg_catalog.pg_publication_tables
                     where pubname = 'supabase_realtime' and schemaname = 'public' and tablename = 'chat_messages')
  then
    alter publication supabase_realtime add table public.chat_messages;
  end if;
end
$publication$;

drop policy chat_realtime__guard_other_roles on realtime.messages;

-- chat_realtime__guard_anon: Whatever other policies allow, anon never reads or writes chat topics.
create policy chat_realtime__guard_anon on realtime.messages
  as restrictive
  for all to anon
  using (not starts_with(topic, 'chat:'))
  with check (not starts_with(topic, 'chat:'));

create or replace function chat_private.is_chat_topic_participant(_topic text) returns boolean
language sql
stable
security invoker
set search_path = ''
as $$
  select starts_with(_topic, 'chat:') and exists (
    select from public.chat_threads t
    where t.thread_id = substr(_topic, 6)
      and (select auth.uid()) in (t.user_a_supabase_id, t.user_b_supabase_id))
$$;

create or replace function chat_private.broadcast_chat_message() returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
  begin
    perform realtime.send(
      jsonb_build_object('old_record', null, 'record', to_jsonb(new), 'operation', tg_op,
                         'table', tg_table_name, 'schema', tg_table_schema),
      'INSERT', 'chat:' || new.thread_id, true);
    perform pg_catalog.set_config('realtime.topic', '', true);
  exception when others then
    raise warning 'chat message % saved but not broadcast to chat:%: %', new.id, new.thread_id, sqlerrm;
  end;
  return null;
end
$$;
comment on function chat_private.broadcast_chat_message() is
  'Broadcasts a new chat message to chat:<thread_id> with the owner''s rights; never fails the insert';
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
