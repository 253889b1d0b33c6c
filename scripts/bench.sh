#!/usr/bin/env bash
# The LaunchControl benchmark, in one command: start the local services, build the release
# binaries, run lc-bench against a fresh database and a fresh Redis key prefix, then drop
# both. Prints a table and one final `BENCH_JSON {...}` line; the output is also kept in
# $LC_HOME/bench/<stamp>/output.txt with the worker logs of the run.
#
#   scripts/bench.sh                          the whole bench (a few minutes on 2 cores)
#   scripts/bench.sh --only drain             one section (single,bulk,drain,latency,fanout,recovery,http,fleet)
#   scripts/bench.sh --jobs 5000 --drain-jobs 20000
#                                             smaller runs (drains of 150,000 jobs by default,
#                                             so that each lasts 5 s or more; shorter ones get a
#                                             note); `lc-bench --help` lists every option
#   scripts/bench.sh --compare bullmq         the same workloads on BullMQ in the same run, with
#                                             ratios (installs the pinned BullMQ of
#                                             bench/bullmq/package-lock.json under $LC_HOME/peers)
#   scripts/bench.sh --isolation serializable --only drain --drain-workers 1,2,4
#   scripts/bench.sh --compare bullmq --repeat 3
#                                             each measuring section three times, interleaved
#                                             (lc then BullMQ in each), medians with min–max
#   scripts/bench.sh --help                   lc-bench's options (builds it; starts nothing)
#   BENCH_KEEP_DB=1 scripts/bench.sh          keep the bench database for inspection
#   BENCH_KEEP_TEST_DBS=1 scripts/bench.sh    leave the test databases of earlier runs alone
#                                             (a server shared with others' test runs)
#   scripts/bench.sh --ha --only single,drain,latency
#                                             the sections twice: on the single server, then on
#                                             a highly available PostgreSQL (scripts/ha.sh: a
#                                             synchronous standby, in $LC_HOME/bench/<stamp>/ha on
#                                             ports 56445-56447, stopped and removed afterwards);
#                                             then the figures
#                                             side by side, and the failover time of a kill -9 of
#                                             that cluster's primary
#
# lc-bench is the workspace crate bench/ (not published). Binaries go to
# $CARGO_TARGET_DIR/release when that is set, else target/release.
#
# Exit code: lc-bench's (0 when every job the bench enqueued was verified `succeeded`).
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if ! command -v cargo >/dev/null 2>&1 && [[ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]]; then
  PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi
command -v cargo >/dev/null 2>&1 || lc_die "cargo not found"
BIN_DIR="${CARGO_TARGET_DIR:-$LC_ROOT/target}/release"

# --help / --version: only lc-bench itself is needed (no services, no database).
for arg in "$@"; do
  case "$arg" in
    -h | --help | -V | --version)
      (cd "$LC_ROOT" && cargo build --release --package lc-bench --bin lc-bench >&2)
      exec "$BIN_DIR/lc-bench" "$@"
      ;;
  esac
done

ensure_pkg python3 python3 # the docker-machine stand-in (fan-out) is a Python script

# --ha: the bench runs twice (single server, HA cluster); lc-bench never sees the flag.
HA=0
bench_args=()
for arg in "$@"; do
  if [[ "$arg" == --ha ]]; then
    HA=1
  else
    bench_args+=("$arg")
  fi
done
set -- "${bench_args[@]}"

# --compare bullmq: install the pinned BullMQ (bench/bullmq/package-lock.json) into the
# project's data directory, once; `npm ci` again only when the lock file changed.
compare=""
previous=""
for arg in "$@"; do
  case "$arg" in
    --compare=*) compare="${arg#--compare=}" ;;
    *) [[ "$previous" == --compare ]] && compare="$arg" ;;
  esac
  previous="$arg"
done
if [[ "$compare" == bullmq ]]; then
  ensure_pkg node nodejs
  ensure_pkg npm npm
  BULLMQ_DIR="$LC_HOME/peers/bullmq"
  mkdir -p "$BULLMQ_DIR"
  if ! cmp -s "$LC_ROOT/bench/bullmq/package-lock.json" "$BULLMQ_DIR/package-lock.json" ||
    [[ ! -f "$BULLMQ_DIR/node_modules/bullmq/package.json" ]]; then
    lc_log "installing BullMQ (pinned by bench/bullmq/package-lock.json) into $BULLMQ_DIR"
    cp "$LC_ROOT/bench/bullmq/package.json" "$LC_ROOT/bench/bullmq/package-lock.json" "$BULLMQ_DIR/"
    (cd "$BULLMQ_DIR" && npm ci --no-audit --no-fund --loglevel=error >&2)
  fi
  export LC_BULLMQ_DIR="$BULLMQ_DIR"
fi

"$LC_ROOT/scripts/services.sh" up >&2
# shellcheck disable=SC1091
. "$LC_HOME/env"

