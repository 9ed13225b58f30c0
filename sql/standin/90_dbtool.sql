-- Local Supabase stand-in, part 9: dbtool's own bookkeeping (stand-in version, reset
-- fingerprint) and the partition maintenance the Realtime server does on Supabase.

create schema if not exists _dbtool authorization supabase_admin;
revoke all on schema _dbtool from public;

create table if not exists _dbtool.state (
  key text primary key,
  value text not null,
  updated_at timestamp with time zone not null default now()
);

-- Daily partitions of realtime.messages, yesterday .. today+3 (UTC), named and owned as
-- the Realtime server names and owns them. Returns the partitions it created.
create or replace function _dbtool.create_realtime_partitions() returns setof text
language plpgsql
set search_path = ''
as $$
declare
  day date;
  partition_name text;
begin
  for day in
    select d::date from generate_series(
      (now() at time zone 'utc')::date - 1, (now() at time zone 'utc')::date + 3, interval '1 day') d
  loop
    partition_name := 'messages_' || to_char(day, 'YYYY_MM_DD');
    if to_regclass('realtime.' || partition_name) is null then
      execute format(
        'create table realtime.%I partition of realtime.messages for values from (%L) to (%L)',
        partition_name, day, day + 1);
      execute format('alter table realtime.%I owner to supabase_realtime_admin', partition_name);
      return next partition_name;
    end if;
  end loop;
end
$$;
revoke all on function _dbtool.create_realtime_partitions() from public;
