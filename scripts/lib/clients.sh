# shellcheck shell=bash
# The tools that check the OpenAPI document and generate clients from it, pinned, installed
# once per set of versions into a cache outside the work tree. Source it; do not run it.
#
#   ensure_client_tools   install (or reuse) them; exports SLIPWAY_CLIENTS (the cache folder),
#                         whose venv/bin holds the Python tools and node_modules/.bin the npm ones
#
# The folder is ${SLIPWAY_CACHE:-/var/cache/slipway}/clients-<hash of the pins below>, so a
# changed pin installs into a new folder and a warm run installs nothing. A folder is used
# only once its `.complete` mark exists, so an interrupted install is started again.

# Python packages (PyPI): the validator, the Python client generator and the fuzzer.
SLIPWAY_CLIENT_PIP_PINS=(
  "openapi-spec-validator==0.9.0"
  "openapi-python-client==0.29.1"
  "schemathesis==4.32.5"
)
# npm packages: the TypeScript types generator, its fetch client, and the compiler that
# checks the client script against the generated types.
SLIPWAY_CLIENT_NPM_PINS=(
  "openapi-typescript@7.13.0"
  "openapi-fetch@0.17.0"
  "typescript@5.9.3"
)

_slipway_clients_log() { printf '%s\n' "slipway: $*" >&2; }

ensure_client_tools() {
  local hash dir
  hash=$(printf '%s\n' "${SLIPWAY_CLIENT_PIP_PINS[@]}" "${SLIPWAY_CLIENT_NPM_PINS[@]}" \
    "$(python3 --version 2>&1)" "$(node --version 2>&1)" | sha256sum | cut -c1-12)
  dir=${SLIPWAY_CACHE:-/var/cache/slipway}/clients-$hash
  if [[ ! -f $dir/.complete ]]; then
    command -v python3 >/dev/null 2>&1 || { _slipway_clients_log "python3 is needed"; return 1; }
    command -v npm >/dev/null 2>&1 || { _slipway_clients_log "npm (Node.js) is needed"; return 1; }
    _slipway_clients_log "installing the OpenAPI client tools into $dir"
    rm -rf "$dir"
    mkdir -p "$dir"
    python3 -m venv "$dir/venv"
    "$dir/venv/bin/pip" install --quiet --disable-pip-version-check "${SLIPWAY_CLIENT_PIP_PINS[@]}"
    printf '{"name":"slipway-client-tools","private":true}\n' >"$dir/package.json"
    npm install --prefix "$dir" --silent --no-audit --no-fund --save-exact \
      "${SLIPWAY_CLIENT_NPM_PINS[@]}"
    touch "$dir/.complete"
  fi
  SLIPWAY_CLIENTS=$dir
  export SLIPWAY_CLIENTS
}
