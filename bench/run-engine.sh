#!/usr/bin/env bash
# Engine benchmarks: throughput beside a pgbench baseline, wake latency, and 10,000 active
# deployments. See bench/engine.md for what is measured and the numbers.
#
#   bench/run-engine.sh
#
# Each part gets a fresh database in the private test PostgreSQL (scripts/lib/pg.sh,
# 127.0.0.1:55432), migrated with `slipway migrate`, seeded through the HTTP API of a
# `slipway serve --no-workers` by `slipway-engine-bench seed`, and driven by
# `slipway serve --no-api` engine processes on the simulated cluster:
#   throughput  BENCH_ENVS environments x 2 deployments (the first deploys the stable version,
#               the second is a 10-step canary); (a) 1 process x 64 workers (the default),
#               2 x 16 and 2 x 64 with chain_steps 1 (diagnostics), (b) 2 processes with the
#               default settings (64 workers, pool 20); steps/s until every
#               deployment is finished (2 processes share one simulated cluster through
#               SLIPWAY_SIM_STATE_DIR, a directory in /dev/shm); then pgbench on
#               scratch copies of the tables in the database of (b): the issue's transition
#               transaction, and (diagnostics) every statement of one engine step, and the
#               same with the events' pg_notify inside the step's write.
#   latency     BENCH_LAT_ENVS canaries parked at indefinite pauses; promote commands spaced
#               out and in bursts; commands.created_at -> the engine's `command` event;
#               once more while BENCH_ENVS new environments load the engine.
#   scale       BENCH_SCALE_ENVS environments x 2 deployments (stable, then a canary with
#               timed pauses), one engine process x 64 workers, pods ready after 5 s;
#               RSS/CPU/progress every second for BENCH_SCALE_SECONDS.
# Processes this script starts are stopped on exit; the test PostgreSQL stays up (as with
# scripts/test; BENCH_STOP_PG=1 stops it too). Raw output (JSON, CSV, logs) goes to BENCH_OUT;
# the main numbers are printed at the end and kept in BENCH_OUT/summary.md.
#
# Environment (all optional):
#   BENCH_ONLY            parts to run, comma-separated (throughput,latency,scale; also
#                         sweep: 1 process x 8/16/32/64 workers, BENCH_SWEEP_WORKERS;
#                         sweep2: 2 processes x 16/32/64 workers each; pool BENCH_SWEEP_POOL,
#                         default workers + 8)
#   BENCH_ENVS            environments for throughput (1000)
#   BENCH_LAT_ENVS        parked canaries for latency (60)
#   BENCH_SCALE_ENVS      environments for scale (10000)
#   BENCH_SCALE_SECONDS   how long scale is watched (300)
#   BENCH_PGBENCH_SECONDS pgbench -T (20)
#   BENCH_QUIET_WAIT      before each part, wait up to this many seconds (180) until the rest
#   BENCH_QUIET_CORES     of the machine uses less than this many cores (0.3), niced work aside
#   BENCH_PORT            API port (18281)        BENCH_OUT  raw output directory
#   BENCH_SKIP_BUILD=1    use the binaries as they are
#   SLIPWAY_BIN, SLIPWAY_ENGINE_BENCH_BIN   binaries (default: $CARGO_TARGET_DIR/release/...)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib/pg.sh
source scripts/lib/pg.sh

say() { printf '\n==> %s\n' "$*" >&2; }
die() {
  printf 'run-engine: %s\n' "$*" >&2
  exit 1
}
int() { [[ $2 =~ ^[1-9][0-9]*$ ]] || die "$1 must be a positive integer"; }

