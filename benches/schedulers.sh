#!/usr/bin/env bash
# pgrelay's two schedulers against PgBouncer at many clients, interleaved
# (BENCHMARKS.md, "Thread per core").
#
#   benches/schedulers.sh [clients] [simple|extended] [rounds] [seconds]
#
# Starts a throw-away PostgreSQL on 127.0.0.1 (as the postgres user when run
# as root), pgrelay with `scheduler: per_core` (the default), pgrelay with
# `scheduler: work_stealing` and PgBouncer in front of it (transaction
# pooling, pool size 50, md5 client login as in `cargo bench --bench proxy`),
# then runs `pgbench -S -c clients -j 2` for `seconds` against each pooler in
# turn, `rounds` times, each round starting at the next pooler so drift
# spreads evenly. Prints each run's TPS, then each pooler's mean and its
# ratio to PgBouncer. Everything it starts is stopped on exit.
set -euo pipefail

clients=${1:-50}
mode=${2:-simple}
rounds=${3:-3}
seconds=${4:-6}
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=benches/pooler_setup.sh
. "$root/benches/pooler_setup.sh"
pgbouncer_bin=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)
for tool in pgbench pg_isready "$pgbouncer_bin"; do
    command -v "$tool" >/dev/null || { echo "schedulers.sh: $tool is missing" >&2; exit 1; }
done

work=$(mktemp -d /tmp/pgrelay-schedulers-XXXXXX)
chmod 755 "$work"
pooler_pids=""
trap stop_everything EXIT

pg_port=$(free_port)
relay_port=$(free_port)
stealing_port=$(free_port)
bouncer_port=$(free_port)
start_postgres "$work" "$pg_port"
write_pooler_configs "$work" "$pg_port" "$relay_port" "$bouncer_port" md5
sed "s/^listen_port: .*/listen_port: $stealing_port/" "$work/pgrelay.yaml" >"$work/stealing.yaml"
echo "scheduler: work_stealing" >>"$work/stealing.yaml"

use_pgrelay_build
"$PGRELAY_BIN" run -c "$work/pgrelay.yaml" >"$work/relay.log" 2>&1 &
pooler_pids+=" $!"
"$PGRELAY_BIN" run -c "$work/stealing.yaml" >"$work/stealing.log" 2>&1 &
pooler_pids+=" $!"
as_pg "$pgbouncer_bin -d $work/pgbouncer.ini" >/dev/null
wait_ready "$relay_port" "$stealing_port" "$bouncer_port"
pooler_pids+=" $(cat "$work/pgbouncer.pid")"

names=(per_core work_stealing PgBouncer)
ports=("$relay_port" "$stealing_port" "$bouncer_port")
tps() { # port seconds
    pgbench -h 127.0.0.1 -p "$1" -U postgres -n -S -M "$mode" -c "$clients" -j 2 -T "$2" postgres 2>/dev/null |
        awk '/^tps/ {print $3; exit}'
}
for port in "${ports[@]}"; do tps "$port" 2 >/dev/null; done # pools warm

echo "pgbench -S -M $mode -c $clients, $rounds rounds of ${seconds} s per pooler"
for round in $(seq 1 "$rounds"); do
    for step in 0 1 2; do
        i=$(((step + round) % 3))
        printf '%-6s %-14s %10.0f\n' "$round" "${names[$i]}" "$(tps "${ports[$i]}" "$seconds")"
    done
done | tee "$work/runs"
echo
awk '{sum[$2] += $3; n[$2]++}
     END {
         for (name in sum) mean[name] = sum[name] / n[name]
         split("per_core work_stealing PgBouncer", order, " ")
         for (i = 1; i <= 3; i++)
             printf "mean TPS, %-14s %8.0f  (%.2f x PgBouncer)\n", order[i], mean[order[i]], mean[order[i]] / mean["PgBouncer"]
     }' "$work/runs"
