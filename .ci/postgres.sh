# shellcheck shell=bash
# Source this file (`source .ci/postgres.sh`) to get a throwaway PostgreSQL server for the test suite.
#
# It installs Debian's `postgresql` if missing, runs a private cluster under $BRIDGE_PG_DIR
# (default /tmp/bridge-pg) on 127.0.0.1 (port 5432, or the next free one), and exports
#   BRIDGE_TEST_POSTGRES_URL=postgresql+asyncpg://bridge:bridge@127.0.0.1:PORT/bridge_test
# The role has CREATEDB because the tests give every test a fresh database.
# No systemd needed: the cluster is driven with pg_ctl, as the postgres user when run as root.
# Sourcing it again reuses the running server; an already-set BRIDGE_TEST_POSTGRES_URL is left alone.
# Safe under `set -euo pipefail` in the caller; when sourced it returns non-zero on failure, never exits.

_bridge_pg_main() {
    if [ -n "${BRIDGE_TEST_POSTGRES_URL:-}" ]; then
        echo "BRIDGE_TEST_POSTGRES_URL=$BRIDGE_TEST_POSTGRES_URL (already set, left alone)"
        return 0
    fi
    local dir="${BRIDGE_PG_DIR:-/tmp/bridge-pg}"
    local user=bridge password=bridge db=bridge_test
    local bindir run_as=()

    bindir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    if [ -z "$bindir" ]; then
        bash "$(dirname "${BASH_SOURCE[0]}")/apt_install.sh" postgresql || return 1
        bindir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
        [ -n "$bindir" ] || { echo "postgres.sh: no PostgreSQL binaries after install" >&2; return 1; }
    fi

    # PostgreSQL refuses to run as root.
    if [ "$(id -u)" -eq 0 ]; then
        run_as=(runuser -u postgres --)
    fi

    local port=""
    if [ -f "$dir/data/postmaster.pid" ] && "${run_as[@]}" "$bindir/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
        port="$(cat "$dir/port")"
    else
        if [ ! -f "$dir/data/PG_VERSION" ]; then
            rm -rf "$dir"
            mkdir -p "$dir"
            [ "$(id -u)" -ne 0 ] || chown postgres:postgres "$dir"
            local pwfile="$dir/pw"
            echo "postgres" > "$pwfile"
            [ "$(id -u)" -ne 0 ] || chown postgres:postgres "$pwfile"
            "${run_as[@]}" "$bindir/initdb" -D "$dir/data" -U postgres --pwfile="$pwfile" \
                --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
                || { echo "postgres.sh: initdb failed, see $dir/initdb.log" >&2; return 1; }
        fi
        port=5432
        while (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
            port=$((port + 1))
            [ "$port" -lt 5532 ] || { echo "postgres.sh: no free port in 5432-5531" >&2; return 1; }
        done
        # A test server: durability is not wanted, speed is.
        "${run_as[@]}" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
            -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$dir \
                -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
            start >/dev/null \
            || { echo "postgres.sh: server did not start, see $dir/server.log" >&2; return 1; }
        echo "$port" > "$dir/port"
    fi

    local psql=("${run_as[@]}" "$bindir/psql" -h "$dir" -p "$port" -U postgres -d postgres -v ON_ERROR_STOP=1 -qAt)
    if [ "$("${psql[@]}" -c "SELECT 1 FROM pg_roles WHERE rolname = '$user'")" != "1" ]; then
        "${psql[@]}" -c "CREATE ROLE $user LOGIN CREATEDB PASSWORD '$password'" >/dev/null || return 1
    fi
    if [ "$("${psql[@]}" -c "SELECT 1 FROM pg_database WHERE datname = '$db'")" != "1" ]; then
        "${psql[@]}" -c "CREATE DATABASE $db OWNER $user" >/dev/null || return 1
    fi

    export BRIDGE_TEST_POSTGRES_URL="postgresql+asyncpg://$user:$password@127.0.0.1:$port/$db"
    echo "BRIDGE_TEST_POSTGRES_URL=$BRIDGE_TEST_POSTGRES_URL"
}

# Called in an && list so a caller's `set -e` cannot cut the function short before it reports.
_bridge_pg_main && _bridge_pg_rc=0 || _bridge_pg_rc=$?
unset -f _bridge_pg_main
if [ "$_bridge_pg_rc" -ne 0 ]; then
    unset _bridge_pg_rc
    # `return` works when sourced; `exit` only when run as a script.
    return 1 2>/dev/null || exit 1
fi
unset _bridge_pg_rc
