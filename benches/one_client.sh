#!/usr/bin/env bash
# One client's added latency, sampled finely: how much of the gap between
# pgrelay and PgBouncer at `pgbench -c 1` is the pooler and how much is where
# the kernel runs it (BENCHMARKS.md, "One client: where the kernel wakes the
# pooler").
#
#   benches/one_client.sh [simple|extended] [rotations] [seconds]
#
# Starts a throw-away PostgreSQL on 127.0.0.1 (as the postgres user when run
# as root), pgrelay with its defaults, pgrelay with `idle_poll_time: 0` (its
# threads sleep as soon as they run out of work, as PgBouncer's does) and
# PgBouncer in front of it (transaction pooling, pool size 50, md5 client
# login as in `cargo bench --bench proxy`), then runs `pgbench -S -c 1` for
# `seconds` against direct PostgreSQL and each pooler in turn, `rotations`
# times, each rotation starting at the next target so drift spreads evenly.
# Per run it prints the mean latency (run time ÷ transactions), the latency
# added over that rotation's direct run and, when perf can count them, the
# pooler's CPU migrations per transaction (a wake-up on the other core).
# Ends with each target's median. Everything it starts is stopped on exit.
set -euo pipefail

mode=${1:-simple}
rotations=${2:-8}
seconds=${3:-2}
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=benches/pooler_setup.sh
. "$root/benches/pooler_setup.sh"
pgbouncer_bin=$(command -v pgbouncer || echo /usr/sbin/pgbouncer)
for tool in pgbench pg_isready "$pgbouncer_bin"; do
    command -v "$tool" >/dev/null || { echo "one_client.sh: $tool is missing" >&2; exit 1; }
done
count_migrations=yes
perf stat -e cpu-migrations true >/dev/null 2>&1 || count_migrations=no

work=$(mktemp -d /tmp/pgrelay-one-client-XXXXXX)
chmod 755 "$work"
pooler_pids=""
trap stop_everything EXIT

pg_port=$(free_port)
relay_port=$(free_port)
no_poll_port=$(free_port)
bouncer_port=$(free_port)
start_postgres "$work" "$pg_port"
write_pooler_configs "$work" "$pg_port" "$relay_port" "$bouncer_port" md5
sed "s/^listen_port: .*/listen_port: $no_poll_port/" "$work/pgrelay.yaml" >"$work/no-poll.yaml"
echo "idle_poll_time: 0" >>"$work/no-poll.yaml"

use_pgrelay_build
"$PGRELAY_BIN" run -c "$work/pgrelay.yaml" >"$work/relay.log" 2>&1 &
relay_pid=$!
pooler_pids+=" $relay_pid"
"$PGRELAY_BIN" run -c "$work/no-poll.yaml" >"$work/no-poll.log" 2>&1 &
no_poll_pid=$!
pooler_pids+=" $no_poll_pid"
as_pg "$pgbouncer_bin -d $work/pgbouncer.ini" >/dev/null
wait_ready "$relay_port" "$no_poll_port" "$bouncer_port"
bouncer_pid=$(cat "$work/pgbouncer.pid")
pooler_pids+=" $bouncer_pid"

names=(direct pgrelay "pgrelay-no-poll" PgBouncer)
ports=("$pg_port" "$relay_port" "$no_poll_port" "$bouncer_port")
pids=("" "$relay_pid" "$no_poll_pid" "$bouncer_pid")
transactions() { # port seconds
    pgbench -h 127.0.0.1 -p "$1" -U postgres -n -S -M "$mode" -c 1 -T "$2" postgres 2>/dev/null |
        awk '/actually processed/ {split($NF, a, "/"); print a[1]}'
}
for port in "${ports[@]}"; do transactions "$port" 1 >/dev/null; done # pools warm

echo "pgbench -S -M $mode -c 1, $rotations rotations of ${seconds} s per target"
for rotation in $(seq 1 "$rotations"); do
    for step in 0 1 2 3; do
        i=$(((step + rotation) % 4))
        migrations=-
        if [ "$count_migrations" = yes ] && [ -n "${pids[$i]}" ]; then
            perf stat -x, -e cpu-migrations -p "${pids[$i]}" -o "$work/perf.out" &
            perf_pid=$!
            sleep 0.2
        fi
        tx=$(transactions "${ports[$i]}" "$seconds")
        if [ "$count_migrations" = yes ] && [ -n "${pids[$i]}" ]; then
            kill -INT "$perf_pid"
            wait "$perf_pid" || true
            migrations=$(awk -F, '$1 ~ /^[0-9]+$/ {print $1}' "$work/perf.out")
        fi
        echo "$rotation ${names[$i]} $tx $migrations"
    done
done >"$work/runs"

awk -v s="$seconds" '
    function median(list, n,   i, j, tmp) {
        for (i = 2; i <= n; i++) for (j = i; j > 1 && list[j - 1] > list[j]; j--) {
            tmp = list[j]; list[j] = list[j - 1]; list[j - 1] = tmp
        }
        return n % 2 ? list[(n + 1) / 2] : (list[n / 2] + list[n / 2 + 1]) / 2
    }
    { r = $1; t = $2; lat[r, t] = s * 1e6 / $3; mig[r, t] = $4; tx[r, t] = $3
      if (!(t in seen)) { seen[t] = 1; order[++targets] = t }
      if (r > rotations) rotations = r }
    END {
        printf "%-9s %-17s %9s %9s %14s\n", "rotation", "target", "µs/tx", "added µs", "migrations/tx"
        for (r = 1; r <= rotations; r++) for (k = 1; k <= targets; k++) {
            t = order[k]; added = lat[r, t] - lat[r, "direct"]
            m = mig[r, t] == "-" ? "-" : sprintf("%.2f", mig[r, t] / tx[r, t])
            printf "%-9d %-17s %9.1f %9.1f %14s\n", r, t, lat[r, t], added, m
            if (t != "direct") { n[t]++; adds[t, n[t]] = added }
        }
        print ""
        for (k = 1; k <= targets; k++) {
            t = order[k]; if (t == "direct") continue
            delete list; for (i = 1; i <= n[t]; i++) list[i] = adds[t, i]
            printf "median added latency, %-17s %6.1f µs\n", t, median(list, n[t])
        }
    }' "$work/runs"
