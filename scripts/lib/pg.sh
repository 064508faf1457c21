# shellcheck shell=bash
# Shared helpers for scripts/test, scripts/dev and scripts/openapi. Source it; do not run it.
#
#   ensure_cargo_on_path       put rustup's ~/.cargo/bin on PATH when cargo is not there yet
#   ensure_postgres_installed  apt-get install PostgreSQL's server binaries if they are missing
#   start_test_postgres        start (or reuse) the private test instance; exports DATABASE_URL
#   stop_test_postgres         stop that instance
#
# The test instance lives in ${SLIPWAY_CACHE:-/var/cache/slipway}/test-pg and listens on
# 127.0.0.1:${SLIPWAY_TEST_PG_PORT:-55432} only. It is tuned for throw-away test databases
# (fsync=off) and uses trust authentication for 127.0.0.1 and its own unix socket (a 0700
# directory): never point it at data you care about. As root, the server runs as the
# `postgres` system user.

_slipway_pg_log() { printf '%s\n' "slipway: $*" >&2; }

# Runs "$@" as root: directly when we are root, else through sudo.
_slipway_as_root() {
  if [[ $(id -u) -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    _slipway_pg_log "need root for: $* (sudo is not installed)"
    return 1
  fi
}

ensure_cargo_on_path() {
  local bin=${CARGO_HOME:-${HOME:-/root}/.cargo}/bin
  if ! command -v cargo >/dev/null 2>&1 && [[ -x $bin/cargo ]]; then
    PATH=$bin:$PATH
    export PATH
  fi
  if ! command -v cargo >/dev/null 2>&1; then
    _slipway_pg_log "cargo was not found on PATH or in $bin; install Rust with rustup"
    return 1
  fi
}

# Prints the directory holding both initdb and pg_ctl: the first PATH entry that has them,
# else the highest /usr/lib/postgresql/<version>/bin. Fails when there is none. The directory
# printed is the one pg_ctl really lives in (PATH may hold just symlinks to initdb and pg_ctl),
# so the installation's other programs (pg_isready, psql) are there too.
pg_bin_dir() {
  local dir
  local -a dirs=()
  IFS=: read -r -a dirs <<<"${PATH:-}"
  for dir in "${dirs[@]}"; do
    if [[ -n $dir && -x $dir/initdb && -x $dir/pg_ctl ]]; then
      dirname "$(readlink -f "$dir/pg_ctl")"
      return 0
    fi
  done
  while IFS= read -r dir; do
    if [[ -x $dir/initdb && -x $dir/pg_ctl ]]; then
      printf '%s\n' "$dir"
      return 0
    fi
  done < <(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V -r)
  return 1
}

ensure_postgres_installed() {
  if pg_bin_dir >/dev/null; then
    return 0
  fi
  _slipway_pg_log "PostgreSQL server binaries not found; installing them with apt-get"
  _slipway_as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q || return 1
  _slipway_as_root env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends postgresql || return 1
  if ! pg_bin_dir >/dev/null; then
    _slipway_pg_log "installed postgresql, but initdb/pg_ctl are still not under /usr/lib/postgresql/*/bin"
    return 1
  fi
}

_slipway_test_pg_dir() { printf '%s\n' "${SLIPWAY_CACHE:-/var/cache/slipway}/test-pg"; }
_slipway_test_pg_port() { printf '%s\n' "${SLIPWAY_TEST_PG_PORT:-55432}"; }

# Runs "$@" as the user that owns the test cluster: `postgres` when we are root, else ourselves.
_slipway_as_pg() {
  if [[ $(id -u) -eq 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

# Whether postmaster.pid names a live postgres process (a pid file left by a killed server or a
# previous boot may name a pid that is gone, a zombie, or now some other program).
_slipway_test_pg_alive() {
  local pidfile=$1/postmaster.pid pid comm stat state
  [[ -f $pidfile ]] || return 1
  pid=$(head -n 1 "$pidfile" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  comm=$(cat "/proc/$pid/comm" 2>/dev/null) || return 1
  [[ $comm == postgres || $comm == postmaster ]] || return 1
  stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
  state=${stat##*) }
  state=${state%% *}
  [[ $state != Z && $state != X ]]
}

start_test_postgres() {
  local dir port bin data log run
  dir=$(_slipway_test_pg_dir)
  port=$(_slipway_test_pg_port)
  data=$dir/data
  log=$dir/postgres.log
  run=$dir/run
  bin=$(pg_bin_dir) || {
    _slipway_pg_log "PostgreSQL is not installed (run ensure_postgres_installed first)"
    return 1
  }

  if [[ $(id -u) -eq 0 ]] && ! id -u postgres >/dev/null 2>&1; then
    _slipway_pg_log "running as root but there is no 'postgres' user to run the test server as; install the postgresql package"
    return 1
  fi

  if ! mkdir -p "$dir" "$run"; then
    _slipway_pg_log "cannot create $dir; set SLIPWAY_CACHE to a writable directory"
    return 1
  fi
  if [[ $(id -u) -eq 0 ]]; then
    chown postgres: "$dir" "$run" || return 1
    if [[ -f $log ]]; then chown postgres: "$log" || return 1; fi
    if ! runuser -u postgres -- test -w "$dir"; then
      _slipway_pg_log "the postgres user cannot write to $dir: make every parent directory of it traversable (chmod o+x), or set SLIPWAY_CACHE elsewhere"
      return 1
    fi
  fi
  chmod 0700 "$run" || return 1

  # An existing cluster needs the server of its own major version.
  if [[ -f $data/PG_VERSION ]]; then
    local want have
    want=$(cat "$data/PG_VERSION")
    have=$("$bin/pg_ctl" --version | sed -n 's/.* \([0-9][0-9]*\)\..*/\1/p')
    if [[ $want != "$have" ]]; then
      if [[ -x /usr/lib/postgresql/$want/bin/pg_ctl ]]; then
        bin=/usr/lib/postgresql/$want/bin
      elif _slipway_test_pg_alive "$data"; then
        _slipway_pg_log "the running test cluster is PostgreSQL $want but only $have is installed; stop it first"
        return 1
      else
        _slipway_pg_log "the test cluster was made by PostgreSQL $want, which is gone; re-creating it with $have"
        rm -rf "$data"
      fi
    fi
  fi

  if [[ ! -f $data/PG_VERSION ]]; then
    rm -rf "$data"
    _slipway_pg_log "initialising the test PostgreSQL cluster in $data"
    local pwfile
    pwfile=$dir/pwfile
    (umask 077 && printf 'postgres\n' >"$pwfile") || return 1
    if [[ $(id -u) -eq 0 ]]; then chown postgres: "$pwfile" || return 1; fi
    if ! _slipway_as_pg "$bin/initdb" -D "$data" -U postgres --pwfile="$pwfile" \
      --auth-local=trust --auth-host=trust -E UTF8 --no-locale --no-sync >"$dir/initdb.log" 2>&1; then
      rm -f "$pwfile"
      _slipway_pg_log "initdb failed; its output ($dir/initdb.log):"
      cat "$dir/initdb.log" >&2
      return 1
    fi
    rm -f "$pwfile"
    # Only the private socket and 127.0.0.1 may connect at all.
    printf '%s\n' \
      '# Written by scripts/lib/pg.sh: test instance, loopback only.' \
      'local all all trust' \
      'host  all all 127.0.0.1/32 trust' >"$data/pg_hba.conf" || return 1
    printf '\n%s\n' "include_if_exists = 'slipway-test.conf'" >>"$data/postgresql.conf" || return 1
  fi

  # Settings rewritten on every start, so a changed SLIPWAY_TEST_PG_PORT takes effect.
  # SLIPWAY_TEST_PG_DURABLE=1 keeps PostgreSQL's durable defaults (fsync, synchronous_commit,
  # full_page_writes on: a WAL flush per commit), for benchmarks that price it.
  local durable=off
  if [[ ${SLIPWAY_TEST_PG_DURABLE:-} == 1 ]]; then durable=on; fi
  printf '%s\n' \
    '# Written by scripts/lib/pg.sh on every start; edits are overwritten.' \
    "listen_addresses = '127.0.0.1'" \
    "port = $port" \
    "unix_socket_directories = '${run//\'/\'\'}'" \
    'unix_socket_permissions = 0700' \
    'max_connections = 300' \
    'shared_buffers = 128MB' \
    "fsync = $durable" \
    "synchronous_commit = $durable" \
    "full_page_writes = $durable" >"$dir/slipway-test.conf.new" || return 1
  if [[ $(id -u) -eq 0 ]]; then
    chown -R postgres: "$data" "$dir/slipway-test.conf.new" || return 1
  fi

  if _slipway_test_pg_alive "$data"; then
    if cmp -s "$dir/slipway-test.conf.new" "$data/slipway-test.conf" &&
      "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" -d postgres -U postgres; then
      rm -f "$dir/slipway-test.conf.new"
      _slipway_pg_log "reusing the test PostgreSQL on 127.0.0.1:$port"
      export DATABASE_URL="postgres://postgres:postgres@127.0.0.1:$port/postgres"
      return 0
    fi
    _slipway_pg_log "restarting the test PostgreSQL (its settings changed)"
    _slipway_as_pg "$bin/pg_ctl" stop -D "$data" -m fast -w -t 60 >/dev/null || return 1
  elif [[ -f $data/postmaster.pid ]]; then
    _slipway_pg_log "removing a stale $data/postmaster.pid"
    rm -f "$data/postmaster.pid" "$run"/.s.PGSQL.*
  fi
  mv -f "$dir/slipway-test.conf.new" "$data/slipway-test.conf" || return 1

  local log_start=0
  [[ -f $log ]] && log_start=$(stat -c %s "$log")
  if ! _slipway_as_pg "$bin/pg_ctl" start -D "$data" -l "$log" -w -t 60 -s; then
    _slipway_pg_log "the test PostgreSQL did not start; server log: $log; its last lines:"
    tail -c +"$((log_start + 1))" "$log" 2>/dev/null | tail -n 30 >&2
    return 1
  fi
  _slipway_pg_log "test PostgreSQL is up on 127.0.0.1:$port (data in $data)"
  export DATABASE_URL="postgres://postgres:postgres@127.0.0.1:$port/postgres"
}

stop_test_postgres() {
  local dir bin data
  dir=$(_slipway_test_pg_dir)
  data=$dir/data
  if ! _slipway_test_pg_alive "$data"; then
    return 0
  fi
  bin=$(pg_bin_dir) || return 1
  _slipway_as_pg "$bin/pg_ctl" stop -D "$data" -m fast -w -t 60 -s
}
