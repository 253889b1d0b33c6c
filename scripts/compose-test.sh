#!/usr/bin/env bash
# The compose test: LaunchControl as operators run it (compose.local.yaml, images built
# here from Debian's packages), scaled up and down under load.
#
#   1. builds the images (scripts/image.sh): PostgreSQL, Redis and a base with python3 for
#      the docker-machine stand-in are kept between runs; launchcontrol:compose-test (the
#      debug binaries of `cargo build --workspace --bins`) is made anew and removed at the end;
#   2. starts PostgreSQL, Redis, the migrations and 2 workers; enqueues 5,000 jobs, a 5-node
#      docker-machine deployment (the stand-in, driver none, on the engine's socket that the
#      workers mount) and a 2-node one on the `local` provider (that socket);
#   3. scales to 4 workers while they run, `docker kill`s one, scales down to 1 (SIGTERM:
#      what runs past the grace period is handed back), then back to 2;
#   4. checks: every job terminal exactly once and none lost, the deployments deployed, then
#      torn down with no machine or container left; `lc workers` saw the replicas come and go; no
#      worker connection left loopback;
#   5. stops everything and removes its containers, volumes and the test image, pass or fail.
#
# Needs the services of scripts/services.sh (the Docker engine, the lc-busybox payload image)
# and the binaries of `cargo build --workspace --bins` (LC_BINARIES, default
# ${CARGO_TARGET_DIR:-target}/debug). Exit status 0 when every check passes.
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [[ -f "$LC_HOME/env" ]]; then
  # shellcheck disable=SC1091
  . "$LC_HOME/env"
