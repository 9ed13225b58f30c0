-- Local Supabase stand-in, part 9.5: what the hosted platform lets the migration role do to
-- Supabase's own objects, and no more.
--
-- On a current hosted project `postgres` owns nothing in `auth` or `realtime` and is not a
-- member of their admin roles, so PostgreSQL itself refuses every DDL on those objects
-- (`must be owner of table messages`, `permission denied for schema realtime`, ...). The
-- supautils extension makes one exception: `postgres` may create, alter and drop policies
-- on the tables its `policy_grants` setting lists (auth.users, realtime.messages, ...),
-- and while it does so it holds ACCESS EXCLUSIVE on every existing listed table until
-- commit. supautils is a server extension; the stand-in reproduces the same behaviour with
-- two event triggers owned by the superuser:
--   * at the start of CREATE/ALTER/DROP POLICY run by postgres: lock every listed table
--     ACCESS EXCLUSIVE, then make postgres a member of the admin roles for this command
--     only (inside its transaction, invisible to other sessions);
--   * at its end: refuse the command if it touched a platform table that is not listed
--     (with PostgreSQL's own message), then take the membership back.
-- Anything else (ALTER TABLE, CREATE TRIGGER/INDEX, COMMENT ON POLICY, CREATE in schema
-- realtime, replacing a realtime function) never gets the membership and fails exactly as
-- on Supabase: images before supautils 3.3 also refuse COMMENT ON POLICY there.

-- The tables supautils' policy_grants lists for postgres on hosted projects.
create or replace function _dbtool.policy_grant_tables() returns text[]
language sql immutable
set search_path = ''
as $$
  select array['auth.audit_log_entries', 'auth.identities', 'auth.refresh_tokens', 'auth.sessions',
               'auth.users', 'realtime.broadcasts', 'realtime.channels', 'realtime.messages',
               'storage.buckets', 'storage.migrations', 'storage.objects', 'storage.s3_multipart_uploads',
               'storage.s3_multipart_uploads_parts']
$$;

-- The role running the command: SET ROLE if any, else the session's (this function runs as
-- its owner, so current_user would name the superuser).
create or replace function _dbtool.acting_role() returns text
language sql stable
set search_path = ''
as $$
  select case when pg_catalog.current_setting('role') = 'none' then session_user::text
              else pg_catalog.current_setting('role') end
$$;

create or replace function _dbtool.policy_ddl_start() returns event_trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  listed text;
begin
  if tg_tag not in ('CREATE POLICY', 'ALTER POLICY', 'DROP POLICY') or _dbtool.acting_role() <> 'postgres' then
    return;
  end if;
  -- supautils: policy DDL blocks sign-ins and Realtime until commit.
  foreach listed in array _dbtool.policy_grant_tables() loop
    if pg_catalog.to_regclass(listed) is not null then
      execute format('lock table %s in access exclusive mode', listed);
    end if;
  end loop;
  grant supabase_realtime_admin, supabase_auth_admin to postgres;
  perform pg_catalog.set_config('_dbtool.policy_grant', 'on', true);
end
$$;

create or replace function _dbtool.policy_ddl_refuse(_table regclass) returns void
language plpgsql
set search_path = ''
as $$
begin
  if (select pg_catalog.pg_get_userbyid(c.relowner) from pg_catalog.pg_class c where c.oid = _table)
       in ('supabase_realtime_admin', 'supabase_auth_admin', 'supabase_storage_admin', 'supabase_admin')
     and not (_table::text = any (_dbtool.policy_grant_tables())) then
    raise exception using errcode = '42501',
      message = format('must be owner of table %s',
                       (select c.relname from pg_catalog.pg_class c where c.oid = _table));
  end if;
end
$$;

create or replace function _dbtool.policy_ddl_end() returns event_trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  target regclass;
begin
  if pg_catalog.current_setting('_dbtool.policy_grant', true) is distinct from 'on' then
    return;
  end if;
  for target in
    select p.polrelid from pg_catalog.pg_event_trigger_ddl_commands() d
    join pg_catalog.pg_policy p on p.oid = d.objid
    where d.classid = 'pg_catalog.pg_policy'::regclass
  loop
    perform _dbtool.policy_ddl_refuse(target);
  end loop;
  revoke supabase_realtime_admin, supabase_auth_admin from postgres;
  perform pg_catalog.set_config('_dbtool.policy_grant', '', true);
end
$$;

create or replace function _dbtool.policy_ddl_drop() returns event_trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
  dropped record;
begin
  if pg_catalog.current_setting('_dbtool.policy_grant', true) is distinct from 'on' then
    return;
  end if;
  for dropped in
    select d.address_names from pg_catalog.pg_event_trigger_dropped_objects() d where d.object_type = 'policy'
  loop
    perform _dbtool.policy_ddl_refuse(
      pg_catalog.to_regclass(format('%I.%I', dropped.address_names[1], dropped.address_names[2])));
  end loop;
end
$$;

revoke all on function _dbtool.policy_grant_tables(), _dbtool.acting_role(), _dbtool.policy_ddl_start(),
  _dbtool.policy_ddl_refuse(regclass), _dbtool.policy_ddl_end(), _dbtool.policy_ddl_drop() from public;

do $triggers$
begin
  if not exists (select from pg_catalog.pg_event_trigger where evtname = '_dbtool_policy_ddl_start') then
    create event trigger _dbtool_policy_ddl_start on ddl_command_start
      when tag in ('CREATE POLICY', 'ALTER POLICY', 'DROP POLICY')
      execute function _dbtool.policy_ddl_start();
  end if;
  if not exists (select from pg_catalog.pg_event_trigger where evtname = '_dbtool_policy_ddl_end') then
    create event trigger _dbtool_policy_ddl_end on ddl_command_end
      when tag in ('CREATE POLICY', 'ALTER POLICY', 'DROP POLICY')
      execute function _dbtool.policy_ddl_end();
  end if;
  if not exists (select from pg_catalog.pg_event_trigger where evtname = '_dbtool_policy_ddl_drop') then
    create event trigger _dbtool_policy_ddl_drop on sql_drop
      when tag in ('DROP POLICY')
      execute function _dbtool.policy_ddl_drop();
  end if;
end
$triggers$;