ensure_pkg redis-cli redis-tools
PSQL="$(command -v psql || true)"
if [[ -z "$PSQL" ]]; then
  PSQL="$(find /usr/lib/postgresql -path '*/bin/psql' 2>/dev/null | sort -V | tail -n1)"
fi
[[ -x "$PSQL" ]] || lc_die "psql not found"
# The one-producer reference (pgbench with lc's own insert): the server's version, which
# comes with the PostgreSQL that services.sh installed.
PGBENCH="$(find /usr/lib/postgresql -path '*/bin/pgbench' 2>/dev/null | sort -V | tail -n1)"
if [[ -z "$PGBENCH" ]]; then
  ensure_pkg pgbench postgresql # pgbench ships with the server package
  PGBENCH="$(command -v pgbench)"
fi

cd "$LC_ROOT"
lc_log "building release binaries (lc, lc-worker, lc-bench)"
cargo build --release --bin lc --bin lc-bench-worker --bin lc-bench --bin lc-bench-http-floor >&2

STAMP="$(date +%Y%m%d_%H%M%S)_$$"
BENCH_DB="lc_bench_$STAMP"
BENCH_PREFIX="lcbench$STAMP"
WORK="$LC_HOME/bench/$STAMP"
HA_DIR="$WORK/ha"
mkdir -p "$WORK"

# postgres://u@h:p/postgres?x -> postgres://u@h:p/lc_bench_...?x
bench_database_url() {
  local admin_url="$1" query=""
  if [[ "$admin_url" == *\?* ]]; then
    query="?${admin_url#*\?}"
    admin_url="${admin_url%%\?*}"
  fi
  printf '%s/%s%s\n' "${admin_url%/*}" "$BENCH_DB" "$query"
}
ADMIN_URL="$PG_ADMIN_URL"

psql_admin() {
  "$PSQL" -X -q -v ON_ERROR_STOP=1 "$ADMIN_URL" "$@"
}

# Drops the bench database and Redis keys of the run against ADMIN_URL.
drop_bench_data() {
  if [[ "${BENCH_KEEP_DB:-0}" == 1 ]]; then
    lc_log "kept database $BENCH_DB ($(bench_database_url "$ADMIN_URL")) and Redis prefix $BENCH_PREFIX"
  else
    psql_admin -c "DROP DATABASE IF EXISTS $BENCH_DB WITH (FORCE)" ||
      lc_warn "could not drop database $BENCH_DB"
    redis-cli -u "$REDIS_URL" --scan --pattern "$BENCH_PREFIX:*" |
      xargs -r -n 500 redis-cli -u "$REDIS_URL" DEL >/dev/null ||
      lc_warn "could not delete Redis keys $BENCH_PREFIX:*"
  fi
}