only=${BENCH_ONLY:-throughput,latency,scale}
envs=${BENCH_ENVS:-1000}
lat_envs=${BENCH_LAT_ENVS:-60}
scale_envs=${BENCH_SCALE_ENVS:-10000}
scale_seconds=${BENCH_SCALE_SECONDS:-300}
pgbench_seconds=${BENCH_PGBENCH_SECONDS:-20}
port=${BENCH_PORT:-18281}
quiet_wait=${BENCH_QUIET_WAIT:-180}
quiet_cores=${BENCH_QUIET_CORES:-0.3}
int BENCH_QUIET_WAIT "$quiet_wait"
[[ $quiet_cores =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "BENCH_QUIET_CORES must be a number of cores"
int BENCH_ENVS "$envs"
int BENCH_LAT_ENVS "$lat_envs"
int BENCH_SCALE_ENVS "$scale_envs"
int BENCH_SCALE_SECONDS "$scale_seconds"
int BENCH_PGBENCH_SECONDS "$pgbench_seconds"
int BENCH_PORT "$port"
((scale_seconds <= 1800)) || die "BENCH_SCALE_SECONDS is at most 1800"
out=${BENCH_OUT:-$(mktemp -d /tmp/slipway-engine-bench.XXXXXX)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
api=http://127.0.0.1:$port

command -v jq >/dev/null 2>&1 || die "jq is needed (apt-get install jq)"
command -v curl >/dev/null 2>&1 || die "curl is needed (apt-get install curl)"

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${SLIPWAY_CACHE:-/var/cache/slipway}/target}
slipway=${SLIPWAY_BIN:-$CARGO_TARGET_DIR/release/slipway}
bench=${SLIPWAY_ENGINE_BENCH_BIN:-$CARGO_TARGET_DIR/release/slipway-engine-bench}
if [[ ${BENCH_SKIP_BUILD:-} != 1 ]]; then
  say "cargo build --release -p slipway -p slipway-engine-bench"
  ensure_cargo_on_path
  cargo build --release -p slipway -p slipway-engine-bench
fi
[[ -x $slipway ]] || die "$slipway is missing"
[[ -x $bench ]] || die "$bench is missing"
# Authentication is on in `slipway serve`: a throwaway secret for this run, the bench user as
# bootstrap admin, and its token for the drivers (they read SLIPWAY_TOKEN).
export SLIPWAY_JWT_SECRET=${SLIPWAY_JWT_SECRET:-$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')}
export SLIPWAY_BOOTSTRAP_ADMINS=bench
# One principal sends thousands of requests a second here: no per-principal rate limit.
export SLIPWAY_RATE_LIMIT_PER_SECOND=0
SLIPWAY_TOKEN=$("$slipway" token issue --sub bench --ttl 1d) || die "slipway token issue failed"
export SLIPWAY_TOKEN

ensure_postgres_installed
start_test_postgres
pgbin=$(pg_bin_dir)
admin_url=$DATABASE_URL
base_url=${admin_url%/*}
psql_() { "$pgbin/psql" -X -q -v ON_ERROR_STOP=1 "$@"; }

# --- processes ---------------------------------------------------------------------------
pids=()
stop_pid() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 300; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  local kept=() p
  for p in "${pids[@]}"; do [[ $p == "$pid" ]] || kept+=("$p"); done
  pids=("${kept[@]}")
}
simdirs=()
cleanup() {
  local p
  for p in "${pids[@]}"; do stop_pid "$p"; done
  for p in "${simdirs[@]}"; do rm -rf -- "$p"; done
  if [[ ${BENCH_STOP_PG:-} == 1 ]]; then stop_test_postgres || true; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# fresh_db NAME: drops and creates database NAME, migrates it; sets db_url.
fresh_db() {
  psql_ "$admin_url" -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1"
  db_url=$base_url/$1
  DATABASE_URL=$db_url SLIPWAY_LOG_LEVEL=warn "$slipway" migrate
}

# start_api: `slipway serve --no-workers` on $db_url; sets api_pid.
start_api() {
  DATABASE_URL=$db_url SLIPWAY_LOG_LEVEL=warn \
    "$slipway" serve --no-workers --listen "127.0.0.1:$port" >>"$out/api.log" 2>&1 &
  api_pid=$!
  pids+=("$api_pid")
  local i
  for ((i = 0; i < 100; i++)); do
    curl -sf "$api/readyz" >/dev/null 2>&1 && return 0
    kill -0 "$api_pid" 2>/dev/null || die "the API process exited (see $out/api.log)"
    sleep 0.1
  done
  die "the API did not become ready in 10 s"
}

# start_engine LOG WORKERS READY_AFTER [VAR=VALUE...]: `slipway serve --no-api`; appends to
# engine_pids.
start_engine() {
  local log=$1 workers=$2 ready=$3
  shift 3
  env DATABASE_URL="$db_url" SLIPWAY_LOG_LEVEL=warn SLIPWAY_SIM_READY_AFTER="$ready" "$@" \
    "$slipway" serve --no-api --workers "$workers" >>"$out/$log" 2>&1 &
  local pid=$!
  pids+=("$pid")
  engine_pids+=("$pid")
}

# monitor LABEL ARGS...: samples every engine in engine_pids; JSON to $out/LABEL.json.
monitor() {
  local label=$1
  shift
  local args=()
  local p
  for p in "${engine_pids[@]}"; do args+=(--pid "$p"); done
  DATABASE_URL=$db_url "$bench" monitor --label "$label" --csv "$out/$label.csv" \
    "${args[@]}" "$@" >"$out/$label.json"
}

seed() { "$bench" seed --api "$api" "$@" >>"$out/seed.jsonl"; }

machine() {
  {
    echo "date: $(date -u +%FT%TZ)"
    echo "git: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- crates src migrations 2>/dev/null || echo ' (+ uncommitted changes in crates/src/migrations)')"
    echo "nproc: $(nproc)"
    echo "memory: $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    echo "cpu: $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
    echo "postgres: $(psql_ "$admin_url" -Atc 'SHOW server_version')"
    echo "postgres settings: $(psql_ "$admin_url" -Atc "SELECT string_agg(name || '=' || setting, ' ') FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', 'shared_buffers', 'max_connections')")"
    echo "rustc: $(rustc --version 2>/dev/null || echo unknown)"
  } >"$out/machine.txt"
}
load() { echo "$1: $(uptime | sed 's/.*load average/load average/')" >>"$out/load.txt"; }

# wait_quiet LABEL: waits (at most BENCH_QUIET_WAIT seconds, 3 s at a time) until the rest of
# the machine uses less than BENCH_QUIET_CORES cores (niced work not counted), so a part does not start in the middle
# of someone else's build; proceeds anyway at the limit. Logged in load.txt.
# Jiffies busy (without niced work, which yields to the benchmark) and in total, since boot.
busy_jiffies() { awk '/^cpu / {print $2+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; }
wait_quiet() {
  local waited=0 b1 t1 b2 t2 cores
  while :; do
    read -r b1 t1 < <(busy_jiffies)
    sleep 3
    read -r b2 t2 < <(busy_jiffies)
    cores=$(awk -v b=$((b2 - b1)) -v t=$((t2 - t1)) -v n="$(nproc)" 'BEGIN {printf "%.2f", (t > 0) ? b / t * n : 0}')
    waited=$((waited + 3))
    if awk -v c="$cores" -v q="$quiet_cores" 'BEGIN {exit !(c < q)}' || ((waited >= quiet_wait)); then
      echo "$1: other work used $cores cores before the start (waited ${waited}s)" >>"$out/load.txt"
      return 0
    fi
  done
}


# summary: a markdown table of the run's numbers, from the JSON files in $out.
summary() {
  local f
  {
    echo "| run | steps | whole run steps/s | steps/s with work due | engine CPU % | PG backends CPU % | machine busy cores | finished |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    for f in "$out"/throughput-*.json "$out"/scale.json; do
      [[ -f $f ]] || continue
      jq -r '"| \(.label) | \(.whole_run.steps) | \(.whole_run.steps_per_s) | \(.while_work_due.steps_per_s) | \(.while_work_due.cpu_percent | map(tostring) | join(" + ")) | \(.while_work_due.pg_backends_cpu_percent) | \(.while_work_due.machine_busy_cores) | \(.final.statuses | to_entries | map("\(.value) \(.key)") | join(", ")) |"' "$f"
    done
    echo
    for f in "$out"/pgbench-transition.txt "$out"/pgbench-step.txt "$out"/pgbench-step-notify-inline.txt; do
      [[ -f $f ]] || continue
      echo "$(basename "$f" .txt): $(grep -E '^tps' "$f" | sed 's/ (without.*//')"
    done
    echo
    for f in "$out"/latency-*.json; do
      [[ -f $f ]] || continue
      jq -r '"latency \(.label): spaced \(.spaced.created_to_event_ms | "p50 \(.p50) p90 \(.p90) p99 \(.p99) max \(.max) ms (n=\(.count))")" + (if .bursts.commands > 0 then "; bursts of \(.burst): \(.bursts.created_to_event_ms | "p50 \(.p50) p90 \(.p90) p99 \(.p99) max \(.max) ms (n=\(.count))")" else "" end)' "$f"
    done
    if [[ -f $out/scale.json ]]; then
      jq -r '"scale: peak RSS \(.processes[0].peak_rss_mb) MB (VmHWM \(.processes[0].vm_hwm_mb) MB), max active \(.max_active), window with ≥\(.window_active.threshold) active: \(.window_active.seconds) s, \(.window_active.steps_per_s) steps/s, engine CPU \(.window_active.cpu_percent[0]) %, max connections \(.max_connections)"' "$out/scale.json"
    fi
  } >"$out/summary.md"
  cat "$out/summary.md" >&2
}

canary_steps() { # canary_steps STEP...: a canary strategy JSON over the replica router
  local IFS=,
  printf '{"type":"canary","steps":[%s],"traffic":{"router":"replicas"}}' "$*"
}
ten_steps=$(canary_steps '{"set_weight":10}' '{"set_weight":20}' '{"set_weight":30}' \
  '{"set_weight":40}' '{"set_weight":50}' '{"set_weight":60}' '{"set_weight":70}' \
  '{"set_weight":80}' '{"set_weight":90}' '{"set_weight":100}')
v1=ghcr.io/acme/web:1.0.0
v2=ghcr.io/acme/web:1.1.0

machine
load start
say "raw output in $out"

# --- 1. throughput ---------------------------------------------------------------------------
# background LABEL: 5 s of how busy the machine is before a part starts (other work on it).
background() {
  local engine_pids=()
  monitor "background-$1" --max-seconds 5
  jq -c '{label: .label, machine_busy_cores: .whole_run.machine_busy_cores}' \
    "$out/background-$1.json" >&2
}

throughput_run() { # throughput_run DB LABEL PROCESSES WORKERS [VAR=VALUE...]
  say "throughput $2: $envs environments x 2 deployments, $3 engine process(es) x $4 workers ${*:5}"
  fresh_db "$1"
  start_api
  seed --envs "$envs" --replicas 10 --strategy "$ten_steps" --image "$v1" --image "$v2" \
    --concurrency 16
  stop_pid "$api_pid"
  engine_pids=()
  load "throughput $2 before"
  local i
  wait_quiet "throughput $2"
  background "throughput-$2"
  # Several processes share one simulated cluster through a state directory (each would
  # otherwise have its own, and a deployment stepped by the other process would find nothing).
  # The directory is on tmpfs when there is one (/dev/shm): the simulator should cost little.
  local shared=()
  if (($3 > 1)); then
    local simdir=$out/sim-$2
    if [[ -d /dev/shm && -w /dev/shm ]]; then
      simdir=$(mktemp -d /dev/shm/slipway-bench-sim.XXXXXX)
      simdirs+=("$simdir")
    fi
    shared=("SLIPWAY_SIM_STATE_DIR=$simdir")
  fi
  for ((i = 1; i <= $3; i++)); do start_engine "engine-$2-$i.log" "$4" 0s "${shared[@]}" "${@:5}"; done
  monitor "throughput-$2" --until-done --max-seconds 600
  load "throughput $2 after"
  for i in "${engine_pids[@]}"; do stop_pid "$i"; done
  jq -c '{label: .label, done_after_s, whole_run, while_work_due, final: .final.statuses}' \
    "$out/throughput-$2.json" >&2
}

pgbench_run() { # pgbench_run SCRIPT LABEL CLIENTS ROWS
  local state data actions observation
  state=$(psql_ "$db_url" -Atc "SELECT state FROM deployments WHERE state->>'phase' = 'succeeded' ORDER BY id DESC LIMIT 1")
  data=$(psql_ "$db_url" -Atc "SELECT data FROM deployment_events WHERE kind = 'step_completed' AND data ? 'phase' LIMIT 1")
  actions=$(psql_ "$db_url" -Atc "SELECT actions FROM deployment_journal WHERE jsonb_array_length(actions) = 1 ORDER BY deployment_id LIMIT 1")
  observation=$(psql_ "$db_url" -Atc "SELECT observation FROM deployment_journal ORDER BY length(observation::text) DESC LIMIT 1")
  local threads=$(($(nproc) < $3 ? $(nproc) : $3))
  engine_pids=()
  monitor "pgbench-$2" --max-seconds "$pgbench_seconds" &
  local mon=$!
  "$pgbin/pgbench" -n -M prepared -c "$3" -j "$threads" -T "$pgbench_seconds" \
    -f "bench/engine/sql/$1" -D clients="$3" -D rows="$4" \
    -D "state=$state" -D "data=$data" -D "actions=$actions" -D "observation=$observation" \
    "$db_url" >"$out/pgbench-$2.txt" 2>&1
  wait "$mon" || true
  grep -E '^(tps|latency average|number of failed)' "$out/pgbench-$2.txt" >&2
}

if [[ ,$only, == *,throughput,* ]]; then
  throughput_run slipway_bench_engine_t1 1x64 1 64
  # Diagnostics: 16 workers per process (the default before chained steps), and the default
  # with every step's lease given back (chain_steps 1): what each buys, in the same run.
  throughput_run slipway_bench_engine_t2s 2x16 2 16
  throughput_run slipway_bench_engine_t2c 2x64-chain1 2 64 SLIPWAY_CHAIN_STEPS=1
  # The issue's measurement: 2 processes with the default settings (64 workers, pool 20).
  throughput_run slipway_bench_engine_t2 2x64 2 64
  say "pgbench in slipway_bench_engine_t2: 32 clients, -T $pgbench_seconds -M prepared -n"
  psql_ "$db_url" -f bench/engine/sql/pgbench-setup.sql >"$out/pgbench-setup.txt"
  rows=$(psql_ "$db_url" -Atc 'SELECT count(*) / 32 FROM engine_bench_deployments')
  load "pgbench before"
  wait_quiet pgbench
  background pgbench
  pgbench_run pgbench-transition.sql transition 32 "$rows"
  pgbench_run pgbench-step.sql step 32 "$rows"
  pgbench_run pgbench-step-notify-inline.sql step-notify-inline 32 "$rows"
  load "pgbench after"
fi

# Diagnostic (BENCH_ONLY=sweep2): two processes with BENCH_SWEEP_WORKERS workers each (16 32 64;
# pool = workers + 8): larger step-write batches per process, against the same baseline.
if [[ ,$only, == *,sweep2,* ]]; then
  for w in ${BENCH_SWEEP_WORKERS:-16 32 64}; do
    int BENCH_SWEEP_WORKERS "$w"
    throughput_run "slipway_bench_engine_v$w" "sweep-2x$w" 2 "$w" \
      SLIPWAY_DATABASE_MAX_CONNECTIONS=${BENCH_SWEEP_POOL:-$((w + 8))}
  done
fi

# Diagnostic (BENCH_ONLY=sweep): one process with 8, 16, 32, 64 workers (pool = workers + 8),
# to tell a CPU ceiling from a concurrency or claim-loop ceiling.
if [[ ,$only, == *,sweep,* ]]; then
  for w in ${BENCH_SWEEP_WORKERS:-8 16 32 64}; do
    int BENCH_SWEEP_WORKERS "$w"
    throughput_run "slipway_bench_engine_w$w" "sweep-1x$w" 1 "$w" \
      SLIPWAY_DATABASE_MAX_CONNECTIONS=${BENCH_SWEEP_POOL:-$((w + 8))}
  done
fi

# --- 2. wake latency -------------------------------------------------------------------------
if [[ ,$only, == *,latency,* ]]; then
  say "latency: $lat_envs canaries parked at indefinite pauses, one engine process x 64 workers"
  parked=('{"set_weight":10}')
  for ((i = 0; i < 63; i++)); do parked+=('{"pause":{}}'); done
  fresh_db slipway_bench_engine_lat
  start_api
  seed --envs "$lat_envs" --env-prefix p --replicas 4 --strategy "$(canary_steps "${parked[@]}")" \
    --image "$v1" --image "$v2" --concurrency 8
  engine_pids=()
  wait_quiet latency
  background latency
  start_engine engine-latency.log 64 0s
  load "latency before"
  DATABASE_URL=$db_url "$bench" latency --api "$api" --label idle --tag idle \
    --samples 250 --spacing-ms 50 --burst "$((lat_envs < 50 ? lat_envs : 50))" --burst-rounds 4 >"$out/latency-idle.json"
  jq -c '{label: .label, spaced: .spaced.created_to_event_ms, bursts: .bursts.created_to_event_ms}' \
    "$out/latency-idle.json" >&2
  say "latency under load: $envs more environments x 2 deployments (10-step canaries) at once"
  seed --envs "$envs" --env-prefix l --replicas 10 --strategy "$ten_steps" \
    --image "$v1" --image "$v2" --concurrency 16
  DATABASE_URL=$db_url "$bench" latency --api "$api" --label loaded --tag loaded \
    --samples 100 --spacing-ms 100 --burst-rounds 0 >"$out/latency-loaded.json"
  load "latency after"
  jq -c '{label: .label, spaced: .spaced.created_to_event_ms}' "$out/latency-loaded.json" >&2
  for p in "${engine_pids[@]}"; do stop_pid "$p"; done
  stop_pid "$api_pid"
fi

# --- 3. scale ----------------------------------------------------------------------------------
if [[ ,$only, == *,scale,* ]]; then
  say "scale: $scale_envs environments x 2 deployments, one engine process x 64 workers, pods ready after 5 s"
  fresh_db slipway_bench_engine_scale
  start_api
  timed=$(canary_steps '{"set_weight":10}' '{"pause":{"duration":"60s"}}' \
    '{"set_weight":50}' '{"pause":{"duration":"60s"}}')
  seed --envs "$scale_envs" --env-prefix s --replicas 4 --strategy "$timed" \
    --image "$v1" --image "$v2" --concurrency 32
  tail -n 1 "$out/seed.jsonl" | jq -c '{envs, deployments_created, elapsed_s, requests_per_s}' >&2
  stop_pid "$api_pid"
  engine_pids=()
  wait_quiet scale
  background scale
  load "scale before"
  start_engine engine-scale.log 64 5s
  monitor scale --until-done --max-seconds "$scale_seconds" \
    --window-active "$((scale_envs * 95 / 100))"
  load "scale after"
  for p in "${engine_pids[@]}"; do stop_pid "$p"; done
  jq -c '{label: .label, processes, whole_run, window_active, max_active, max_connections, final: .final.statuses}' \
    "$out/scale.json" >&2
fi

say "done: raw output in $out"
cat "$out/load.txt" >&2
summary
