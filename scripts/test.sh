#!/usr/bin/env bash
# THE test command: start the local services, then run the workspace tests against them,
# then the compose test (scripts/compose-test.sh: the stack of compose.local.yaml scaled up
# and down under load). Extra arguments go to the test runner (cargo nextest run, else cargo
# test); with them the compose test is skipped unless LC_COMPOSE_TEST=1 (LC_COMPOSE_TEST=0
# always skips it). The exit status is non-zero when either failed.
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ensure_pkg python3 python3 # the docker-machine stand-in is a Python script
ensure_pkg docker-compose docker-compose # runs compose.local.yaml; validates compose.yaml
ensure_pkg redis-cli redis-tools # builds the private Redis Cluster of the cluster test
# The dashboard's browser test (tests/browser/dashboard.py): Debian's Chromium and its
# driver, so that nothing downloads a browser.
ensure_pkg chromium chromium
ensure_pkg chromedriver chromium-driver
# The failover drill (tests/integration/failover.rs) starts its own pg_auto_failover
# cluster with scripts/ha.sh: install its packages here, so that the drill never skips.
"$LC_ROOT/scripts/ha.sh" install

"$LC_ROOT/scripts/services.sh" up
# shellcheck disable=SC1091
. "$LC_HOME/env"

export LC_DOCKER_MACHINE_STANDIN="$LC_ROOT/tests/docker-machine/docker-machine"

# The webhook tests' receiver (tests/webhook/receiver.py) checks every request with the
# Standard Webhooks reference library, from PyPI, pinned; schemathesis fuzzes the HTTP
# API from its OpenAPI document; the dashboard's browser test drives Chromium with
# Selenium (given the driver's path: Selenium Manager never runs).
ensure_python_venv "$LC_HOME/venv" standardwebhooks==1.3.0 schemathesis==4.32.5 selenium==4.50.0
export LC_TEST_PYTHON="$LC_HOME/venv/bin/python3"

# Each test makes its own database and leaves it for a look after a failure; the next
# run drops them (see lc_drop_test_databases).
lc_drop_test_databases "$PG_ADMIN_URL"

if ! command -v cargo >/dev/null 2>&1 && [[ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]]; then
  PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi
command -v cargo >/dev/null 2>&1 || lc_die "cargo not found"

cd "$LC_ROOT"
# The integration tests run `lc` and `lc-worker` as processes; cargo builds a package's
# binaries only for that package's own tests, so build them all first.
lc_log "running: cargo build --workspace --bins --examples"
cargo build --workspace --bins --examples
rc=0
if cargo nextest --version >/dev/null 2>&1; then
  lc_log "running: cargo nextest run --workspace --no-fail-fast $*"
  cargo nextest run --workspace --no-fail-fast "$@" || rc=$?
else
  lc_log "running: cargo test --workspace --no-fail-fast $*"
  cargo test --workspace --no-fail-fast "$@" || rc=$?
fi
compose_default=1
(($#)) && compose_default=0
if [[ "${LC_COMPOSE_TEST:-$compose_default}" == 1 ]]; then
  lc_log "running: scripts/compose-test.sh"
  "$LC_ROOT/scripts/compose-test.sh" || { compose_rc=$?; lc_warn "the compose test failed"; ((rc)) || rc=$compose_rc; }
fi
exit "$rc"
