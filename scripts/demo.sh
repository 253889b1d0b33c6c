#!/usr/bin/env bash
# The main command: LaunchControl end to end on this machine.
#
#   1. local services (Redis, PostgreSQL, a Docker engine, the lc-busybox image)
#   2. release build of `lc` and `lc-worker`, `lc migrate`
#   3. two `lc-worker` processes in the background (logs in .lc/demo-worker-N.log)
#   4. a few jobs through the queue (`lc enqueue`, `lc jobs wait`)
#   4b. the HTTP API: `lc serve` in the background, its URL and an admin token printed,
#      a job enqueued with curl and read back (log in .lc/demo-serve.log)
#   5. a 3-node deployment on the `local` provider (examples/demo.yaml: busybox httpd per
#      node on 127.0.0.1:18081-18083), shown running (`lc deploy show`, `docker ps`, curl)
#   6. a repair: one node's container killed (`docker kill`), started again by the
#      deployment's health check (every 2 s in the demo spec), shown in `lc deploy show`
#   7. teardown, and proof that nothing is left
#   8. an expiry: the same spec with `--ttl 8s`, torn down by itself
#   9. the workers stopped with SIGTERM; timings printed
#
# Safe to run again: a demo deployment left by an interrupted run is torn down first, and
# the workers this script starts are stopped however it exits.
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SPEC="$LC_ROOT/examples/demo.yaml"
NAME=demo
PORTS=(18081 18082 18083)
WORKER_PIDS=()
SERVE_PID=""

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

stop_serve() {
  if [[ -n "$SERVE_PID" ]]; then
    kill -TERM "$SERVE_PID" 2>/dev/null || true
    wait "$SERVE_PID" 2>/dev/null || true
    SERVE_PID=""
  fi
}

stop_workers() {
  local pid
  for pid in "${WORKER_PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${WORKER_PIDS[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  WORKER_PIDS=()
}
trap 'stop_serve; stop_workers' EXIT
trap 'exit 130' INT TERM

T_START="$(now)"

ensure_pkg curl curl

step "services: Redis, PostgreSQL, Docker engine, test image"
T0="$(now)"
"$LC_ROOT/scripts/services.sh" up
# shellcheck disable=SC1091
. "$LC_HOME/env"
T_SERVICES="$(since "$T0")"

if ! command -v cargo >/dev/null 2>&1 && [[ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]]; then
  PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi
command -v cargo >/dev/null 2>&1 || lc_die "cargo not found (install Rust: https://rustup.rs)"

step "build: cargo build --release (lc, lc-worker)"
T0="$(now)"
(cd "$LC_ROOT" && cargo build --release --quiet --bin lc --bin lc-worker)
T_BUILD="$(since "$T0")"
LC="${CARGO_TARGET_DIR:-$LC_ROOT/target}/release/lc"
WORKER="${CARGO_TARGET_DIR:-$LC_ROOT/target}/release/lc-worker"

step "lc migrate"
"$LC" migrate

step "two workers"
mkdir -p "$LC_HOME/machines"
for n in 1 2; do
  log="$LC_HOME/demo-worker-$n.log"
  "$WORKER" --concurrency 8 --machines-dir "$LC_HOME/machines" --grace 20s >"$log" 2>&1 &
  WORKER_PIDS+=("$!")
  echo "lc-worker $n: pid $!, log $log"
done
sleep 1
for pid in "${WORKER_PIDS[@]}"; do
  kill -0 "$pid" 2>/dev/null || lc_die "worker $pid exited at start; see $LC_HOME/demo-worker-*.log"
done
"$LC" workers --recent 1s

# A demo deployment from an interrupted earlier run goes first.
if "$LC" deploy ls --json | grep -q "\"name\": \"$NAME\""; then
  step "tearing down the demo deployment left by an earlier run"
  "$LC" deploy teardown "$NAME" --wait --timeout 2m
fi
for port in "${PORTS[@]}"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    lc_die "port $port is in use; the demo's nodes listen on ${PORTS[*]}"
  fi
done

step "jobs: 20 noop + 5 sleep, then wait for all"
T0="$(now)"
mapfile -t IDS < <("$LC" enqueue noop --count 20; "$LC" enqueue sleep --payload '{"ms": 300}' --count 5)
"$LC" jobs wait --timeout 2m "${IDS[@]}" | awk '{ print $2 }' | sort | uniq -c
T_JOBS="$(since "$T0")"

step "HTTP API: lc serve, a token, a job enqueued with curl"
T0="$(now)"
SERVE_LOG="$LC_HOME/demo-serve.log"
SERVE_OUT="$LC_HOME/demo-serve.out"
: >"$SERVE_OUT"
"$LC" serve --listen "${LC_DEMO_LISTEN:-127.0.0.1:0}" >"$SERVE_OUT" 2>"$SERVE_LOG" &
SERVE_PID="$!"
URL=""
for _ in $(seq 1 100); do
  URL="$(sed -n 's/^lc serve: listening on //p' "$SERVE_OUT")"
  [[ -n "$URL" ]] && break
  kill -0 "$SERVE_PID" 2>/dev/null || lc_die "lc serve exited at start; see $SERVE_LOG"
  sleep 0.1