fi
[[ "${DOCKER_HOST:-}" == unix://* ]] ||
  lc_die "DOCKER_HOST must be the engine's unix socket (run scripts/services.sh up)"

ensure_pkg docker-compose docker-compose
ensure_pkg ss iproute2

PROJECT=lccomposetest
TAG=compose-test
JOBS="${LC_COMPOSE_JOBS:-5000}"
# Two deployments: 5 nodes through docker-machine (the stand-in, driver none, on the engine
# socket the workers mount) and 2 on the `local` provider (the workers' own engine).
DEPLOYMENTS=(compose-test-fleet compose-test-local)
declare -A NODES=([compose-test-fleet]=5 [compose-test-local]=2)
declare -A PROVIDER=(
  [compose-test-fleet]="{kind: docker-machine, driver: none, driver_flags: {url: 'unix:///var/run/docker.sock'}}"
  [compose-test-local]="{kind: local}"
)
PG_PORT="${LC_COMPOSE_PG_PORT:-57401}"
REDIS_PORT="${LC_COMPOSE_REDIS_PORT:-57402}"
BINARIES="${LC_BINARIES:-${CARGO_TARGET_DIR:-$LC_ROOT/target}/debug}"
LC="$BINARIES/lc"
[[ -x "$LC" && -x "$BINARIES/lc-worker" ]] ||
  lc_die "$BINARIES/lc and lc-worker missing: run cargo build --workspace --bins first"

export LC_APP_IMAGE="launchcontrol:$TAG"
export LC_BUILD_STAGE="launchcontrol-$TAG-$$"
export LC_BASE_IMAGE=launchcontrol-base:bookworm-standin
export LC_POSTGRES_IMAGE=launchcontrol-postgres:bookworm
export LC_REDIS_IMAGE=launchcontrol-redis:bookworm
export LC_COMPOSE_PG_PORT="$PG_PORT" LC_COMPOSE_REDIS_PORT="$REDIS_PORT"
export LC_ENGINE_SOCKET="${DOCKER_HOST#unix://}"
export LC_DOCKER_MACHINE_BIN="$LC_ROOT/tests/docker-machine/docker-machine"
LC_SECRET_KEY="$(head -c 32 /dev/urandom | base64)"
export LC_SECRET_KEY
# Short timings, so that a killed worker's jobs come back within seconds and a SIGTERM'd
# worker hands back what runs past 3 s.
export LC_COMPOSE_CONCURRENCY=25 LC_COMPOSE_LEASE=5s LC_COMPOSE_HEARTBEAT=1s
export LC_COMPOSE_GRACE=3s LC_COMPOSE_STOP_GRACE=20s
# The host's lc talks to the stack's database and Redis.
export DATABASE_URL="postgresql://lc@127.0.0.1:$PG_PORT/launchcontrol"
export REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
unset LC_REDIS_PREFIX

WORK="$(mktemp -d "${TMPDIR:-/tmp}/lc-compose-test.XXXXXX")"
compose() {
  docker-compose -p "$PROJECT" -f "$LC_ROOT/compose.local.yaml" "$@"
}
PSQL="$(command -v psql || find /usr/lib/postgresql -path '*/bin/psql' 2>/dev/null | sort -V | tail -n1)"
[[ -x "$PSQL" ]] || lc_die "psql not found (scripts/services.sh up installs PostgreSQL)"
sql() {
  "$PSQL" -X -A -t -q -v ON_ERROR_STOP=1 "$DATABASE_URL" -c "$1"
}

FAILED=0
check() {
  local what="$1"
  shift
  if "$@"; then
    lc_log "ok: $what"
  else
    lc_warn "FAILED: $what"
    FAILED=1
  fi
}

cleanup() {
  local rc=$?
  set +e
  if ((rc != 0 || FAILED != 0)); then
    lc_warn "worker logs of the failed run (last lines each):"
    for c in $(docker ps -a --filter "label=com.docker.compose.project=$PROJECT" \
      --filter "label=com.docker.compose.service=worker" --format '{{.Names}}'); do
      docker logs --tail 15 "$c" 2>&1 | sed "s/^/[$c] /" >&2
    done
  fi
  compose down --volumes --remove-orphans --timeout 20 >/dev/null 2>&1
  # payload containers of the deployment, should a failed run have left any
  for name in "${DEPLOYMENTS[@]}"; do
    docker ps -aq --filter "label=lc.deployment.name=$name" | xargs -r docker rm -f >/dev/null 2>&1
  done
  docker image rm -f "$LC_APP_IMAGE" >/dev/null 2>&1
  rm -rf "$WORK"
  local left
  left="$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT")$(docker volume ls -q --filter "label=com.docker.compose.project=$PROJECT")$(docker network ls -q --filter "label=com.docker.compose.project=$PROJECT")"
  if [[ -n "$left" ]]; then
    lc_warn "FAILED: containers, volumes or networks of $PROJECT are left: $left"
    rc=1
  elif docker image inspect "$LC_APP_IMAGE" >/dev/null 2>&1; then
    lc_warn "FAILED: $LC_APP_IMAGE is left"
    rc=1
  elif [[ -n "$(docker image ls -q --filter "label=lc.build-stage=$LC_BUILD_STAGE")" ]]; then
    lc_warn "FAILED: the build stage's image of $LC_APP_IMAGE is left"
    rc=1
  else
    lc_log "nothing left: no container, volume, network of $PROJECT, no $LC_APP_IMAGE or its build stage"
  fi
  ((rc == 0 && FAILED != 0)) && rc=1
  if ((rc == 0)); then
    lc_log "compose test passed in $((SECONDS - START))s"
  else
    lc_warn "compose test FAILED after $((SECONDS - START))s"
  fi
  exit "$rc"
}
START=$SECONDS
trap cleanup EXIT

for port in "$PG_PORT" "$REDIS_PORT"; do
  if ss -Htln "sport = :$port" | grep -q .; then
    lc_die "127.0.0.1:$port is taken; set LC_COMPOSE_PG_PORT / LC_COMPOSE_REDIS_PORT"
  fi
done
# A run that was killed may have left its stack: start clean.
compose down --volumes --remove-orphans --timeout 5 >/dev/null 2>&1 || true

# ---- 1. images --------------------------------------------------------------------------
lc_log "building images (kept between runs: $LC_BASE_IMAGE, $LC_POSTGRES_IMAGE, $LC_REDIS_IMAGE)"
images_started=$SECONDS
# mmdebstrap mostly waits on downloads: the three Debian images build side by side.
LC_BASE_PACKAGES=ca-certificates,curl,python3,openssl "$LC_ROOT/scripts/image.sh" base >"$WORK/base.out" 2>"$WORK/base.log" &
base_pid=$!
"$LC_ROOT/scripts/image.sh" postgres >"$WORK/pg.out" 2>"$WORK/pg.log" &
pg_pid=$!
"$LC_ROOT/scripts/image.sh" redis >"$WORK/redis.out" 2>"$WORK/redis.log" &
redis_pid=$!
for job in base:$base_pid pg:$pg_pid redis:$redis_pid; do
  if ! wait "${job#*:}"; then
    cat "$WORK/${job%%:*}.log" >&2
    lc_die "building the ${job%%:*} image failed"
  fi
  lc_log "image ${job%%:*}: $(cat "$WORK/${job%%:*}.out")"
done
LC_BINARIES="$BINARIES" "$LC_ROOT/scripts/image.sh" launchcontrol >/dev/null
lc_log "images ready in $((SECONDS - images_started))s"

# ---- 2. the stack, the load ---------------------------------------------------------------
phase_started=$SECONDS
compose up -d --scale worker=2 >"$WORK/up.log" 2>&1 || {
  cat "$WORK/up.log" >&2
  lc_die "docker-compose up failed"
}
lc_log "stack up (PostgreSQL, Redis, migrations, 2 workers) in $((SECONDS - phase_started))s"

# workers_where STATUS: how many workers `lc workers --json` lists with that status.
workers_where() {
  "$LC" workers --json --dead-after 4s --log-format json 2>/dev/null |
    python3 -c 'import json,sys; print(sum(1 for w in json.load(sys.stdin) if w["status"] == sys.argv[1]))' "$1"
}
# wait_for WHAT SECONDS COMMAND...: until COMMAND succeeds, or fail the test.
wait_for() {
  local what="$1" limit="$2" deadline
  shift 2
  deadline=$((SECONDS + limit))
  until "$@"; do
    ((SECONDS < deadline)) || lc_die "gave up waiting ${limit}s for $what"
    sleep 0.5
  done
}
live_workers_are() { [[ "$(workers_where live)" == "$1" ]]; }
healthy_workers_are() {
  [[ "$(docker ps --filter "label=com.docker.compose.project=$PROJECT" \
    --filter "label=com.docker.compose.service=worker" --filter health=healthy -q | wc -l)" == "$1" ]]
}
succeeded_at_least() {
  [[ "$(sql "SELECT count(*) FROM jobs WHERE kind = 'sleep' AND state = 'succeeded'")" -ge "$1" ]]
}

wait_for "2 live workers" 60 live_workers_are 2
wait_for "2 healthy workers (GET /readyz)" 60 healthy_workers_are 2

# Mostly short jobs; one in fifty runs 8 s, past the 3 s grace, so that a SIGTERM'd worker
# has jobs to hand back. In ten rounds, so that long ones run all along.
for _ in $(seq 10); do
  "$LC" enqueue sleep --payload '{"ms": 150, "record": true}' --count $((JOBS / 10 - JOBS / 500)) >/dev/null
  "$LC" enqueue sleep --payload '{"ms": 8000, "record": true}' --count $((JOBS / 500)) >/dev/null
done
for name in "${DEPLOYMENTS[@]}"; do
  cat >"$WORK/$name.yaml" <<SPEC
name: $name
owner: compose-test
nodes: ${NODES[$name]}
provider: ${PROVIDER[$name]}
payload:
  image: ${LC_IMAGE:-lc-busybox:latest}
  command: [sleep, '3600']
  network_mode: none
  pull: never
timeouts: {stop: 1s}
SPEC
  "$LC" deploy create "$WORK/$name.yaml" >/dev/null
done
lc_log "enqueued $JOBS sleep jobs, a ${NODES[compose-test-fleet]}-node docker-machine deployment and a ${NODES[compose-test-local]}-node local one"

# ---- 3. scale under load ------------------------------------------------------------------
wait_for "the first 1,000 jobs" 120 succeeded_at_least 1000
compose up -d --no-recreate --scale worker=4 >/dev/null 2>&1
wait_for "4 live workers" 60 live_workers_are 4
"$LC" workers >"$WORK/workers-4.txt"
lc_log "scaled up to 4 workers; lc workers:"
cat "$WORK/workers-4.txt" >&2
wait_for "4 healthy workers" 60 healthy_workers_are 4

# Every TCP connection of the stack's processes (they share the host's network) stays on
# loopback.
pids="$(for c in $(docker ps -q --filter "label=com.docker.compose.project=$PROJECT"); do
  docker top "$c" -o pid | tail -n +2
done | tr '\n' ',' | sed 's/,$//')"
offloop="$(ss -Htnp | grep -E "pid=($(tr ',' '|' <<<"$pids"))," |
  awk '{print $4, $5}' | grep -vE '^127\.0\.0\.1:[0-9]+ 127\.0\.0\.1:[0-9]+$' || true)"
