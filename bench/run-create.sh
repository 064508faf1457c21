#!/usr/bin/env bash
# Deployment-creation benchmark: Slipway's POST .../deployments against pgbench inserting an
# equivalent row, on the same PostgreSQL server, in one run. See bench/README.md.
#
#   bench/run-create.sh
#
# Steps: a PostgreSQL of its own (scripts/lib/pg.sh, 127.0.0.1:55433) with a fresh database
# `slipway_bench`; `slipway migrate`; `slipway serve` in the background; the load driver's
# --setup; then
#   (a) pgbench, bench/pgbench-insert.sql, BENCH_CONCURRENCY clients, BENCH_DURATION seconds;
#   (b) slipway-load, closed loop, same concurrency and duration   -> the peak creates/s;
#   (c) slipway-load, open loop at half that peak                  -> latency at half peak;
#   (d) pgbench, bench/pgbench-create-tx.sql: the statements of Slipway's create transaction
#       without the HTTP server, which is stopped first (a diagnostic: how much of the gap is
#       the transaction itself);
# and a summary table. The server and the benchmark's PostgreSQL (its own instance, on
# 127.0.0.1:${BENCH_PG_PORT:-55433}) are stopped on exit (BENCH_KEEP_PG=1 keeps PostgreSQL up).
#
# Environment (all optional):
#   BENCH_CONCURRENCY  clients / workers (16)       BENCH_DURATION  seconds per phase (20)
#   BENCH_PORT         port of the server (18181)   BENCH_OUT       directory for raw output
#   BENCH_THREADS      pgbench -j (nproc, at most the client count)
#   BENCH_PG_PORT      port of the benchmark's PostgreSQL (55433)
#   BENCH_PG_CACHE     where it lives (/var/cache/slipway/bench; the cluster is in test-pg/)
#   BENCH_SKIP_BUILD=1 use the binaries as they are (else `cargo build --release` first)
#   SLIPWAY_BIN, SLIPWAY_LOAD_BIN   binaries to use (default: $CARGO_TARGET_DIR/release/...)
#   SLIPWAY_SERVE_ARGS              more arguments for `slipway serve`, e.g. --no-workers
#   BENCH_DURABLE      1 (the default): the benchmark's PostgreSQL with durable commits (fsync,
#                      synchronous_commit and full_page_writes on, PostgreSQL's defaults, as
#                      Slipway's database runs in production); 0: the test configuration (all
#                      three off), a CPU-only comparison. Both sides of the comparison pay for it
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib/pg.sh
source scripts/lib/pg.sh

say() { printf '\n==> %s\n' "$*" >&2; }
die() {
  printf 'run-create: %s\n' "$*" >&2
  exit 1
}

concurrency=${BENCH_CONCURRENCY:-16}
duration=${BENCH_DURATION:-20}
port=${BENCH_PORT:-18181}
[[ $concurrency =~ ^[1-9][0-9]*$ ]] || die "BENCH_CONCURRENCY must be a positive integer"
[[ $duration =~ ^[1-9][0-9]*$ ]] || die "BENCH_DURATION must be a positive number of seconds"
[[ $port =~ ^[1-9][0-9]*$ ]] || die "BENCH_PORT must be a port number"
threads=${BENCH_THREADS:-$(nproc)}
if ((threads > concurrency)); then threads=$concurrency; fi
out=${BENCH_OUT:-$(mktemp -d /tmp/slipway-bench.XXXXXX)}
mkdir -p "$out"
out=$(cd "$out" && pwd)

command -v jq >/dev/null 2>&1 || die "jq is needed (apt-get install jq)"
command -v curl >/dev/null 2>&1 || die "curl is needed (apt-get install curl)"

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${SLIPWAY_CACHE:-/var/cache/slipway}/target}
slipway=${SLIPWAY_BIN:-$CARGO_TARGET_DIR/release/slipway}
load=${SLIPWAY_LOAD_BIN:-$CARGO_TARGET_DIR/release/slipway-load}
if [[ ${BENCH_SKIP_BUILD:-} != 1 ]]; then
  say "cargo build --release -p slipway -p slipway-load"
  ensure_cargo_on_path
  cargo build --release -p slipway -p slipway-load
