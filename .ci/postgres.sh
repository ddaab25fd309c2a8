#!/usr/bin/env bash
# Install and start a throwaway PostgreSQL server from Debian's packages on 127.0.0.1 for
# the tests (no Docker), then print the exports of AUTOPLAT_TEST_PG (its URL) and
# AUTOPLAT_TEST_PG_DATA (its data folder): eval "$(.ci/postgres.sh)". Idempotent; run as
# root. Its own port (PGPORT, default 55432: clear of a system cluster on 5432) and data
# folder (PGDATA, default /var/tmp/autoplat-ci-pg-PORT).
set -euo pipefail
port="${PGPORT:-55432}"
data="${PGDATA:-/var/tmp/autoplat-ci-pg-$port}"
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
fi
bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
as_pg() { runuser -u postgres -- "$@"; }
if ! as_pg "$bin/pg_isready" -q -h 127.0.0.1 -p "$port"; then
    if [ ! -f "$data/PG_VERSION" ]; then
        mkdir -p "$data" && chown postgres:postgres "$data"
        as_pg "$bin/initdb" -D "$data" -U postgres --auth-local=trust \
            --auth-host=scram-sha-256 >&2
    fi
    as_pg "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w \
        -o "-p $port -k /tmp -c listen_addresses=127.0.0.1 -c fsync=off" start >&2
fi
sql() { as_pg psql -qtA -h /tmp -p "$port" -U postgres -v ON_ERROR_STOP=1 -c "$1"; }
if [ -z "$(sql "SELECT 1 FROM pg_roles WHERE rolname = 'autoplat'")" ]; then
    sql "CREATE ROLE autoplat LOGIN CREATEDB PASSWORD 'autoplat'" >&2
    sql "CREATE DATABASE autoplat OWNER autoplat" >&2
fi
echo "export AUTOPLAT_TEST_PG=postgresql+psycopg://autoplat:autoplat@127.0.0.1:$port/autoplat"
echo "export AUTOPLAT_TEST_PG_DATA=$data"
