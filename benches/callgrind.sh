#!/usr/bin/env bash
# Instructions per transaction of the pgrelay release binary, counted by
# valgrind's callgrind: repeatable whatever else the machine is doing, so
# they compare across commits (BENCHMARKS.md, "Optimisations, measured").
#
#   benches/callgrind.sh [simple|extended|prepared] [transactions] [clients] [pgrelay|pgbouncer]
#
# Starts a throw-away PostgreSQL on 127.0.0.1 (as the postgres user when run
# as root), runs the pooler under callgrind in front of it (transaction
# pooling, pool size 50; pgrelay with `idle_poll_time: 0`), warms up, zeroes
# the counters, runs `pgbench -S` for N transactions over `clients`
# connections (default 1; with more, their logins fall inside the counted
# window), and prints the total divided by N.
# `pgbouncer` measures PgBouncer set up alike, for scale (as the postgres user
# when run as root: it refuses to run as root). Everything it starts is
# stopped on exit. With CALLGRIND_KEEP=<file>, the counted dump is copied
# there for `callgrind_annotate`. CALLGRIND_ARGS adds valgrind options (e.g.
# `--cache-sim=yes`); PGRELAY_BIN measures that binary instead of building
# the release one (an A/B of two builds). CALLGRIND_AUTH=md5 makes clients log
# in to the pooler with a password (default trust); CALLGRIND_PGBENCH adds
# pgbench options, e.g. `-C` for a login per transaction (connection set-up).
set -euo pipefail

mode=${1:-extended}
transactions=${2:-2000}
clients=${3:-1}
pooler=${4:-pgrelay}
case "$pooler" in
pgrelay) ;;
pgbouncer)
    pgbouncer_bin=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)
    [ -x "$pgbouncer_bin" ] || { echo "callgrind.sh: pgbouncer is missing" >&2; exit 1; }
    ;;
*) echo "callgrind.sh: the pooler is pgrelay or pgbouncer, not $pooler" >&2; exit 2 ;;
esac
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=benches/pooler_setup.sh
. "$root/benches/pooler_setup.sh"
for tool in valgrind callgrind_control callgrind_annotate pgbench pg_isready; do
    command -v "$tool" >/dev/null || { echo "callgrind.sh: $tool is missing" >&2; exit 1; }
done

work=$(mktemp -d /tmp/pgrelay-callgrind-XXXXXX)
chmod 755 "$work"
# callgrind_control must run as the user valgrind runs as.
as_pooler() { if [ "$pooler" = pgbouncer ]; then as_pg "$*"; else bash -c "$*"; fi; }
cleanup() {
    if [ -n "${relay_pid:-}" ]; then
        kill "$relay_pid" 2>/dev/null || true
        # valgrind writes its last dump on exit (not always our child: su).
        for _ in $(seq 1 100); do kill -0 "$relay_pid" 2>/dev/null || break; sleep 0.1; done
    fi
    stop_postgres "$work"
    rm -rf "$work"
}
trap cleanup EXIT

pg_port=$(free_port)
relay_port=$(free_port)
start_postgres "$work" "$pg_port"
# Both poolers' configurations listen on relay_port: only one runs.
write_pooler_configs "$work" "$pg_port" "$relay_port" "$relay_port" "${CALLGRIND_AUTH:-trust}"
# Polling before sleeping would count its idle turns as work (and callgrind's
# slowdown changes how long a turn is); counts stay comparable across commits
# without it.
echo "idle_poll_time: 0" >>"$work/pgrelay.yaml"

grind="valgrind --tool=callgrind ${CALLGRIND_ARGS:-} --callgrind-out-file=$work/cg.out"
if [ "$pooler" = pgbouncer ]; then
    as_pg "$grind $pgbouncer_bin $work/pgbouncer.ini" >"$work/relay.log" 2>&1 &
else
    use_pgrelay_build
    $grind "$PGRELAY_BIN" run -c "$work/pgrelay.yaml" >"$work/relay.log" 2>&1 &
fi
wait_ready "$relay_port"
# The valgrind process itself, not su's.
relay_pid=$(pgrep -f -- "--callgrind-out-file=$work/cg.out" |
    while read -r pid; do grep -qs callgrind "/proc/$pid/comm" && echo "$pid"; done | head -1)
[ -n "$relay_pid" ] || { echo "callgrind.sh: $pooler did not start" >&2; cat "$work/relay.log" >&2; exit 1; }

# pgbench's -t counts per client.
load() {
    pgbench -h 127.0.0.1 -p "$relay_port" -U postgres -n -S -M "$mode" -c "$clients" -j 1 ${CALLGRIND_PGBENCH:-} \
        -t "$(($1 / clients > 0 ? $1 / clients : 1))" postgres
}
load 50 >/dev/null 2>&1 # pools warm, statements cached
as_pooler "callgrind_control --zero $relay_pid" >/dev/null
load "$transactions" | grep -E '^tps|failed' >&2
as_pooler "callgrind_control --dump $relay_pid" >/dev/null
sleep 1
total=$(callgrind_annotate "$work/cg.out.1" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
echo "$pooler, pgbench -S -M $mode -c $clients, $transactions transactions: $total instructions, $((total / transactions)) per transaction"
if [ -n "${CALLGRIND_KEEP:-}" ]; then cp "$work/cg.out.1" "$CALLGRIND_KEEP"; fi
