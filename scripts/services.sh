#!/usr/bin/env bash
# Local services for LaunchControl's tests and demos: Redis, PostgreSQL and a Docker engine.
#
#   scripts/services.sh up      install what is missing, start what is not running, build the
#                               test image, write $LC_HOME/env
#   scripts/services.sh down    stop what `up` started (by pid files); data is kept
#   scripts/services.sh status  what is running
#   scripts/services.sh env     print $LC_HOME/env
#
# A service is skipped when the caller already provides it: REDIS_URL, DATABASE_URL (and
# PG_ADMIN_URL), DOCKER_HOST (when `docker info` answers there). Values equal to what this
# script writes into $LC_HOME/env count as ours, so `. .lc/env; services.sh down; services.sh up`
# restarts the local services instead of "reusing" stopped ones.
# Everything listens on 127.0.0.1 only; dockerd runs without bridge and iptables.
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REDIS_PORT=56379
PG_PORT=55432
OUR_REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
OUR_DATABASE_URL="postgres://lc@127.0.0.1:$PG_PORT/launchcontrol"
OUR_PG_ADMIN_URL="postgres://lc@127.0.0.1:$PG_PORT/postgres"
DEFAULT_IMAGE="lc-busybox:latest"

REDIS_DIR="$LC_HOME/redis"
REDIS_PIDFILE="$REDIS_DIR/redis.pid"
REDIS_LOG="$REDIS_DIR/redis.log"

PG_DATA="$LC_HOME/pg"
PG_LOG="$LC_HOME/postgres.log"
PG_SOCK_DIR="$(lc_sock_dir "$LC_HOME/pgsock" ".s.PGSQL.$PG_PORT.lock")"

DOCKER_DIR="$LC_HOME/docker"
DOCKER_PIDFILE="$DOCKER_DIR/dockerd.pid"
DOCKER_LOG="$DOCKER_DIR/dockerd.log"
# containerd puts its sockets under the exec root: keep both short enough for sun_path
DOCKER_RUN_DIR="$(lc_sock_dir "$DOCKER_DIR" "exec/containerd/containerd.sock.ttrpc")"
DOCKER_SOCK="$DOCKER_RUN_DIR/docker.sock"
DOCKER_EXEC_ROOT="$DOCKER_RUN_DIR/exec"
OUR_DOCKER_HOST="unix://$DOCKER_SOCK"
SYSTEM_DOCKER_HOST="unix:///var/run/docker.sock"

ENV_FILE="$LC_HOME/env"

# What the caller gave us (values equal to our own defaults do not count).
caller_value() {
  local value="$1" ours="$2"
  if [[ -n "$value" && "$value" != "$ours" ]]; then
    printf '%s\n' "$value"
  fi
}
CALLER_REDIS_URL="$(caller_value "${REDIS_URL:-}" "$OUR_REDIS_URL")"
CALLER_DATABASE_URL="$(caller_value "${DATABASE_URL:-}" "$OUR_DATABASE_URL")"
CALLER_PG_ADMIN_URL="$(caller_value "${PG_ADMIN_URL:-}" "$OUR_PG_ADMIN_URL")"
CALLER_DOCKER_HOST="$(caller_value "${DOCKER_HOST:-}" "$OUR_DOCKER_HOST")"
LC_IMAGE="${LC_IMAGE:-$DEFAULT_IMAGE}"

SUMMARY=()

# ---------------------------------------------------------------------------- redis

redis_ping() {
  [[ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]]
}

redis_apply_aof() {
  if [[ "${LC_REDIS_AOF:-0}" == 1 ]]; then
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" config set appendfsync everysec >/dev/null
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" config set appendonly yes >/dev/null
  fi
}

