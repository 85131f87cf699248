#!/usr/bin/env bash
# Starts a throwaway PostgreSQL server from Debian's packages on 127.0.0.1 for the
# records tests, and prints the URL to export as COURTLINE_TEST_POSTGRES_URL.
#
#   eval "$(bash .ci/postgres.sh start)"   # installs if needed, starts, exports the URL
#   bash .ci/postgres.sh stop
#
# The cluster lives in $COURTLINE_PG_DIR (default /tmp/courtline-pg), trusts local
# connections only, and listens on loopback port $COURTLINE_PG_PORT (default 55432).
set -euo pipefail
dir=${COURTLINE_PG_DIR:-/tmp/courtline-pg}
port=${COURTLINE_PG_PORT:-55432}

if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
fi
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
# PostgreSQL refuses to run as root: the cluster belongs to the postgres user.
as_postgres() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi; }

case "${1:-start}" in
  start)
    if [ ! -f "$dir/PG_VERSION" ]; then
      mkdir -p "$dir"
      [ "$(id -u)" = 0 ] && chown postgres:postgres "$dir"
      as_postgres "$bin/initdb -D $dir -U postgres --auth=trust -E UTF8 --locale=C.UTF-8" >&2
    fi
    if ! as_postgres "$bin/pg_ctl -D $dir status" >/dev/null 2>&1; then
      as_postgres "$bin/pg_ctl -D $dir -l $dir/server.log -w -o \"-c listen_addresses=127.0.0.1 -p $port -k /tmp\" start" >&2
    fi
    echo "export COURTLINE_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:$port/postgres"
    ;;
  stop)
    as_postgres "$bin/pg_ctl -D $dir -m fast stop" >&2 || true
    ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
