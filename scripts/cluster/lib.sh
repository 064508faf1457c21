# shellcheck shell=bash
# shellcheck disable=SC2034  # the variables are used by the scripts that source this file
# Shared settings for scripts/cluster/{build,start,stop}. Source it; do not run it.
# Bump a version here and the cache key changes, so the next `build` makes a new binary set.

K8S_VERSION=v1.36.3
ETCD_VERSION=v3.6.16
KWOK_VERSION=v0.8.0

CLUSTER_CACHE=${SLIPWAY_CACHE:-/var/cache/slipway}
CLUSTER_KEY=${K8S_VERSION}-etcd${ETCD_VERSION#v}-kwok${KWOK_VERSION#v}
CLUSTER_OUT=$CLUSTER_CACHE/k8s/$CLUSTER_KEY      # bin/, stages/, build.log
CLUSTER_BIN=$CLUSTER_OUT/bin
CLUSTER_STAGES=$CLUSTER_OUT/stages
CLUSTER_RUN=$CLUSTER_CACHE/k8s/run               # kubeconfig, env, logs/, pids/, data of a running cluster

# Measured on this project's 2-core machine (see docs/test-cluster.md).
CLUSTER_BUILD_COST="about 9 min cold on 2 busy cores, about 1 min warm"

# Start order; stop goes the other way.
CLUSTER_COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
CLUSTER_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd kwok)

cluster_log() { printf '%s\n' "cluster: $*" >&2; }

# cluster_close_fds: closes every descriptor above 2 of the current (sub)shell. The daemons run
# long after the script that starts them: an inherited descriptor would keep whatever it
# holds (the scripts' own lock, or a caller's `flock FILE scripts/test` lock) held for as long
# as the cluster runs.
cluster_close_fds() {
  local fd
  for fd in /proc/"$BASHPID"/fd/*; do
    fd=${fd##*/}
    if ((fd > 2)); then eval "exec $fd>&-"; fi
  done
}

# cluster_pid_alive NAME: true when pids/NAME.pid names a live process running our binary.
cluster_pid_alive() {
  local name=$1 pidfile=$CLUSTER_RUN/pids/$1.pid pid exe
  [[ -f $pidfile ]] || return 1
  pid=$(<"$pidfile")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  [[ ${exe% (deleted)} == */"$name" ]]
}

# --- addons (scripts/cluster/addons): Gateway API CRDs and Slipway's RBAC ----------------------
# The CRDs come from the Go module sigs.k8s.io/gateway-api (config/crd/standard/*.yaml), fetched
# through the Go module proxy and copied to a directory keyed by the version. v1.7.0 wants Go 1.27.
GATEWAY_API_VERSION=v1.6.3
GATEWAY_API_CRDS=$CLUSTER_CACHE/k8s/gateway-api-$GATEWAY_API_VERSION
