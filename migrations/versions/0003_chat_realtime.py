"""chat realtime: broadcast trigger, policies on realtime.messages, publication

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21

* Each new message is broadcast to the private topic chat:<thread_id> (event INSERT, the
  payload realtime.broadcast_changes builds) by a SECURITY DEFINER trigger owned by the migration role, so
  it broadcasts whatever the sender may do on realtime.messages. A failed broadcast is a
  WARNING: the message is already durable and clients recover it through chat_history.
* Policies on realtime.messages (all named chat_realtime__*) only ever speak about topics
  starting with 'chat:'. Permissive: participants may read broadcast and presence, and
  write presence. Restrictive guards: on chat topics nothing else is allowed, whatever
  other policies (for other features) may grant; in particular no client may write a
  broadcast there, so nobody can forge a message event. Other topics are untouched.
* Realtime authorises a channel by setting realtime.topic and checking probe rows; the
  membership part does not depend on the row, so it is wrapped to run once per statement.
* We never create, alter or drop Supabase's objects; we only add and remove our policies
  on realtime.messages and our table in the supabase_realtime publication. The policies'
  explanations are SQL comments, not COMMENT ON POLICY: on hosted images before supautils
  3.3 the migration role may create policies on realtime.messages but not comment on them.
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# Frozen with this revision: a later fix is a new revision, never an edit here.
UPGRADE = r"""
-- The payload is the one realtime.broadcast_changes() builds ({record, old_record, operation,
-- table, schema}); sending it with realtime.send() directly saves a function layer and a
-- subtransaction per message (measured by bench/). The block keeps a broadcast that fails
-- in any way (even realtime.send itself changing) from failing the insert. realtime.send
-- sets realtime.topic for the rest of the transaction; it is cleared again so that the
-- sender's transaction never looks like an authorised channel check. (A SET clause on the
-- function would do it too, but needs a superuser for a custom setting; postgres is not one.)
create function chat_private.broadcast_chat_message() returns trigger
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
revoke all on function chat_private.broadcast_chat_message() from public;

create trigger chat_messages__broadcast
  after insert on public.chat_messages
  for each row execute function chat_private.broadcast_chat_message();

-- Is the caller a participant of the thread a chat:<thread_id> topic names?
create function chat_private.is_chat_topic_participant(_topic text) returns boolean
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
comment on function chat_private.is_chat_topic_participant(text) is
  'True when the caller takes part in the thread named by a chat:<thread_id> topic';
revoke all on function chat_private.is_chat_topic_participant(text) from public;
grant execute on function chat_private.is_chat_topic_participant(text) to authenticated;

-- chat_realtime__select_participants: Participants may join chat:<thread_id> and receive its broadcasts and presence.
create policy chat_realtime__select_participants on realtime.messages
  for select to authenticated
  using (
    starts_with(topic, 'chat:')
    and extension in ('broadcast', 'presence')
    and topic = (select realtime.topic())
    and (select chat_private.is_chat_topic_participant(realtime.topic())));

-- chat_realtime__insert_presence_participants: Participants may track presence (typing, online)
-- on chat:<thread_id>; broadcasts come only from the trigger.
create policy chat_realtime__insert_presence_participants on realtime.messages
  for insert to authenticated
  with check (
    starts_with(topic, 'chat:')
    and extension = 'presence'
    and topic = (select realtime.topic())
    and (select chat_private.is_chat_topic_participant(realtime.topic())));

-- chat_realtime__guard_authenticated: Whatever other policies allow, on chat topics a user reads
-- only as a participant and writes only presence.
create policy chat_realtime__guard_authenticated on realtime.messages
  as restrictive
  for all to authenticated
  using (
    not starts_with(topic, 'chat:')
    or (extension in ('broadcast', 'presence')
        and topic = (select realtime.topic())
        and (select chat_private.is_chat_topic_participant(realtime.topic()))))
  with check (
    not starts_with(topic, 'chat:')
    or (extension = 'presence'
        and topic = (select realtime.topic())
        and (select chat_private.is_chat_topic_participant(realtime.topic()))));

-- chat_realtime__guard_anon: Whatever other policies allow, anon never reads or writes chat topics.
create policy chat_realtime__guard_anon on realtime.messages
  as restrictive
  for all to anon
  using (not starts_with(topic, 'chat:'))
  with check (not starts_with(topic, 'chat:'));

-- Postgres Changes fallback (RLS applies to it too), where Supabase's publication exists.
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
"""

DOWNGRADE = r"""
do $publication$
begin
  if exists (select from pg_catalog.pg_publication_tables
             where pubname = 'supabase_realtime' and schemaname = 'public' and tablename = 'chat_messages')
  then
    alter publication supabase_realtime drop table public.chat_messages;
  end if;
end
$publication$;
drop policy chat_realtime__guard_anon on realtime.messages;
drop policy chat_realtime__guard_authenticated on realtime.messages;
drop policy chat_realtime__insert_presence_participants on realtime.messages;
drop policy chat_realtime__select_participants on realtime.messages;
drop function chat_private.is_chat_topic_participant(text);
drop trigger chat_messages__broadcast on public.chat_messages;
drop function chat_private.broadcast_chat_message();
"""


def upgrade() -> None:
    op.execute(UPGRADE)


def downgrade() -> None:
    op.execute(DOWNGRADE)
