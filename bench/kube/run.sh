#!/usr/bin/env bash
# The same rolling update, driven by Slipway and by `kubectl apply` + `kubectl rollout status`,
# on a private instance of the test cluster (scripts/cluster) with the kube-apiserver's audit
# log on: wall time per update, and Kubernetes API requests per update, per user and client.
# See bench/kube.md for what it measures and the results.
#
#   bench/kube/run.sh                      # 5 runs each, 4 replicas
#   BENCH_RUNS=10 BENCH_REPLICAS=8 bench/kube/run.sh
#
# Needs: scripts/cluster/build done, the test PostgreSQL (DATABASE_URL, scripts/lib/pg.sh),
# the release binary (cargo build --release -p slipway; or SLIPWAY_BIN), curl, python3.
# It starts its own cluster under $BENCH_CACHE (default /var/cache/slipway/bench/kube-cluster,
# binaries shared with the test cluster) so the shared test cluster is neither disturbed nor
# counted, and its own database `slipway_bench_kube` on DATABASE_URL's server. Everything it
# started is stopped at the end; raw data stays in $BENCH_OUT.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

RUNS=${BENCH_RUNS:-5}
REPLICAS=${BENCH_REPLICAS:-4}
PORT=${BENCH_PORT:-18190}
OUT=${BENCH_OUT:-$(mktemp -d /tmp/slipway-bench-kube.XXXXXX)}
BENCH_CACHE=${BENCH_CACHE:-/var/cache/slipway/bench/kube-cluster}
REAL_CACHE=${SLIPWAY_CACHE:-/var/cache/slipway}
SLIPWAY_BIN=${SLIPWAY_BIN:-${CARGO_TARGET_DIR:-$REAL_CACHE/target}/release/slipway}
DATABASE_URL=${DATABASE_URL:-postgres://postgres:postgres@127.0.0.1:55432/postgres}
DB=${DATABASE_URL%/*}/slipway_bench_kube
mkdir -p "$OUT"
log() { printf '%s bench: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# shellcheck source=scripts/cluster/lib.sh
source scripts/cluster/lib.sh
KUBECTL=$CLUSTER_BIN/kubectl
[[ -x $SLIPWAY_BIN ]] || { log "no $SLIPWAY_BIN: cargo build --release -p slipway (or set SLIPWAY_BIN)"; exit 1; }
[[ -x $KUBECTL ]] || { log "no $KUBECTL: scripts/cluster/build"; exit 1; }

SERVER_PID=""
cleanup() {
  if [[ -n $SERVER_PID ]]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  SLIPWAY_CACHE=$BENCH_CACHE scripts/cluster/stop --clean >/dev/null 2>&1 || true
  psql -q "$DATABASE_URL" -c "DROP DATABASE IF EXISTS slipway_bench_kube WITH (FORCE)" >/dev/null 2>&1 || true
}
trap cleanup EXIT

# --- a private cluster, its API server writing an audit log ---------------------------------------
mkdir -p "$BENCH_CACHE/k8s"
ln -sfn "$REAL_CACHE/k8s/$CLUSTER_KEY" "$BENCH_CACHE/k8s/$CLUSTER_KEY"
log "starting a private test cluster in $BENCH_CACHE"
line=$(SLIPWAY_CACHE=$BENCH_CACHE scripts/cluster/start --fresh)
export KUBECONFIG=${line#KUBECONFIG=}
RUN=$BENCH_CACHE/k8s/run
cat >"$OUT/audit-policy.yaml" <<'YAML'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]   # one line per request, when it completes
rules:
- level: Metadata
YAML
SLIPWAY_CACHE=$BENCH_CACHE scripts/cluster/apiserver stop
SLIPWAY_CACHE=$BENCH_CACHE scripts/cluster/apiserver start -- \
  --audit-policy-file="$OUT/audit-policy.yaml" --audit-log-path="$OUT/audit.log" \
  --audit-log-format=json --audit-log-mode=blocking
# Slipway connects as its own user (slipway-e2e), so its requests are told apart from kubectl's
# and the controllers' (all `admin`). On this throwaway cluster it may do anything.
"$KUBECTL" create clusterrolebinding bench-slipway --clusterrole=cluster-admin --user=slipway-e2e >/dev/null
"$KUBECTL" create namespace bench-slipway >/dev/null
"$KUBECTL" create namespace bench-kubectl >/dev/null
for ns in bench-slipway bench-kubectl; do
  until "$KUBECTL" -n "$ns" get serviceaccount default >/dev/null 2>&1; do sleep 0.2; done
done

# --- Slipway ---------------------------------------------------------------------------------------
psql -q "$DATABASE_URL" -c "DROP DATABASE IF EXISTS slipway_bench_kube WITH (FORCE)" >/dev/null
psql -q "$DATABASE_URL" -c "CREATE DATABASE slipway_bench_kube" >/dev/null
# Authentication off: a throwaway server on loopback, and the requests compared are the
# cluster's, not the API's.
DATABASE_URL=$DB SLIPWAY_LOG_LEVEL=warn SLIPWAY_AUTH_ENABLED=false \
  "$SLIPWAY_BIN" serve --migrate --listen "127.0.0.1:$PORT" >"$OUT/slipway.log" 2>&1 &
SERVER_PID=$!
API=http://127.0.0.1:$PORT
until curl -sf "$API/readyz" >/dev/null 2>&1; do
  kill -0 "$SERVER_PID" 2>/dev/null || { log "slipway serve exited: $(tail -n 3 "$OUT/slipway.log")"; exit 1; }
  sleep 0.2
done
post() { curl -sf -X "$1" -H 'content-type: application/json' -d "$3" "$API$2"; }
post POST /v1/clusters "{\"name\":\"bench\",\"kind\":\"kubernetes\",\"kubeconfig_path\":\"$RUN/kubeconfig-e2e\"}" >/dev/null
post POST /v1/apps '{"name":"web","description":"bench"}' >/dev/null
post PUT /v1/apps/web/environments/bench "{\"cluster\":\"bench\",\"namespace\":\"bench-slipway\",
  \"workload\":{\"name\":\"web\",\"container\":\"app\",\"replicas\":$REPLICAS,\"port\":8080},
  \"strategy\":{\"type\":\"rolling\",\"max_surge\":1,\"max_unavailable\":0}}" >/dev/null

now() { date +%s.%N; }
# slipway_deploy VERSION: POST the deployment, poll it every 50 ms until it has finished (one
# curl per look: a few ms each, so it sees the end 0–60 ms late).
slipway_deploy() {
  local id status="" body
  body=$(post POST /v1/apps/web/environments/bench/deployments \
    "{\"image\":\"registry.test/web:$1\",\"version\":\"$1\"}")
  [[ $body =~ \"id\":\"([0-9a-f-]+)\" ]] || { log "no id in $body"; return 1; }
  id=${BASH_REMATCH[1]}
  while :; do
    body=$(curl -sf "$API/v1/deployments/$id")
    [[ $body =~ \"status\":\"([a-z_]+)\" ]] && status=${BASH_REMATCH[1]}
    case $status in
      succeeded) return 0 ;;
      failed|rolled_back|cancelled|superseded) log "slipway deployment $id ended $status"; return 1 ;;
    esac
    sleep 0.05
  done
}

# The same Deployment Slipway writes (labels, selector, budget, container), for kubectl.
manifest() {
  cat <<YAML
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: bench-kubectl
  labels: {app.kubernetes.io/name: web, slipway.dev/track: stable}
  annotations: {slipway.dev/version: "$1"}
spec:
  replicas: $REPLICAS
  selector: {matchLabels: {app.kubernetes.io/name: web, slipway.dev/track: stable}}
  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}
  template:
    metadata:
      labels: {app.kubernetes.io/name: web, slipway.dev/track: stable}
      annotations: {slipway.dev/version: "$1"}
    spec:
      containers:
      - {name: app, image: "registry.test/web:$1", ports: [{name: http, containerPort: 8080, protocol: TCP}]}
YAML
}
kubectl_deploy() {
  manifest "$1" | "$KUBECTL" apply -f - >/dev/null
  "$KUBECTL" -n bench-kubectl rollout status deployment/web --timeout=120s >/dev/null
}

# --- warm-up (not counted): the first deployment of each, connections opened --------------------------
log "warm-up"
slipway_deploy 0.0.0
kubectl_deploy 0.0.0
sleep 2

# --- runs, alternating --------------------------------------------------------------------------------------
echo "tool,run,start,end,seconds,load1" >"$OUT/runs.csv"
for ((i = 1; i <= RUNS; i++)); do
  for tool in slipway kubectl; do
    load=$(cut -d' ' -f1 /proc/loadavg)
    t0=$(now)
    "${tool}_deploy" "1.0.$i"
    t1=$(now)
    echo "$tool,$i,$t0,$t1,$(python3 -c "print(f'{$t1-$t0:.3f}')"),$load" >>"$OUT/runs.csv"
    log "$tool run $i: $(python3 -c "print(f'{$t1-$t0:.2f}')") s (load $load)"
    sleep 2   # let the controllers settle (old pods gone) before the next run
  done
done
sleep 1
python3 bench/kube/report.py "$OUT/runs.csv" "$OUT/audit.log" | tee "$OUT/report.md"
log "raw data in $OUT"
