# Sourced by callgrind.sh, syscalls.sh and one_client.sh: a throw-away PostgreSQL on
# 127.0.0.1 and pgrelay / PgBouncer configured alike in front of it
# (transaction pooling, pool size 50, no TLS, connection logging off).

pgbin=${PG_BIN:-/usr/lib/postgresql/15/bin}

# PostgreSQL and PgBouncer refuse to run as root.
as_pg() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/bash -c "$*"; else bash -c "$*"; fi; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_postgres <work dir> <port>: a new cluster with pgbench's tables (scale 1).
start_postgres() {
    [ "$(id -u)" = 0 ] && chown postgres "$1"
    as_pg "$pgbin/initdb -D $1/data -A trust -U postgres" >/dev/null
    as_pg "$pgbin/pg_ctl -D $1/data -l $1/pg.log -w start \
        -o '-p $2 -k $1 -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300'" >/dev/null
    pgbench -h 127.0.0.1 -p "$2" -U postgres -i -s 1 -q postgres >/dev/null 2>&1
}

stop_postgres() { as_pg "$pgbin/pg_ctl -D $1/data stop -m immediate" >/dev/null 2>&1 || true; }

# write_pooler_configs <work dir> <postgres port> <pgrelay port> <PgBouncer port> <trust|md5>:
# $work/pgrelay.yaml, $work/pgbouncer.ini and their userlist; with md5 the
# password is exported as PGPASSWORD for pgbench.
write_pooler_configs() {
    local work=$1 pg_port=$2 relay_port=$3 bouncer_port=$4 auth=$5
    case "$auth" in
    trust) echo '"postgres" ""' >"$work/userlist.txt" ;;
    md5)
        echo '"postgres" "bench"' >"$work/userlist.txt"
        export PGPASSWORD=bench
        ;;
    *) echo "the client auth_type is trust or md5, not $auth" >&2; return 2 ;;
    esac
    cat >"$work/pgrelay.yaml" <<EOT
listen_addr: 127.0.0.1
listen_port: $relay_port
metrics_addr: off
auth_type: $auth
auth_file: $work/userlist.txt
server_tls_sslmode: disable
pool_mode: transaction
default_pool_size: 50
max_client_conn: 2000
log_connections: 0
log_disconnections: 0
databases:
  postgres:
    host: 127.0.0.1
    port: $pg_port
EOT
    cat >"$work/pgbouncer.ini" <<EOT
[databases]
postgres = host=127.0.0.1 port=$pg_port dbname=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $bouncer_port
unix_socket_dir =
auth_type = $auth
auth_file = $work/userlist.txt
pool_mode = transaction
default_pool_size = 50
max_client_conn = 2000
log_connections = 0
log_disconnections = 0
logfile = $work/pgbouncer.log
pidfile = $work/pgbouncer.pid
EOT
    [ "$(id -u)" = 0 ] && chown postgres "$work"/*
    return 0
}

# use_pgrelay_build: PGRELAY_BIN as given (an A/B of two builds), else the
# release build of this checkout, built first.
use_pgrelay_build() {
    if [ -z "${PGRELAY_BIN:-}" ]; then
        (cd "$root" && cargo build --release --quiet)
        PGRELAY_BIN=$root/target/release/pgrelay
    fi
}

# wait_ready <port>...: until each pooler on 127.0.0.1 answers (30 s each at most).
wait_ready() {
    local port
    for port in "$@"; do
        for _ in $(seq 1 60); do
            pg_isready -q -h 127.0.0.1 -p "$port" && break
            sleep 0.5
        done
    done
}

# stop_everything: the EXIT trap. Kills the processes in $pooler_pids (each
# pooler's pid, appended as it starts), stops PostgreSQL, removes $work.
stop_everything() {
    local pid
    for pid in ${pooler_pids:-}; do kill "$pid" 2>/dev/null || true; done
    stop_postgres "$work"
    rm -rf "$work"
}