redis_up() {
  if [[ -n "$CALLER_REDIS_URL" ]]; then
    REDIS_URL_OUT="$CALLER_REDIS_URL"
    if command -v redis-cli >/dev/null 2>&1 && [[ "$(redis-cli -u "$CALLER_REDIS_URL" ping 2>/dev/null)" != PONG ]]; then
      lc_warn "caller's REDIS_URL=$CALLER_REDIS_URL does not answer PING"
    fi
    SUMMARY+=("redis     $CALLER_REDIS_URL (given by the caller, not started)")
    return 0
  fi
  REDIS_URL_OUT="$OUR_REDIS_URL"
  ensure_pkg redis-server redis-server
  ensure_pkg redis-cli redis-tools
  mkdir -p "$REDIS_DIR"

  local pid
  if pid="$(pid_alive "$REDIS_PIDFILE" redis-server)"; then
    local i
    for ((i = 0; i < 20; i++)); do
      redis_ping && break
      sleep 0.5
    done
    redis_ping || lc_die "redis-server (pid $pid) runs but does not answer on 127.0.0.1:$REDIS_PORT; see $REDIS_LOG"
    redis_apply_aof
    SUMMARY+=("redis     $OUR_REDIS_URL (running, pid $pid, reused)")
    return 0
  fi
  if redis_ping; then
    redis_apply_aof
    SUMMARY+=("redis     $OUR_REDIS_URL (already answering, not started by services.sh: reused)")
    return 0
  fi

  rm -f "$REDIS_PIDFILE"
  local args=(--port "$REDIS_PORT" --bind 127.0.0.1 --save '' --daemonize yes
    --dir "$REDIS_DIR" --pidfile "$REDIS_PIDFILE" --logfile "$REDIS_LOG")
  if [[ "${LC_REDIS_AOF:-0}" == 1 ]]; then
    args+=(--appendonly yes --appendfsync everysec)
  else
    args+=(--appendonly no)
  fi
  lc_log "starting redis-server on 127.0.0.1:$REDIS_PORT"
  redis-server "${args[@]}"
  local i
  for ((i = 0; i < 40; i++)); do
    redis_ping && break
    sleep 0.25
  done
  if ! redis_ping; then
    tail -n 20 "$REDIS_LOG" >&2 || true
    lc_die "redis-server did not answer on 127.0.0.1:$REDIS_PORT within 10 s (log: $REDIS_LOG)"
  fi
  pid="$(pid_alive "$REDIS_PIDFILE" redis-server || echo '?')"
  SUMMARY+=("redis     $OUR_REDIS_URL (started, pid $pid)")
}

