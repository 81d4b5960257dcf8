#!/bin/sh
# The official postgres image's start-up, as far as deploy/compose.yaml uses it: a first
# start makes the cluster with POSTGRES_USER as superuser and POSTGRES_DB, clients from
# anywhere authenticated by POSTGRES_HOST_AUTH_METHOD; then postgres runs as postgres.
set -eu
user=${POSTGRES_USER:-postgres}
db=${POSTGRES_DB:-$user}
method=${POSTGRES_HOST_AUTH_METHOD:-}
[ -n "$method" ] || { echo "this stand-in knows only POSTGRES_HOST_AUTH_METHOD" >&2; exit 1; }
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }
install -d -o postgres -g postgres -m 0700 "$PGDATA"
install -d -o postgres -g postgres /var/run/postgresql
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  as_postgres initdb --pgdata="$PGDATA" --username="$user" --auth=trust >/dev/null
  echo "host all all all $method" >>"$PGDATA/pg_hba.conf"
  [ "$db" = postgres ] || echo "CREATE DATABASE \"$db\"" \
    | as_postgres postgres --single -D "$PGDATA" postgres >/dev/null
fi
exec setpriv --reuid=postgres --regid=postgres --init-groups "$@" -c listen_addresses='*'