fi
[[ -x $slipway ]] || die "$slipway is missing: build it with cargo build --release -p slipway"
[[ -x $load ]] || die "$load is missing: build it with cargo build --release -p slipway-load"
# Authentication is on in `slipway serve`: a throwaway secret for this run, the bench user as
# bootstrap admin, and its token for the drivers (they read SLIPWAY_TOKEN).
export SLIPWAY_JWT_SECRET=${SLIPWAY_JWT_SECRET:-$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')}
export SLIPWAY_BOOTSTRAP_ADMINS=bench
# One principal sends thousands of requests a second here: no per-principal rate limit.
export SLIPWAY_RATE_LIMIT_PER_SECOND=0
SLIPWAY_TOKEN=$("$slipway" token issue --sub bench --ttl 1d) || die "slipway token issue failed"
export SLIPWAY_TOKEN

# A PostgreSQL of its own (scripts/lib/pg.sh's test instance, on another port and in another
# directory): the shared test instance carries other databases, whose backends, locks, WAL
# and LISTEN/NOTIFY queue would weigh on the numbers.
durable=${BENCH_DURABLE:-1}
[[ $durable =~ ^[01]$ ]] || die "BENCH_DURABLE must be 0 or 1"
pg_env=(SLIPWAY_TEST_PG_PORT="${BENCH_PG_PORT:-55433}"
  SLIPWAY_CACHE="${BENCH_PG_CACHE:-${SLIPWAY_CACHE:-/var/cache/slipway}/bench}"
  SLIPWAY_TEST_PG_DURABLE="$durable")
say "PostgreSQL (${pg_env[*]})"
ensure_postgres_installed
export "${pg_env[@]}"
start_test_postgres
bin=$(pg_bin_dir)
pgbench=$bin/pgbench
[[ -x $pgbench ]] || pgbench=$(command -v pgbench) ||
  die "pgbench is missing: apt-get install postgresql-contrib (or postgresql-client)"
admin_url=$DATABASE_URL
bench_url=${admin_url%/*}/slipway_bench
psql_admin() { "$bin/psql" -X -q -v ON_ERROR_STOP=1 "$admin_url" "$@"; }
psql_bench() { "$bin/psql" -X -q -v ON_ERROR_STOP=1 "$bench_url" "$@"; }
psql_admin -c 'DROP DATABASE IF EXISTS slipway_bench WITH (FORCE)'
psql_admin -c 'CREATE DATABASE slipway_bench'
pg_version=$(psql_bench -At -c 'SHOW server_version')
pg_commits=$(psql_bench -At -c "SELECT 'fsync=' || current_setting('fsync') ||
  ' synchronous_commit=' || current_setting('synchronous_commit') ||
  ' full_page_writes=' || current_setting('full_page_writes')")

server_pid=""
server_stopped=0
sampler_pid=""
cleanup() {
  if [[ -n $sampler_pid ]]; then kill "$sampler_pid" 2>/dev/null || true; fi
  if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  if [[ ${BENCH_KEEP_PG:-} != 1 ]]; then stop_test_postgres || true; fi
}
trap cleanup EXIT

# CPU accounting of a phase: the machine's busy time (/proc/stat), the server's own CPU time
# (/proc/<pid>/stat), and the client's (bash's `time`). The rest of the busy time is mostly
# PostgreSQL.
tick=$(getconf CLK_TCK)
machine_cpu() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat; }
server_cpu() {
  if [[ $server_stopped == 1 ]]; then
    echo 0
    return
  fi
  kill -0 "$server_pid" 2>/dev/null || die "the server exited; its log: $out/server.log"
  awk '{ print $14 + $15 }' "/proc/$server_pid/stat"
}
# Other work on the machine distorts every number here, so a sampler writes, once a second,
# how many cores were used by processes that are not part of this benchmark ("foreign": not
# the server, the clients, this script's tools, the kernel's threads, nor the PostgreSQL
# processes of slipway_bench and the server's own background processes; other databases'
# backends count as foreign). Processes shorter than a second can be missed. Run it in the
# background only (it execs awk, so that $! is the sampler itself).
foreign_sampler() {
  exec awk -v server="$server_pid" -v hz="$tick" '
    function now(  t) { "date +%s.%N" | getline t; close("date +%s.%N"); return t }
    function own(p, comm, ppid,  f, cmd) {
      if (p == server || ppid == 2 || p == 2) return 1
      if (comm ~ /^(slipway-load|pgbench|psql|awk|mawk|gawk|sleep|date|ls|bash|jq|sed|sort|cat|tee|curl|time)$/) return 1
      if (comm != "postgres") return 0
      f = "/proc/" p "/cmdline"
      cmd = ""
      getline cmd < f
      close(f)
      if (cmd ~ /slipway_bench/) return 1
      return cmd !~ /\(|\[local\]/   # the postmaster and its background processes
    }
    BEGIN {
      first = 1
      while (1) {
        n = 0
        while (("ls /proc" | getline d) > 0) if (d ~ /^[0-9]+$/) pids[++n] = d
        close("ls /proc")
        t = now(); used = 0; pgused = 0
        for (k in cur) delete cur[k]
        for (i = 1; i <= n; i++) {
          p = pids[i]; f = "/proc/" p "/stat"
          if ((getline line < f) <= 0) { close(f); continue }
          close(f)
          comm = line; sub(/^[^(]*\(/, "", comm); sub(/\).*$/, "", comm)
          rest = line; sub(/^.*\) /, "", rest)
          split(rest, v, " ")
          pg = comm == "postgres" && p != server
          if (own(p, comm, v[2]) && !pg) continue
          cur[p] = v[12] + v[13]
          if (first) continue
          d = (p in prev) ? cur[p] - prev[p] : cur[p]
          if (!own(p, comm, v[2])) used += d
          else pgused += d
        }
        if (!first && t > t0) printf "%.3f %.3f %.3f\n", t, used / hz / (t - t0), pgused / hz / (t - t0)
        fflush()
        for (k in prev) delete prev[k]
        for (k in cur) prev[k] = cur[k]
        t0 = t; first = 0
        system("sleep 1")
      }
    }'
}
# foreign_cores T0 T1: the average of the sampler's readings between two instants.
# Prints "foreign postgres": foreign cores, and cores used by this benchmark's PostgreSQL.
foreign_cores() {
  awk -v a="$1" -v b="$2" '$1 > a && $1 <= b + 1 { f += $2; p += $3; n++ }
    END { if (n) printf "%.2f %.2f\n", f / n, p / n; else print "? ?" }' "$out/foreign.log"
}

# run_phase NAME COMMAND...: runs COMMAND with its output in $out/NAME.out and writes
# "machine server client foreign postgres" (cores used on average over the phase) to
# $out/NAME.cpu.
run_phase() {
  local name=$1 busy0 idle0 busy1 idle1 srv0 srv1 wall0 wall1
  shift
  read -r busy0 idle0 < <(machine_cpu)
  srv0=$(server_cpu)
  wall0=$(date +%s.%N)
  if ! { TIMEFORMAT='client-cpu %U %S' && time "$@" >"$out/$name.out"; } 2>"$out/$name.err"; then
    cat "$out/$name.out" "$out/$name.err" >&2
    die "$name failed"
  fi
  wall1=$(date +%s.%N)
  srv1=$(server_cpu)
  read -r busy1 idle1 < <(machine_cpu)
  awk -v b0="$busy0" -v b1="$busy1" -v i0="$idle0" -v i1="$idle1" -v s0="$srv0" -v s1="$srv1" \
    -v w0="$wall0" -v w1="$wall1" -v hz="$tick" -v cores="$(nproc)" \
    -v client="$(sed -n 's/^client-cpu //p' "$out/$name.err" | tail -n 1)" '
    BEGIN {
      split(client, c, " "); wall = w1 - w0
      busy = cores * (b1 - b0) / ((b1 - b0) + (i1 - i0))
      printf "%.2f %.2f %.2f\n", busy, (s1 - s0) / hz / wall, (c[1] + c[2]) / wall
    }' | tr -d '\n' >"$out/$name.cpu"
  printf ' %s\n' "$(foreign_cores "$wall0" "$wall1")" >>"$out/$name.cpu"
}

say "slipway migrate; slipway serve --listen 127.0.0.1:$port ${SLIPWAY_SERVE_ARGS:-}"
DATABASE_URL=$bench_url SLIPWAY_LOG_LEVEL=warn "$slipway" migrate
read -r -a serve_args <<<"${SLIPWAY_SERVE_ARGS:-}"
DATABASE_URL=$bench_url SLIPWAY_LOG_LEVEL=warn \
  "$slipway" serve --listen "127.0.0.1:$port" "${serve_args[@]}" >"$out/server.log" 2>&1 &
server_pid=$!
base=http://127.0.0.1:$port
for _ in $(seq 1 100); do
  if curl -fsS -o /dev/null "$base/readyz" 2>/dev/null; then break; fi
  kill -0 "$server_pid" 2>/dev/null || die "the server exited; its log: $out/server.log"
  sleep 0.1
done
curl -fsS -o /dev/null "$base/readyz" || die "the server is not ready; its log: $out/server.log"
"$load" --url "$base" --app bench --env load --setup --requests 0
foreign_sampler >"$out/foreign.log" &
sampler_pid=$!

# pgbench_phase NAME SCRIPT [PGBENCH ARGS...]: one pgbench run with a per-transaction log;
# sets pg_tps and pg_lat ("p50 p99 max" in ms).
pgbench_phase() {
  local name=$1 script=$2
  shift 2
  psql_bench -c 'CHECKPOINT'
  (
    cd "$out"
    run_phase "$name" "$pgbench" -n -M prepared -c "$concurrency" -j "$threads" \
      -T "$duration" -f "$root/$script" --log --log-prefix="$name" "$@" "$bench_url"
  )
  cat "$out/$name.out"
  pg_tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' "$out/$name.out" | head -n 1)
  [[ -n $pg_tps ]] || die "no tps in pgbench's output ($out/$name.out)"
  # Per-transaction log lines: client transaction latency_us script epoch epoch_us.
  pg_lat=$(cat "$out/$name".[0-9]* | awk '{ print $3 }' | sort -n |
    awk '{ v[NR] = $1 } END {
      r50 = int(NR * 0.50 + 0.999999); r99 = int(NR * 0.99 + 0.999999)
      printf "%.2f %.2f %.2f\n", v[r50] / 1000, v[r99] / 1000, v[NR] / 1000 }')
}
root=$PWD

say "(a) pgbench, bench/pgbench-insert.sql: $concurrency clients, $threads threads, ${duration}s"
psql_bench -f bench/pgbench-setup.sql
pgbench_phase pgbench bench/pgbench-insert.sql
insert_tps=$pg_tps
read -r insert_p50 insert_p99 insert_max <<<"$pg_lat"

say "(b) slipway-load: closed loop, $concurrency workers, ${duration}s"
psql_bench -c 'CHECKPOINT'
run_phase closed "$load" --url "$base" --app bench --env load --concurrency "$concurrency" \
  --duration "${duration}s" --json
jq . "$out/closed.out"
peak=$(jq -r '.rate_per_s' "$out/closed.out")
half=$(awk -v p="$peak" 'BEGIN { printf "%.1f", p / 2 }')

say "(c) slipway-load: open loop at $half/s (half of $peak), $concurrency workers, ${duration}s"
psql_bench -c 'CHECKPOINT'
run_phase half "$load" --url "$base" --app bench --env load --concurrency "$concurrency" \
  --duration "${duration}s" --rate "$half" --json
jq . "$out/half.out"

say "(d) pgbench, bench/pgbench-create-tx.sql (Slipway's create statement without HTTP)"
# The server goes first: its engine would otherwise take up the rows pgbench inserts.
kill -TERM "$server_pid"
wait "$server_pid" || true
server_stopped=1
read -r env_id cluster_id env_rev < <(psql_bench -At -F ' ' -c "SELECT e.id, e.cluster_id,
  e.revision FROM environments e JOIN apps a ON a.id = e.app_id
  WHERE a.name = 'bench' AND e.name = 'load'")
pgbench_phase createtx bench/pgbench-create-tx.sql -D "env_id=$env_id" -D "cluster_id=$cluster_id" \
  -D "env_rev=$env_rev"
createtx_tps=$pg_tps
read -r createtx_p50 createtx_p99 createtx_max <<<"$pg_lat"

j() { jq -r "$1 // \"-\"" "$2"; }
ratio=$(awk -v a="$peak" -v b="$insert_tps" 'BEGIN { printf "%.1f", 100 * a / b }')
ratio_tx=$(awk -v a="$peak" -v b="$createtx_tps" 'BEGIN { printf "%.1f", 100 * a / b }')
ratio_shape=$(awk -v a="$createtx_tps" -v b="$insert_tps" 'BEGIN { printf "%.1f", 100 * a / b }')
half_p99=$(j '.latency.p99_ms' "$out/half.out")
verdict_rate=$(awk -v r="$ratio" 'BEGIN { print (r >= 50 ? "met" : "MISSED") }')
verdict_p99=$(awk -v p="$half_p99" 'BEGIN { print (p != "-" && p + 0 < 25 ? "met" : "MISSED") }')
errors=$(($(jq -r '.errors' "$out/closed.out") + $(jq -r '.errors' "$out/half.out")))

say "summary"
{
  printf 'PostgreSQL %s, %s clients/workers, %ss per phase, %s CPUs; raw output in %s\n' \
    "$pg_version" "$concurrency" "$duration" "$(nproc)" "$out"
  printf 'commits: %s\n' "$pg_commits"
  printf 'slipway serve %s(%s)\n\n' "${SLIPWAY_SERVE_ARGS:+$SLIPWAY_SERVE_ARGS }" "$("$slipway" --version)"
  printf '%-40s %12s %10s %10s %10s\n' "run" "rate/s" "p50 ms" "p99 ms" "max ms"
  printf '%-40s %12.1f %10s %10s %10s\n' "(a) pgbench single-row INSERT tx" "$insert_tps" \
    "$insert_p50" "$insert_p99" "$insert_max"
  printf '%-40s %12.1f %10s %10s %10s\n' "(b) slipway creates, closed loop" "$peak" \
    "$(j '.latency.p50_ms' "$out/closed.out")" "$(j '.latency.p99_ms' "$out/closed.out")" \
    "$(j '.latency.max_ms' "$out/closed.out")"
  printf '%-40s %12.1f %10s %10s %10s\n' "(c) slipway creates, open loop $half/s" \
    "$(j '.rate_per_s' "$out/half.out")" "$(j '.latency.p50_ms' "$out/half.out")" \
    "$half_p99" "$(j '.latency.max_ms' "$out/half.out")"
  printf '%-40s %12.1f %10s %10s %10s\n' "(d) pgbench Slipway's create tx" "$createtx_tps" \
    "$createtx_p50" "$createtx_p99" "$createtx_max"
  printf '\nslipway / pgbench INSERT (b/a): %s%%  (target >= 50%%: %s)\n' "$ratio" "$verdict_rate"
  printf 'p99 at half of peak: %s ms  (target < 25 ms: %s)\n' "$half_p99" "$verdict_p99"
  printf 'non-201 answers: %s\n' "$errors"
  printf 'diagnostic: create tx / INSERT tx (d/a): %s%%; slipway / create tx (b/d): %s%%\n' \
    "$ratio_shape" "$ratio_tx"
  printf '\nCPU, in cores busy on average (of %s):\n' "$(nproc)"
  printf '  %-9s %8s %8s %8s %8s %8s %8s\n' phase machine server client postgres rest foreign
  for phase in pgbench closed half createtx; do
    read -r busy srv client foreign pg <"$out/$phase.cpu"
    rest=$(awk -v m="$busy" -v s="$srv" -v c="$client" -v p="$pg" \
      'BEGIN { printf "%.2f", m - s - c - p }')
    printf '  %-9s %8s %8s %8s %8s %8s %8s\n' "$phase" "$busy" "$srv" "$client" "$pg" \
      "$rest" "$foreign"
  done
  printf '  (server: slipway serve; client: pgbench or slipway-load; postgres: its processes\n'
  printf '   for slipway_bench; rest: the kernel (loopback networking) and anything unseen;\n'
  printf '   foreign: other work seen on the machine: a run is unrepresentative unless it is\n'
  printf '   near 0, and short-lived processes escape it, so a large rest is suspect too)\n' 
} | tee "$out/summary.txt"
