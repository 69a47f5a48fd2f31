#!/usr/bin/env bash
# System calls and CPU time per transaction of pgrelay and PgBouncer, side by
# side: tells whether a gap in pooler CPU comes from the kernel (more reads,
# writes or wake-ups per transaction) or from user-space work (BENCHMARKS.md,
# "Where the remaining pooler CPU goes").
#
#   benches/syscalls.sh [simple|extended] [clients] [seconds]
#
# Starts a throw-away PostgreSQL on 127.0.0.1 (as the postgres user when run
# as root), pgrelay (the release binary, or PGRELAY_BIN) and PgBouncer in
# front of it, both in transaction mode with a pool of 50, warms both up, then
# for two interleaved rounds runs `pgbench -S` against each while `perf stat`
# counts the pooler's system calls by tracepoint. CPU time and context
# switches (a pooler that sleeps in epoll_wait switches voluntarily; one the
# scheduler preempts to run PostgreSQL or pgbench, involuntarily) come from
# /proc/<pid>/stat and status. Everything it starts is stopped on exit. Needs perf with
# tracepoint access (root, or perf_event_paranoid ≤ -1).
set -euo pipefail

mode=${1:-simple}
clients=${2:-50}
seconds=${3:-5}
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=benches/pooler_setup.sh
. "$root/benches/pooler_setup.sh"
pgbouncer_bin=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)
for tool in perf pgbench pg_isready "$pgbouncer_bin"; do
    command -v "$tool" >/dev/null || { echo "syscalls.sh: $tool is missing" >&2; exit 1; }
done
perf stat -e raw_syscalls:sys_enter true >/dev/null 2>&1 ||
    { echo "syscalls.sh: perf cannot read syscall tracepoints here" >&2; exit 1; }

work=$(mktemp -d /tmp/pgrelay-syscalls-XXXXXX)
chmod 755 "$work"
pooler_pids=""
trap stop_everything EXIT

pg_port=$(free_port)
relay_port=$(free_port)
bouncer_port=$(free_port)
start_postgres "$work" "$pg_port"
write_pooler_configs "$work" "$pg_port" "$relay_port" "$bouncer_port" trust

use_pgrelay_build
"$PGRELAY_BIN" run -c "$work/pgrelay.yaml" >"$work/relay.log" 2>&1 &
relay_pid=$!
pooler_pids+=" $relay_pid"
as_pg "$pgbouncer_bin -d $work/pgbouncer.ini" >/dev/null
wait_ready "$relay_port" "$bouncer_port"
bouncer_pid=$(cat "$work/pgbouncer.pid")
pooler_pids+=" $bouncer_pid"

events=raw_syscalls:sys_enter
for call in read recvfrom write sendto writev epoll_wait epoll_ctl futex; do
    events+=",syscalls:sys_enter_$call"
done
pgbench_run() { # port seconds
    pgbench -h 127.0.0.1 -p "$1" -U postgres -n -S -M "$mode" -c "$clients" \
        -j "$((clients > 1 ? 2 : 1))" -T "$2" postgres 2>/dev/null
}
# user and system time (ticks), voluntary and involuntary context switches
cpu() {
    echo "$(awk '{print $14, $15}' "/proc/$1/stat")" \
        "$(awk '/^voluntary_ctxt/ {v = $2} /^nonvoluntary_ctxt/ {n = $2} END {print v, n}' "/proc/$1/status")"
}
measure() { # name pid port
    perf stat -x, -e "$events" -p "$2" -o "$work/perf.out" &
    local perf_pid=$!
    sleep 0.3
    local before tx after
    before=$(cpu "$2")
    tx=$(pgbench_run "$3" "$seconds" | awk '/actually processed/ {split($NF, a, "/"); print a[1]}')
    after=$(cpu "$2")
    kill -INT "$perf_pid"
    wait "$perf_pid" || true
    local hz
    hz=$(getconf CLK_TCK)
    echo "$1: $tx transactions, $(echo "$before $after" | awk -v tx="$tx" -v hz="$hz" \
        '{printf "user %.1f µs/tx, system %.1f µs/tx; switches per tx: %.3f voluntary, %.3f involuntary",
          ($5-$1)*1e6/hz/tx, ($6-$2)*1e6/hz/tx, ($7-$3)/tx, ($8-$4)/tx}')"
    awk -F, -v tx="$tx" '$1 ~ /^[0-9]+$/ && $1 > 0 {
        name = $3; sub(/^(raw_)?syscalls:sys_enter_?/, "", name); if (name == "") name = "all"
        printf "    %-12s %6.2f per transaction\n", name, $1 / tx }' "$work/perf.out"
}
pgbench_run "$relay_port" 2 >/dev/null # pools warm
pgbench_run "$bouncer_port" 2 >/dev/null
echo "pgbench -S -M $mode -c $clients, ${seconds} s per run"
for round in 1 2; do
    if [ "$round" = 1 ]; then
        measure pgrelay "$relay_pid" "$relay_port"
        measure PgBouncer "$bouncer_pid" "$bouncer_port"
    else
        measure PgBouncer "$bouncer_pid" "$bouncer_port"
        measure pgrelay "$relay_pid" "$relay_port"
    fi
done
