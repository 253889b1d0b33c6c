#!/usr/bin/env bash
# THE test command: start the local services, then run the workspace tests against them.
# Extra arguments go to the test runner (cargo nextest run, else cargo test).
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure_pkg python3 python3 # the docker-machine stand-in is a Python script
ensure_pkg docker-compose docker-compose # validates compose.yaml (not run: no registry here)
ensure_pkg redis-cli redis-tools # builds the private Redis Cluster of the cluster test

"$LC_ROOT/scripts/services.sh" up
# shellcheck disable=SC1091
. "$LC_HOME/env"

export LC_DOCKER_MACHINE_STANDIN="$LC_ROOT/tests/docker-machine/docker-machine"

# Each test makes its own database (lc_test_*) and leaves it for a look after a failure;
# the next run drops them, or they pile up (about 9 MB each, 100+ per run, and
# autovacuum visiting every one of them). One still in use (another run) is left alone.
PSQL="$(command -v psql || find /usr/lib/postgresql -path '*/bin/psql' 2>/dev/null | sort -V | tail -n1)"
if [[ -x "$PSQL" ]]; then
  mapfile -t old_dbs < <("$PSQL" -X -A -t "$PG_ADMIN_URL" \
    -c "SELECT datname FROM pg_database WHERE datname ~ '^lc_test_[0-9a-f]+(_[a-z]+)?$'" 2>/dev/null || true)
  dropped=0
  for db in "${old_dbs[@]}"; do
    [[ "$db" =~ ^lc_test_[0-9a-f]+(_[a-z]+)?$ ]] || continue
    "$PSQL" -X -q "$PG_ADMIN_URL" -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 && dropped=$((dropped + 1))
  done
  ((dropped == 0)) || lc_log "dropped $dropped test databases of earlier runs"
fi

if ! command -v cargo >/dev/null 2>&1 && [[ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]]; then
  PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi
command -v cargo >/dev/null 2>&1 || lc_die "cargo not found"

cd "$LC_ROOT"
# The integration tests run `lc` and `lc-worker` as processes; cargo builds a package's
# binaries only for that package's own tests, so build them all first.
lc_log "running: cargo build --workspace --bins --examples"
cargo build --workspace --bins --examples
if cargo nextest --version >/dev/null 2>&1; then
  lc_log "running: cargo nextest run --workspace --no-fail-fast $*"
  exec cargo nextest run --workspace --no-fail-fast "$@"
else
  lc_log "running: cargo test --workspace --no-fail-fast $*"
  exec cargo test --workspace --no-fail-fast "$@"
fi