check "every connection of the stack is on loopback" test -z "$offloop"
[[ -z "$offloop" ]] || printf '%s\n' "$offloop" >&2

wait_for "2,000 jobs" 120 succeeded_at_least 2000
victim="$(docker ps --filter "label=com.docker.compose.project=$PROJECT" \
  --filter "label=com.docker.compose.service=worker" --format '{{.Names}}' | sort | tail -n1)"
docker kill "$victim" >/dev/null
lc_log "killed $victim (SIGKILL): its jobs come back when their 5 s leases expire"
stopping_started=$SECONDS
compose up -d --no-recreate --scale worker=1 >/dev/null 2>&1
lc_log "scaled down to 1 worker (SIGTERM) in $((SECONDS - stopping_started))s"
wait_for "1 live worker" 60 live_workers_are 1
"$LC" workers --dead-after 4s >"$WORK/workers-1.txt"
cat "$WORK/workers-1.txt" >&2
check "lc workers lists the 2 SIGTERM'd replicas as stopped" \
  test "$(workers_where stopped)" -ge 2
check "lc workers lists the killed replica as gone" test "$(workers_where gone)" -ge 1
compose up -d --no-recreate --scale worker=2 >/dev/null 2>&1
wait_for "2 live workers again" 60 live_workers_are 2

