#!/usr/bin/env bash
# What polling before sleeping (`idle_poll_time`) costs in CPU and buys in
# latency at one client sending at a fixed rate (BENCHMARKS.md, "Polling
# before sleeping").
#
#   benches/idle_poll.sh [rates] [seconds]      e.g. benches/idle_poll.sh "100 1000 5000 0" 4
#
# Starts a throw-away PostgreSQL on 127.0.0.1 (as the postgres user when run
# as root) and two pgrelays in front of it (transaction pooling, pool size 50,
# md5 client login): one with its defaults, one with `idle_poll_time: 0`.
# For each rate (transactions per second, 0 for as fast as one client goes)
# it runs `pgbench -S -c 1 -R rate` against each in turn and prints the TPS,
# pgbench's mean latency and the pooler's CPU use over the run (user + system
# time from /proc, as a share of one core). Everything it starts is stopped
# on exit.
set -euo pipefail

rates=${1:-100 1000 5000 0}
seconds=${2:-4}
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=benches/pooler_setup.sh
. "$root/benches/pooler_setup.sh"
for tool in pgbench pg_isready; do
    command -v "$tool" >/dev/null || { echo "idle_poll.sh: $tool is missing" >&2; exit 1; }
done

work=$(mktemp -d /tmp/pgrelay-idle-poll-XXXXXX)
chmod 755 "$work"
pooler_pids=""
trap stop_everything EXIT

pg_port=$(free_port)
relay_port=$(free_port)
no_poll_port=$(free_port)
start_postgres "$work" "$pg_port"
# PgBouncer's configuration is written but not started.
write_pooler_configs "$work" "$pg_port" "$relay_port" "$(free_port)" md5
sed "s/^listen_port: .*/listen_port: $no_poll_port/" "$work/pgrelay.yaml" >"$work/no-poll.yaml"
echo "idle_poll_time: 0" >>"$work/no-poll.yaml"

use_pgrelay_build
"$PGRELAY_BIN" run -c "$work/pgrelay.yaml" >"$work/relay.log" 2>&1 &
relay_pid=$!
pooler_pids+=" $relay_pid"
"$PGRELAY_BIN" run -c "$work/no-poll.yaml" >"$work/no-poll.log" 2>&1 &
no_poll_pid=$!
pooler_pids+=" $no_poll_pid"
wait_ready "$relay_port" "$no_poll_port"

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
printf '%-7s %-16s %9s %11s %10s\n' rate pooler TPS "latency ms" "CPU % core"
for rate in $rates; do
    for target in "default $relay_port $relay_pid" "idle_poll_time=0 $no_poll_port $no_poll_pid"; do
        read -r name port pid <<<"$target"
        limit=""
        [ "$rate" -gt 0 ] && limit="-R $rate"
        before=$(ticks "$pid")
        # shellcheck disable=SC2086
        out=$(pgbench -h 127.0.0.1 -p "$port" -U postgres -n -S -c 1 -T "$seconds" $limit postgres 2>/dev/null)
        after=$(ticks "$pid")
        tps=$(awk '/^tps/ {print $3; exit}' <<<"$out")
        latency=$(awk '/latency average/ {print $4; exit}' <<<"$out")
        cpu=$(awk -v d=$((after - before)) -v hz="$hz" -v s="$seconds" 'BEGIN {printf "%.0f", 100 * d / hz / s}')
        printf '%-7s %-16s %9.0f %11s %10s\n' "$rate" "$name" "$tps" "$latency" "$cpu"
    done
done