done
[[ -n "$URL" ]] || lc_die "lc serve did not say where it listens; see $SERVE_LOG"
TOKEN="$("$LC" tokens create --owner demo --admin --expires 1d 2>/dev/null)"
echo "dashboard:   $URL/"
echo "API:         $URL/v1/  (document: $URL/openapi.json)"
echo "admin token: $TOKEN  (expires in a day; lc tokens revoke to end it sooner)"
JOB="$(curl -fsS -X POST "$URL/v1/jobs" -H "Authorization: Bearer $TOKEN" \
  -H 'Content-Type: application/json' -H "Idempotency-Key: demo-$(date +%s)" \
  -d '{"kind": "sleep", "payload": {"ms": 200}}' | sed -n 's/.*"id":"\([^"]*\)".*/\1/p')"
[[ -n "$JOB" ]] || lc_die "enqueue through the API failed; see $SERVE_LOG"
echo "curl POST $URL/v1/jobs -> job $JOB"
"$LC" jobs wait --timeout 1m "$JOB"
curl -fsS "$URL/v1/jobs/$JOB" -H "Authorization: Bearer $TOKEN" | head -c 300; echo ...
T_HTTP="$(since "$T0")"

step "deployment: $NAME, 3 nodes on the local provider ($SPEC)"
T0="$(now)"
"$LC" deploy create "$SPEC" --wait --timeout 5m
T_DEPLOY="$(since "$T0")"
"$LC" deploy show "$NAME"

step "running: containers labelled lc.deployment.name=$NAME, and each node's page"
docker ps --filter "label=lc.deployment.name=$NAME" --format 'table {{.Names}}\t{{.Status}}\t{{.Command}}'
for port in "${PORTS[@]}"; do
  printf '127.0.0.1:%s -> %s\n' "$port" "$(curl -fsS --max-time 5 "http://127.0.0.1:$port/")"
done

step "repair: docker kill lc-$NAME-2-g1; the health check starts it again"
VICTIM="lc-$NAME-2-g1"
docker kill "$VICTIM" >/dev/null
T0="$(now)"
state=""
for _ in $(seq 1 120); do
  state="$(docker inspect -f '{{.State.Status}}' "$VICTIM")"
  printf '  %5ss after the kill: %s is %s\n' "$(since "$T0")" "$VICTIM" "$state"
  [[ "$state" == running ]] && break
  sleep 0.5
done
[[ "$state" == running ]] || lc_die "$VICTIM was not started again within 60s"
T_REPAIR="$(since "$T0")"
printf '127.0.0.1:%s -> %s\n' "${PORTS[1]}" "$(curl -fsS --max-time 5 "http://127.0.0.1:${PORTS[1]}/")"
# The check that found it recorded why; the next one finds it healthy again.
"$LC" deploy check "$NAME" --wait --timeout 1m >/dev/null
"$LC" deploy show "$NAME" --events 0 | sed -n '/^health /,/^$/p'
"$LC" deploy show "$NAME" --events 40 | grep -E "container_health|deploying|deployed" || true

step "teardown"
T0="$(now)"
"$LC" deploy teardown "$NAME" --wait --timeout 5m
T_TEARDOWN="$(since "$T0")"

step "nothing left"
left="$(docker ps -a -q --filter "label=lc.deployment.name=$NAME")"
if [[ -n "$left" ]]; then
  docker ps -a --filter "label=lc.deployment.name=$NAME"
  lc_die "containers are left"
fi
echo "docker ps -a --filter label=lc.deployment.name=$NAME: no containers"
for port in "${PORTS[@]}"; do
  if curl -fsS --max-time 2 "http://127.0.0.1:$port/" >/dev/null 2>&1; then
    lc_die "127.0.0.1:$port still answers"
  fi
done
echo "ports ${PORTS[*]}: closed"
"$LC" deploy show "$NAME" --events 6

step "expiry: $NAME again with --ttl 8s, torn down by itself"
"$LC" deploy create "$SPEC" --ttl 8s --wait --timeout 5m
T0="$(now)"
"$LC" deploy ls | grep -E "^(NAME|$NAME )" || "$LC" deploy ls
state=""
for _ in $(seq 1 120); do
  state="$("$LC" deploy show "$NAME" --events 0 | awk '$1 == "state" { print $2; exit }')"
  [[ "$state" == torn_down ]] && break
  sleep 1
done
[[ "$state" == torn_down ]] || lc_die "$NAME was not torn down by its expiry (state: $state)"
T_EXPIRY="$(since "$T0")"
if [[ -n "$(docker ps -a -q --filter "label=lc.deployment.name=$NAME")" ]]; then
  lc_die "containers are left after the expiry"
fi
echo "torn down by its expiry $T_EXPIRY s after it was deployed; no containers left"
"$LC" deploy show "$NAME" --events 4

step "stopping lc serve and the workers (SIGTERM)"
T0="$(now)"
stop_serve
stop_workers
T_STOP="$(since "$T0")"
echo "workers stopped"

step "timings (seconds)"
printf '  %-44s %6s\n' \
  "services up" "$T_SERVICES" \
  "release build" "$T_BUILD" \
  "25 jobs enqueued and finished" "$T_JOBS" \
  "lc serve up, a job through curl, finished" "$T_HTTP" \
  "3-node deployment: create -> deployed" "$T_DEPLOY" \
  "killed container -> running again" "$T_REPAIR" \
  "teardown -> nothing left" "$T_TEARDOWN" \
  "deployed with --ttl 8s -> torn down" "$T_EXPIRY" \
  "two workers stopped" "$T_STOP" \
  "total" "$(since "$T_START")"
