#!/bin/sh
# The start command of the launchcontrol-postgres image (scripts/image.sh postgres): on the
# first start, a cluster in $PGDATA (a volume) with the superuser $POSTGRES_USER and the
# database $POSTGRES_DB; then the server, as the postgres user, in the foreground.
# Test world only: it trusts every local connection, so it listens on loopback alone.
set -eu

: "${PGDATA:=/var/lib/postgresql/data}"
: "${PGPORT:=5432}"
: "${POSTGRES_USER:=lc}"
: "${POSTGRES_DB:=launchcontrol}"
bin=/usr/lib/postgresql/15/bin

as_postgres() {
  setpriv --reuid=postgres --regid=postgres --init-groups "$@"
}

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  mkdir -p "$PGDATA"
  chown postgres:postgres "$PGDATA"
  chmod 700 "$PGDATA"
  as_postgres "$bin/initdb" --pgdata="$PGDATA" --username="$POSTGRES_USER" \
    --auth=trust --encoding=UTF8 --locale=C.UTF-8 >&2
  echo "CREATE DATABASE \"$POSTGRES_DB\";" |
    as_postgres "$bin/postgres" --single -j -D "$PGDATA" postgres >/dev/null
fi

exec setpriv --reuid=postgres --regid=postgres --init-groups \
  "$bin/postgres" -D "$PGDATA" -p "$PGPORT" \
  -c listen_addresses=127.0.0.1 -c unix_socket_directories= "$@"