# ---- 4. checks ----------------------------------------------------------------------------
all_terminal() {
  [[ "$(sql "SELECT count(*) FROM jobs WHERE state NOT IN ('succeeded', 'dead', 'cancelled')")" == 0 ]]
}
# deployment_is NAME STATE
deployment_is() {
  [[ "$(sql "SELECT state FROM deployments WHERE name = '$1'")" == "$2" ]]
}
for name in "${DEPLOYMENTS[@]}"; do
  wait_for "$name to be deployed" 180 deployment_is "$name" deployed
  containers="$(docker ps -q --filter "label=lc.deployment.name=$name" --filter status=running | wc -l)"
  check "$name: ${NODES[$name]} payload containers run (got $containers)" \
    test "$containers" -eq "${NODES[$name]}"
done
for name in "${DEPLOYMENTS[@]}"; do
  "$LC" deploy teardown "$name" --wait >/dev/null
done
wait_for "every job terminal" 240 all_terminal

check "$JOBS sleep jobs all succeeded" \
  test "$(sql "SELECT count(*) FROM jobs WHERE kind = 'sleep' AND state = 'succeeded'")" -eq "$JOBS"
# A teardown cancels its deployment's scheduled jobs: the next health check, and the
# provisioning watchdog (a delayed `provision` with `watch`) when the teardown comes
# within a lease of the deployment being deployed. Those are the jobs that may end
# cancelled.
not_succeeded="$(sql "SELECT kind || ' ' || state || ' ' || count(*) FROM jobs
  WHERE state <> 'succeeded'
    AND NOT (state = 'cancelled'
             AND (kind = 'health_check' OR (kind = 'provision' AND payload ? 'watch')))
  GROUP BY kind, state")"
check "every job succeeded (but the health checks and watchdogs the teardowns cancelled)" \
  test -z "$not_succeeded"
[[ -z "$not_succeeded" ]] || printf '%s\n' "$not_succeeded" >&2
check "every job reached its terminal state exactly once" test "$(sql "
  SELECT count(*) FROM jobs j WHERE (SELECT count(*) FROM job_events e
    WHERE e.job_id = j.id AND e.to_state IN ('succeeded', 'dead', 'cancelled')) <> 1")" -eq 0
check "every sleep job recorded its effect in the attempt that succeeded" test "$(sql "
  SELECT count(*) FROM jobs j WHERE j.kind = 'sleep' AND NOT EXISTS
    (SELECT 1 FROM job_effects f WHERE f.job_id = j.id AND f.attempt = j.attempt)")" -eq 0
released="$(sql "SELECT count(*) FROM job_events WHERE message = 'released on shutdown'")"
expired="$(sql "SELECT count(*) FROM job_events WHERE message LIKE 'lease expired:%'")"
lc_log "jobs handed back by SIGTERM'd workers: $released; taken back from the killed one after its lease: $expired"
check "the SIGTERM'd workers handed back the jobs that ran past the grace period" test "$released" -ge 1
check "the killed worker's jobs came back when their leases expired" test "$expired" -ge 1
for name in "${DEPLOYMENTS[@]}"; do
  check "$name is torn down" deployment_is "$name" torn_down
  check "$name: no machine is left in the database" test "$(sql "
    SELECT count(*) FROM machines m JOIN deployments d ON d.id = m.deployment_id
    WHERE d.name = '$name' AND m.state <> 'removed'")" -eq 0
  check "$name: no payload container is left" \
    test "$(docker ps -aq --filter "label=lc.deployment.name=$name" | wc -l)" -eq 0
done
check "lc workers showed 4 replicas live at once" test "$(grep -c ' live ' "$WORK/workers-4.txt")" -eq 4
seen="$(sql "SELECT count(*) FROM workers")"
lc_log "workers registered over the run: $seen (2 at the start, 2 more at the scale-up, 1 more when scaled back to 2)"
check "at least 5 worker processes took part" test "$seen" -ge 5

# ---- 5. stop: the EXIT trap removes everything -----------------------------------------