# shellcheck disable=SC2317 # invoked by the trap
cleanup() {
  local rc=$? pid
  trap - EXIT INT TERM
  # Interrupted: stop lc-bench, then the workers it started (listed in worker.pids).
  if [[ -n "${BENCH_PID:-}" ]] && kill -0 "$BENCH_PID" 2>/dev/null; then
    kill -TERM "$BENCH_PID" 2>/dev/null || true
    sleep 1
    kill -KILL "$BENCH_PID" 2>/dev/null || true
  fi
  for pids in "$WORK/worker.pids" "$WORK/ha-run/worker.pids"; do
    [[ -f "$pids" ]] || continue
    while read -r pid; do
      [[ "$pid" =~ ^[0-9]+$ ]] || continue
      if [[ -r "/proc/$pid/comm" && "$(cat "/proc/$pid/comm" 2>/dev/null)" == lc-worker ]]; then
        kill -KILL "$pid" 2>/dev/null || true
      fi
    done <"$pids"
  done
  # Containers of the fleet section's deployments that a failed or interrupted run left
  # (named lc-<deployment>-..., the deployment named after the Redis prefix).
  if command -v docker >/dev/null 2>&1; then
    docker ps -aq --filter "name=lc-bench-${BENCH_PREFIX//_/-}" 2>/dev/null |
      xargs -r docker rm -f >/dev/null 2>&1 || lc_warn "could not remove the fleet's containers"
  fi
  if [[ -n "${BENCH_RUNNING:-}" ]]; then
    drop_bench_data
  fi
  if [[ -f "$HA_DIR/ports" ]]; then
    "$LC_ROOT/scripts/ha.sh" down "$HA_DIR" >/dev/null || lc_warn "could not stop the HA cluster in $HA_DIR"
    rm -rf "$HA_DIR"
  fi
  # Keep the logs of the last five runs.
  find "$LC_HOME/bench" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' 2>/dev/null | sort | head -n -5 |
    while read -r old; do rm -rf "${LC_HOME:?}/bench/$old"; done
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# run_bench OUTPUT WORK_DIR ARGS...: lc-bench against a fresh database beside ADMIN_URL, with
# its worker logs in WORK_DIR; its output also goes to OUTPUT. Returns lc-bench's exit code.
run_bench() {
  local output="$1" work="$2" rc=0
  shift 2
  local url
  url="$(bench_database_url "$ADMIN_URL")"
  lc_log "database $BENCH_DB ($url), Redis prefix $BENCH_PREFIX, logs in $WORK"
  psql_admin -c "CREATE DATABASE $BENCH_DB"
  BENCH_RUNNING=1
  # In the background so that a signal reaches the trap at once (a foreground child
  # would finish first).
  exec {out}> >(tee "$output")
  TEE_PID=$!
  DATABASE_URL="$url" REDIS_URL="$REDIS_URL" LC_REDIS_PREFIX="$BENCH_PREFIX" \
    LC_BIN_DIR="$BIN_DIR" LC_PGBENCH="$PGBENCH" \
    "$BIN_DIR/lc-bench" --work-dir "$work" "$@" >&"$out" &
  BENCH_PID=$!
  wait "$BENCH_PID" || rc=$?
  BENCH_PID=""
  exec {out}>&-
  wait "$TEE_PID" 2>/dev/null || true
  drop_bench_data
  BENCH_RUNNING=""
  return "$rc"
}

# A quiet server: test databases left by earlier runs keep autovacuum busy. On a machine
# whose test databases are someone else's (BENCH_KEEP_TEST_DBS=1), they are left alone.
if [[ "${BENCH_KEEP_TEST_DBS:-0}" != 1 ]]; then
  lc_drop_test_databases "$PG_ADMIN_URL"
fi
rc=0
run_bench "$WORK/output.txt" "$WORK" "$@" || rc=$?
if ((HA)); then
  lc_log "starting a highly available PostgreSQL in $HA_DIR (scripts/ha.sh)"
  # ports of its own, beside a cluster of `services.sh up --ha` (56440-56442)
  LC_HA_MONITOR_PORT="${LC_HA_MONITOR_PORT:-56445}" LC_HA_PORT1="${LC_HA_PORT1:-56446}" \
    LC_HA_PORT2="${LC_HA_PORT2:-56447}" "$LC_ROOT/scripts/ha.sh" up "$HA_DIR" >/dev/null
  ADMIN_URL="$(. "$HA_DIR/env" && printf '%s' "$PG_ADMIN_URL")"
  # a work directory of its own: lc-bench finds its handler-start logs there by name
  mkdir -p "$WORK/ha-run"
  run_bench "$WORK/output-ha.txt" "$WORK/ha-run" "$@" || rc=$?
  # The failover time: kill -9 of the primary, until a write commits on the new one.
  probe_url="$(. "$HA_DIR/env" && printf '%s' "$DATABASE_URL")"
  "$PSQL" -X -q "$probe_url" -c "CREATE TABLE failover_probe (at TIMESTAMPTZ DEFAULT now())"
  "$LC_ROOT/scripts/ha.sh" wait-sync "$HA_DIR" 60
  killed_at="$(date +%s%N)"
  killed_node="$("$LC_ROOT/scripts/ha.sh" kill-primary "$HA_DIR")"
  until "$PSQL" -X -q "$probe_url" -c "INSERT INTO failover_probe DEFAULT VALUES" >/dev/null 2>&1; do
    sleep 0.02
    (($(date +%s%N) - killed_at < 120000000000)) || lc_die "no commit within 120 s of the kill"
  done
  failover_ms=$((($(date +%s%N) - killed_at) / 1000000))
  python3 - "$WORK/output.txt" "$WORK/output-ha.txt" "$failover_ms" "$killed_node" <<'PY'
import json, sys

def figures(path):
    line = next(l for l in open(path) if l.startswith("BENCH_JSON "))
    flat = {}
    def walk(prefix, value):
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else key, inner)
        elif isinstance(value, list):
            for i, inner in enumerate(value):
                walk(f"{prefix}[{i}]", inner)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[prefix] = value
    data = json.loads(line[len("BENCH_JSON "):])
    for skip in ("settings", "verification", "leftovers", "notes", "version", "bench_seconds"):
        data.pop(skip, None)
    walk("", data)
    return flat

single, ha = figures(sys.argv[1]), figures(sys.argv[2])
wanted = ("per_s", "_ms", "p50", "p90", "p99", "max")
print()
print("single server vs HA (synchronous standby, scripts/ha.sh)")
print(f"{'figure':<60} {'single':>12} {'HA':>12} {'HA/single':>10}")
for key in single:
    if key in ha and any(w in key for w in wanted):
        a, b = single[key], ha[key]
        ratio = f"{b / a:.2f}" if a else "-"
        print(f"{key:<60} {a:>12} {b:>12} {ratio:>10}")
print(f"failover: kill -9 of node {sys.argv[4]} (the primary) to the first commit on the new primary: {sys.argv[3]} ms")
PY
fi
lc_log "output kept in $WORK/output.txt"
exit "$rc"