redis_down() {
  local pid i
  if pid="$(pid_alive "$REDIS_PIDFILE" redis-server)"; then
    lc_log "stopping redis-server (pid $pid)"
    kill -TERM "$pid"
    for ((i = 0; i < 80; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.25
    done
    kill -0 "$pid" 2>/dev/null && lc_warn "redis-server (pid $pid) still running after 20 s"
    rm -f "$REDIS_PIDFILE"
    echo "redis     stopped (pid $pid)"
  else
    echo "redis     not running from $LC_HOME (nothing to stop)"
  fi
}

# ---------------------------------------------------------------------------- postgres

pg_find_bindir() {
  local dirs=() d best=""
  shopt -s nullglob
  dirs=(/usr/lib/postgresql/*/bin)
  shopt -u nullglob
  for d in "${dirs[@]}"; do
    [[ -x "$d/initdb" ]] || continue
    if [[ -z "$best" ]] || [[ "$(printf '%s\n%s\n' "$best" "$d" | sort -V | tail -n1)" == "$d" ]]; then
      best="$d"
    fi
  done
  [[ -n "$best" ]] && printf '%s\n' "$best"
}

as_pg() {
  if [[ "$(id -u)" -eq 0 ]]; then
    (cd / && runuser -u postgres -- "$@")
  else
    (cd / && "$@")
  fi
}

pg_ready() {
  "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -t 3 >/dev/null 2>&1
}

psql_admin() {
  "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres "$@"
}

# The postgres user must be able to reach $LC_HOME (it refuses to run as root).
pg_make_reachable() {
  [[ "$(id -u)" -eq 0 ]] || return 0
  local d="$LC_HOME" chain=()
  while [[ "$d" != "/" && -n "$d" ]]; do
    chain=("$d" "${chain[@]}")
    d="$(dirname "$d")"
  done
  for d in "${chain[@]}"; do
    if ! runuser -u postgres -- test -x "$d" 2>/dev/null; then
      lc_log "chmod o+x $d (the postgres user must traverse it to reach $PG_DATA)"
      chmod o+x "$d"
    fi
  done
}

pg_prepare_dirs() {
  mkdir -p "$PG_DATA" "$PG_SOCK_DIR"
  touch "$PG_LOG"
  if [[ "$(id -u)" -eq 0 ]]; then
    chown postgres:postgres "$PG_DATA" "$PG_SOCK_DIR" "$PG_LOG"
    # a short socket dir under /tmp/lc-UID-HASH: its parent must be traversable too
    chmod o+x "$(dirname "$PG_SOCK_DIR")"
  fi
  chmod 700 "$PG_DATA"
  chmod 755 "$PG_SOCK_DIR"
}

pg_sql_quote() {
  printf "'%s'" "${1//\'/\'\'}"
}

# Writes $PG_DATA/launchcontrol.conf; returns 0 when it changed.
pg_write_conf() {
  local conf="$PG_DATA/launchcontrol.conf" tmp
  tmp="$(mktemp)"
  cat >"$tmp" <<EOF
# written by scripts/services.sh: local test settings (CockroachDB-like isolation)
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = $(pg_sql_quote "$PG_SOCK_DIR")
default_transaction_isolation = 'serializable'
synchronous_commit = on
fsync = on
max_connections = 300
shared_buffers = 256MB
# Serializable isolation tracks reads with predicate locks. With the defaults, a statement
# touching more than 32 rows of a table escalates to a lock on the whole table, and then
# unrelated claims and completions abort each other with 40001. Keep them row-level.
max_pred_locks_per_transaction = 1024
max_pred_locks_per_relation = 8192
max_pred_locks_per_page = 64
EOF
  if [[ -f "$conf" ]] && cmp -s "$tmp" "$conf"; then
    rm -f "$tmp"
    return 1
  fi
  mv "$tmp" "$conf"
  chmod 600 "$conf"
  [[ "$(id -u)" -eq 0 ]] && chown postgres:postgres "$conf"
  if ! grep -q "^include_if_exists = 'launchcontrol.conf'" "$PG_DATA/postgresql.conf"; then
    printf "\n# LaunchControl test settings\ninclude_if_exists = 'launchcontrol.conf'\n" >>"$PG_DATA/postgresql.conf"
  fi
  return 0
}

pg_initdb() {
  if [[ -s "$PG_DATA/PG_VERSION" ]]; then
    return 0
  fi
  if [[ -n "$(ls -A "$PG_DATA" 2>/dev/null)" ]]; then
    lc_warn "$PG_DATA holds a half-made cluster (no PG_VERSION): removing it"
    find "$PG_DATA" -mindepth 1 -delete
  fi
  lc_log "initdb $PG_DATA"
  as_pg "$PGBIN/initdb" -D "$PG_DATA" --auth=trust -U postgres --encoding=UTF8 --locale=C >>"$PG_LOG.initdb" 2>&1 ||
    { tail -n 20 "$PG_LOG.initdb" >&2; lc_die "initdb failed (log: $PG_LOG.initdb)"; }
}

pg_ensure_role_db() {
  if [[ "$(psql_admin -tAc "select 1 from pg_roles where rolname = 'lc'")" != 1 ]]; then
    lc_log "creating role lc"
    psql_admin -c "create role lc superuser login"
  fi
  if [[ "$(psql_admin -tAc "select 1 from pg_database where datname = 'launchcontrol'")" != 1 ]]; then
    lc_log "creating database launchcontrol"
    psql_admin -c "create database launchcontrol owner lc"
  fi
}

pg_up() {
  if [[ -n "$CALLER_DATABASE_URL" ]]; then
    DATABASE_URL_OUT="$CALLER_DATABASE_URL"
    PG_ADMIN_URL_OUT="${CALLER_PG_ADMIN_URL:-$(pg_admin_from "$CALLER_DATABASE_URL")}"
    SUMMARY+=("postgres  $CALLER_DATABASE_URL (given by the caller, not started)")
    return 0
  fi
  DATABASE_URL_OUT="$OUR_DATABASE_URL"
  PG_ADMIN_URL_OUT="${CALLER_PG_ADMIN_URL:-$OUR_PG_ADMIN_URL}"

  PGBIN="$(pg_find_bindir || true)"
  if [[ -z "$PGBIN" ]]; then
    ensure_pkg '/usr/lib/postgresql/*/bin/initdb' postgresql
    PGBIN="$(pg_find_bindir)"
  fi
  ensure_pkg runuser util-linux
  if [[ "$(id -u)" -eq 0 ]] && ! id postgres >/dev/null 2>&1; then
    lc_die "the postgres system user is missing (it comes with the postgresql package)"
  fi

  local pid
  if pid="$(pid_alive "$PG_DATA/postmaster.pid" postgres)"; then
    local changed=0 i
    pg_write_conf && changed=1
    for ((i = 0; i < 60; i++)); do
      pg_ready && break
      sleep 0.5
    done
    pg_ready || lc_die "postgres (pid $pid) runs but does not answer on 127.0.0.1:$PG_PORT; see $PG_LOG"
    if ((changed)); then
      lc_log "postgres settings changed: restarting"
      as_pg "$PGBIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -m fast -w -t 60 restart >/dev/null
      pid="$(pid_alive "$PG_DATA/postmaster.pid" postgres || echo '?')"
    fi
    pg_ensure_role_db
    SUMMARY+=("postgres  $OUR_DATABASE_URL (running, pid $pid, reused)")
    return 0
  fi
  if pg_ready; then
    pg_ensure_role_db
    SUMMARY+=("postgres  $OUR_DATABASE_URL (already answering, not started by services.sh: reused)")
    return 0
  fi

  pg_make_reachable
  pg_prepare_dirs
  pg_initdb
  pg_write_conf || true
  # a postmaster.pid left by a crash whose pid now belongs to another process blocks startup
  if [[ -f "$PG_DATA/postmaster.pid" ]] && ! pid_alive "$PG_DATA/postmaster.pid" postgres >/dev/null; then
    rm -f "$PG_DATA/postmaster.pid"
  fi
  lc_log "starting postgres on 127.0.0.1:$PG_PORT"
  if ! as_pg "$PGBIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t 60 start >/dev/null; then
    tail -n 20 "$PG_LOG" >&2 || true
    lc_die "postgres did not start (log: $PG_LOG)"
  fi
  pg_ready || lc_die "postgres started but does not answer on 127.0.0.1:$PG_PORT (log: $PG_LOG)"
  pg_ensure_role_db
  pid="$(pid_alive "$PG_DATA/postmaster.pid" postgres || echo '?')"
  SUMMARY+=("postgres  $OUR_DATABASE_URL (started, pid $pid)")
}

# postgres://u@h:p/db?x -> postgres://u@h:p/postgres?x
pg_admin_from() {
  local url="$1" query=""
  if [[ "$url" == *\?* ]]; then
    query="?${url#*\?}"
    url="${url%%\?*}"
  fi
  printf '%s/postgres%s\n' "${url%/*}" "$query"
}

pg_down() {
  local pid
  PGBIN="$(pg_find_bindir || true)"
  if [[ -n "$PGBIN" ]] && pid="$(pid_alive "$PG_DATA/postmaster.pid" postgres)"; then
    lc_log "stopping postgres (pid $pid)"
    as_pg "$PGBIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 stop >/dev/null
    echo "postgres  stopped (pid $pid)"
  else
    echo "postgres  not running from $PG_DATA (nothing to stop)"
  fi
}

# ---------------------------------------------------------------------------- docker

docker_answers() {
  DOCKER_HOST="$1" timeout 20 docker info >/dev/null 2>&1
}

docker_up() {
  ensure_pkg docker docker.io
  ensure_pkg dockerd docker.io

  if [[ -n "$CALLER_DOCKER_HOST" ]]; then
    if docker_answers "$CALLER_DOCKER_HOST"; then
      DOCKER_HOST_OUT="$CALLER_DOCKER_HOST"
      SUMMARY+=("docker    $CALLER_DOCKER_HOST (given by the caller, not started)")
      return 0
    fi
    lc_warn "caller's DOCKER_HOST=$CALLER_DOCKER_HOST does not answer: using a local dockerd instead"
  elif [[ -S /var/run/docker.sock ]] && docker_answers "$SYSTEM_DOCKER_HOST"; then
    DOCKER_HOST_OUT="$SYSTEM_DOCKER_HOST"
    SUMMARY+=("docker    $SYSTEM_DOCKER_HOST (system engine, reused)")
    return 0
  fi
  DOCKER_HOST_OUT="$OUR_DOCKER_HOST"

  local pid i
  if pid="$(pid_alive "$DOCKER_PIDFILE" dockerd)"; then
    for ((i = 0; i < 60; i++)); do
      docker_answers "$OUR_DOCKER_HOST" && break
      sleep 1
    done
    docker_answers "$OUR_DOCKER_HOST" ||
      lc_die "dockerd (pid $pid) runs but does not answer on $OUR_DOCKER_HOST; see $DOCKER_LOG"
    SUMMARY+=("docker    $OUR_DOCKER_HOST (running, pid $pid, reused)")
    return 0
  fi

  mkdir -p "$DOCKER_DIR/data" "$DOCKER_EXEC_ROOT" "$DOCKER_RUN_DIR"
  chmod 700 "$DOCKER_DIR/data" "$DOCKER_EXEC_ROOT"
  rm -f "$DOCKER_PIDFILE"
  lc_log "starting dockerd on $OUR_DOCKER_HOST (log: $DOCKER_LOG)"
  setsid dockerd \
    --bridge=none --iptables=false --ip6tables=false \
    --data-root "$DOCKER_DIR/data" \
    --exec-root "$DOCKER_EXEC_ROOT" \
    --pidfile "$DOCKER_PIDFILE" \
    -H "$OUR_DOCKER_HOST" \
    </dev/null >>"$DOCKER_LOG" 2>&1 &
  local started=$! deadline=$((SECONDS + 60))
  while ((SECONDS < deadline)); do
    if docker_answers "$OUR_DOCKER_HOST"; then
      break
    fi
    if ! kill -0 "$started" 2>/dev/null; then
      break
    fi
    sleep 1
  done
  if ! docker_answers "$OUR_DOCKER_HOST"; then
    echo "---- last lines of $DOCKER_LOG ----" >&2
    tail -n 30 "$DOCKER_LOG" >&2 || true
    lc_die "dockerd did not answer on $OUR_DOCKER_HOST within 60 s"
  fi
  pid="$(pid_alive "$DOCKER_PIDFILE" dockerd || echo "$started")"
  SUMMARY+=("docker    $OUR_DOCKER_HOST (started, pid $pid)")
}

docker_down() {
  local pid i
  if pid="$(pid_alive "$DOCKER_PIDFILE" dockerd)"; then
    lc_log "stopping dockerd (pid $pid); its containers stop with it"
    kill -TERM "$pid"
    for ((i = 0; i < 90; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 1
    done
    if kill -0 "$pid" 2>/dev/null; then
      lc_warn "dockerd (pid $pid) still running after 90 s"
    else
      echo "docker    stopped (pid $pid)"
    fi
  else
    echo "docker    not running from $DOCKER_DIR (nothing to stop)"
  fi
}

# ---------------------------------------------------------------------------- commands

# export NAME=VALUE, single-quoted only when VALUE holds characters the shell would interpret
env_line() {
  local name="$1" value="$2"
  if [[ "$value" =~ ^[A-Za-z0-9_@%+=:,./-]*$ ]]; then
    printf 'export %s=%s\n' "$name" "$value"
  else
    printf "export %s='%s'\n" "$name" "${value//\'/\'\\\'\'}"
  fi
}

write_env() {
  local tmp="$ENV_FILE.tmp.$$"
  {
    echo "# written by scripts/services.sh up; source it: . $ENV_FILE"
    env_line DATABASE_URL "$DATABASE_URL_OUT"
    env_line REDIS_URL "$REDIS_URL_OUT"
    env_line DOCKER_HOST "$DOCKER_HOST_OUT"
    env_line LC_IMAGE "$LC_IMAGE"
    env_line PG_ADMIN_URL "$PG_ADMIN_URL_OUT"
  } >"$tmp"
  mv "$tmp" "$ENV_FILE"
}

# Serialise up/down. flock -o keeps the lock in the flock process only: the daemons started
# below must not inherit the lock's file descriptor (they would hold the lock forever).
lock() {
  if [[ "${LC_SERVICES_LOCKED:-}" != "$LC_HOME" ]]; then
    mkdir -p "$LC_HOME"
    local rc=0
    LC_SERVICES_LOCKED="$LC_HOME" flock -o -w 900 -E 75 "$LC_HOME/.services.lock" bash "$0" "$@" || rc=$?
    if [[ "$rc" -eq 75 ]]; then
      lc_die "another services.sh kept $LC_HOME/.services.lock for 15 minutes"
    fi
    exit "$rc"
  fi
}

cmd_up() {
  lock up
  redis_up
  pg_up
  docker_up
  export DOCKER_HOST="$DOCKER_HOST_OUT" LC_IMAGE
  local image_state
  image_state="$("$LC_ROOT/scripts/image.sh")"
  SUMMARY+=("image     $LC_IMAGE ($image_state)")
  write_env
  SUMMARY+=("env       $ENV_FILE")
  printf '%s\n' "${SUMMARY[@]}"
}

cmd_down() {
  lock down
  docker_down
  pg_down
  redis_down
}

cmd_status() {
  local rc=0 pid url
  # Redis
  if pid="$(pid_alive "$REDIS_PIDFILE" redis-server)"; then
    echo "redis     running, pid $pid (started by services.sh), 127.0.0.1:$REDIS_PORT"
  elif command -v redis-cli >/dev/null 2>&1 && redis_ping; then
    echo "redis     answering on 127.0.0.1:$REDIS_PORT (not started by services.sh)"
  else
    echo "redis     not running from $LC_HOME"
  fi
  # PostgreSQL
  PGBIN="$(pg_find_bindir || true)"
  if pid="$(pid_alive "$PG_DATA/postmaster.pid" postgres)"; then
    echo "postgres  running, pid $pid (started by services.sh), 127.0.0.1:$PG_PORT, data $PG_DATA"
  elif [[ -n "$PGBIN" ]] && pg_ready; then
    echo "postgres  answering on 127.0.0.1:$PG_PORT (not started by services.sh)"
  else
    echo "postgres  not running from $PG_DATA"
  fi
  # Docker
  if pid="$(pid_alive "$DOCKER_PIDFILE" dockerd)"; then
    echo "docker    running, pid $pid (started by services.sh), $OUR_DOCKER_HOST"
  else
    echo "docker    no dockerd started from $DOCKER_DIR"
  fi
  # What the env file points at
  if [[ -f "$ENV_FILE" ]]; then
    local DATABASE_URL REDIS_URL DOCKER_HOST LC_IMAGE PG_ADMIN_URL
    # shellcheck disable=SC1090
    . "$ENV_FILE"
    if [[ "$(redis-cli -u "$REDIS_URL" ping 2>/dev/null)" == PONG ]]; then
      echo "env       REDIS_URL=$REDIS_URL answers"
    else
      echo "env       REDIS_URL=$REDIS_URL does NOT answer"; rc=1
    fi
    url="$DATABASE_URL"
    if [[ -n "$PGBIN" ]] && "$PGBIN/pg_isready" -q -d "$url" -t 3 >/dev/null 2>&1; then
      echo "env       DATABASE_URL=$url answers"
    else
      echo "env       DATABASE_URL=$url does NOT answer"; rc=1
    fi
    if docker_answers "$DOCKER_HOST"; then
      echo "env       DOCKER_HOST=$DOCKER_HOST answers"
    else
      echo "env       DOCKER_HOST=$DOCKER_HOST does NOT answer"; rc=1
    fi
  else
    echo "env       $ENV_FILE missing (run scripts/services.sh up)"; rc=1
  fi
  return "$rc"
}

cmd_env() {
  [[ -f "$ENV_FILE" ]] || lc_die "$ENV_FILE missing (run scripts/services.sh up)"
  cat "$ENV_FILE"
}

usage() {
  echo "usage: $0 up|down|status|env" >&2
  exit 2
}

[[ $# -eq 1 ]] || usage
case "$1" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) cmd_env ;;
  *) usage ;;
esac
