#!/usr/bin/env bash
# Local services for LaunchControl's tests and demos: Redis, PostgreSQL, a Docker engine, a
# second Docker engine with TLS on tcp://127.0.0.1 (and the fleet CA that signed its
# certificates), a container registry holding the test image, and the secret key that encrypts
# machine state.
#
#   scripts/services.sh up      install what is missing, start what is not running, build the
#                               test image, push it to the registry, write $LC_HOME/env
#   scripts/services.sh up --ha the same with a highly available PostgreSQL instead of the single
#                               server: scripts/ha.sh in $LC_HOME/ha (a pg_auto_failover monitor
#                               and two nodes, synchronous standby, automatic failover; ports
#                               56440-56442); $LC_HOME/env then holds a multi-host DATABASE_URL
#   scripts/services.sh down [SERVICE...]
#                               stop what `up` started (by pid files); data is kept. SERVICE:
#                               redis, postgres, ha, docker, docker-tls, registry (default: all)
#   scripts/services.sh status  what is running
#   scripts/services.sh env     print $LC_HOME/env
#
# A service is skipped when the caller already provides it: REDIS_URL, DATABASE_URL (and
# PG_ADMIN_URL), DOCKER_HOST (when `docker info` answers there), LC_TLS_DOCKER_HOST (with
# LC_TLS_CA_CERT, LC_TLS_CA_KEY, LC_TLS_CLIENT_CERT, LC_TLS_CLIENT_KEY), LC_REGISTRY (and
# LC_REGISTRY_IMAGE), LC_SECRET_KEY. Values equal to what this script writes into $LC_HOME/env
# count as ours, so `. .lc/env; services.sh down; services.sh up` restarts the local services
# instead of "reusing" stopped ones.
# Everything listens on 127.0.0.1 only; dockerd runs without bridge and iptables; nothing is
# pulled from a public registry.
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REDIS_PORT=56379
PG_PORT=55432
TLS_DOCKER_PORT=52376
REGISTRY_PORT=55000
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

SECRET_KEY_FILE="$LC_HOME/secret-key"

TLS_DIR="$LC_HOME/tls"
OUR_TLS_CA_CERT="$TLS_DIR/ca.pem"
OUR_TLS_CA_KEY="$TLS_DIR/ca-key.pem"
TLS_SERVER_CERT="$TLS_DIR/server.pem"
TLS_SERVER_KEY="$TLS_DIR/server-key.pem"
OUR_TLS_CLIENT_CERT="$TLS_DIR/client.pem"
OUR_TLS_CLIENT_KEY="$TLS_DIR/client-key.pem"

TLS_DOCKER_DIR="$LC_HOME/docker-tls"
TLS_DOCKER_PIDFILE="$TLS_DOCKER_DIR/dockerd.pid"
TLS_DOCKER_LOG="$TLS_DOCKER_DIR/dockerd.log"
TLS_DOCKER_RUN_DIR="$(lc_sock_dir "$TLS_DOCKER_DIR" "exec/containerd/containerd.sock.ttrpc")"
TLS_DOCKER_SOCK="$TLS_DOCKER_RUN_DIR/docker.sock"
TLS_DOCKER_EXEC_ROOT="$TLS_DOCKER_RUN_DIR/exec"
# digest of the registry image that the TLS engine was seen to pull
TLS_DOCKER_PULL_MARK="$TLS_DOCKER_DIR/pull-checked"
OUR_TLS_DOCKER_HOST="tcp://127.0.0.1:$TLS_DOCKER_PORT"

REGISTRY_DIR="$LC_HOME/registry"
REGISTRY_CONFIG="$REGISTRY_DIR/config.yml"
REGISTRY_PIDFILE="$REGISTRY_DIR/registry.pid"
REGISTRY_LOG="$REGISTRY_DIR/registry.log"
REGISTRY_BIN=/usr/bin/docker-registry
OUR_REGISTRY="127.0.0.1:$REGISTRY_PORT"
REGISTRY_REPO="lc-busybox"
REGISTRY_TAG="1"

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
CALLER_TLS_DOCKER_HOST="$(caller_value "${LC_TLS_DOCKER_HOST:-}" "$OUR_TLS_DOCKER_HOST")"
CALLER_REGISTRY="$(caller_value "${LC_REGISTRY:-}" "$OUR_REGISTRY")"
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

# ---------------------------------------------------------------------------- secret key

# The key that encrypts machine state (docker-machine stores) in the database: 32 random bytes,
# base64. Made once in $LC_HOME/secret-key (mode 0600); a caller's LC_SECRET_KEY wins.
secret_up() {
  if [[ ! -s "$SECRET_KEY_FILE" ]]; then
    mkdir -p "$LC_HOME"
    local tmp="$SECRET_KEY_FILE.tmp.$$"
    (umask 077 && head -c 32 /dev/urandom | base64 -w0 >"$tmp" && echo >>"$tmp")
    mv "$tmp" "$SECRET_KEY_FILE"
    lc_log "made $SECRET_KEY_FILE"
  fi
  chmod 600 "$SECRET_KEY_FILE"
  local ours
  ours="$(head -n1 "$SECRET_KEY_FILE")"
  if [[ -n "${LC_SECRET_KEY:-}" && "$LC_SECRET_KEY" != "$ours" ]]; then
    SECRET_KEY_OUT="$LC_SECRET_KEY"
    if [[ "$(printf '%s' "$LC_SECRET_KEY" | base64 -d 2>/dev/null | wc -c)" -ne 32 ]]; then
      lc_warn "caller's LC_SECRET_KEY is not 32 bytes in base64"
    fi
    SUMMARY+=("secret    LC_SECRET_KEY (given by the caller)")
  else
    SECRET_KEY_OUT="$ours"
    SUMMARY+=("secret    LC_SECRET_KEY from $SECRET_KEY_FILE")
  fi
}

# ---------------------------------------------------------------------------- fleet CA, certificates

# openssl config with the extensions of the CA, the engine's server certificate and the client
tls_openssl_conf() {
  cat <<'CONF'
# written by scripts/services.sh
[req]
distinguished_name = dn
prompt = no
[dn]
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign, digitalSignature
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
CONF
}

tls_serial() {
  printf '0x%s\n' "$(openssl rand -hex 16)"
}

# tls_key FILE: a new RSA 2048 key in PKCS#8 PEM, mode 0600
tls_key() {
  (umask 077 && openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1" 2>/dev/null)
  chmod 600 "$1"
}

# tls_cert_ok CERT KEY: CERT verifies against our CA and belongs to KEY
tls_cert_ok() {
  local cert="$1" key="$2"
  [[ -s "$cert" && -s "$key" ]] || return 1
  openssl verify -CAfile "$OUR_TLS_CA_CERT" "$cert" >/dev/null 2>&1 || return 1
  [[ "$(openssl x509 -in "$cert" -noout -pubkey 2>/dev/null)" == "$(openssl pkey -in "$key" -pubout 2>/dev/null)" ]]
}

# tls_sign SECTION CN CERT KEY: a new key and a certificate signed by the fleet CA (10 years)
tls_sign() {
  local ext="$1" cn="$2" cert="$3" key="$4" conf csr
  conf="$TLS_DIR/openssl.cnf"
  csr="$TLS_DIR/$ext.csr"
  tls_key "$key"
  openssl req -new -config "$conf" -key "$key" -subj "/O=LaunchControl/CN=$cn" -out "$csr"
  openssl x509 -req -in "$csr" -CA "$OUR_TLS_CA_CERT" -CAkey "$OUR_TLS_CA_KEY" \
    -set_serial "$(tls_serial)" -days 3650 -sha256 \
    -extfile "$conf" -extensions "$ext" -out "$cert.tmp" 2>/dev/null
  mv "$cert.tmp" "$cert"
  rm -f "$csr"
}

# True when every certificate and key is older than the stamp of the last check (saves the
# ~0.2 s that the openssl checks take on every `up`).
tls_certs_checked() {
  local stamp="$TLS_DIR/.checked" f
  [[ -f "$stamp" ]] || return 1
  for f in "$OUR_TLS_CA_CERT" "$OUR_TLS_CA_KEY" "$TLS_SERVER_CERT" "$TLS_SERVER_KEY" \
    "$OUR_TLS_CLIENT_CERT" "$OUR_TLS_CLIENT_KEY"; do
    [[ -s "$f" && ! "$f" -nt "$stamp" ]] || return 1
  done
}

# Makes what is missing or does not verify; returns 0 when something changed (a running
# engine must then be restarted to load it).
tls_certs_up() {
  tls_certs_checked && return 1
  ensure_pkg openssl openssl
  mkdir -p "$TLS_DIR"
  chmod 755 "$TLS_DIR"
  tls_openssl_conf >"$TLS_DIR/openssl.cnf"
  local changed=1
  if ! [[ -s "$OUR_TLS_CA_CERT" && -s "$OUR_TLS_CA_KEY" ]] ||
    ! openssl x509 -in "$OUR_TLS_CA_CERT" -noout -checkend 86400 >/dev/null 2>&1; then
    lc_log "making the fleet CA in $TLS_DIR"
    tls_key "$OUR_TLS_CA_KEY"
    openssl req -x509 -new -config "$TLS_DIR/openssl.cnf" -extensions ca \
      -key "$OUR_TLS_CA_KEY" -subj "/O=LaunchControl/CN=LaunchControl fleet CA" \
      -set_serial "$(tls_serial)" -days 3650 -sha256 -out "$OUR_TLS_CA_CERT.tmp"
    mv "$OUR_TLS_CA_CERT.tmp" "$OUR_TLS_CA_CERT"
    changed=0
  fi
  if ((changed == 0)) || ! tls_cert_ok "$TLS_SERVER_CERT" "$TLS_SERVER_KEY"; then
    lc_log "making the engine's server certificate (127.0.0.1, localhost)"
    tls_sign server localhost "$TLS_SERVER_CERT" "$TLS_SERVER_KEY"
    changed=0
  fi
  if ((changed == 0)) || ! tls_cert_ok "$OUR_TLS_CLIENT_CERT" "$OUR_TLS_CLIENT_KEY"; then
    lc_log "making the client certificate"
    tls_sign client lc-client "$OUR_TLS_CLIENT_CERT" "$OUR_TLS_CLIENT_KEY"
    changed=0
  fi
  chmod 600 "$OUR_TLS_CA_KEY" "$TLS_SERVER_KEY" "$OUR_TLS_CLIENT_KEY"
  chmod 644 "$OUR_TLS_CA_CERT" "$TLS_SERVER_CERT" "$OUR_TLS_CLIENT_CERT"
  touch "$TLS_DIR/.checked"
  return "$changed"
}

# ---------------------------------------------------------------------------- docker with TLS

# tls_docker HOST CA CERT KEY ARGS...: the docker CLI against a TLS engine, whatever the
# caller's DOCKER_* variables say (2 minutes at most)
tls_docker() {
  local host="$1" ca="$2" cert="$3" key="$4"
  shift 4
  timeout 120 env -u DOCKER_HOST -u DOCKER_CONTEXT -u DOCKER_TLS_VERIFY -u DOCKER_CERT_PATH \
    docker --tlsverify --tlscacert "$ca" --tlscert "$cert" --tlskey "$key" -H "$host" "$@"
}

tls_docker_ours() {
  tls_docker "$OUR_TLS_DOCKER_HOST" "$OUR_TLS_CA_CERT" "$OUR_TLS_CLIENT_CERT" "$OUR_TLS_CLIENT_KEY" "$@"
}

# tls_docker_answers HOST CA CERT KEY
tls_docker_answers() {
  timeout 20 env -u DOCKER_HOST -u DOCKER_CONTEXT -u DOCKER_TLS_VERIFY -u DOCKER_CERT_PATH \
    docker --tlsverify --tlscacert "$2" --tlscert "$3" --tlskey "$4" -H "$1" info >/dev/null 2>&1
}

tls_docker_ours_answers() {
  tls_docker_answers "$OUR_TLS_DOCKER_HOST" "$OUR_TLS_CA_CERT" "$OUR_TLS_CLIENT_CERT" "$OUR_TLS_CLIENT_KEY"
}

tls_docker_up() {
  if [[ -n "$CALLER_TLS_DOCKER_HOST" ]]; then
    TLS_DOCKER_HOST_OUT="$CALLER_TLS_DOCKER_HOST"
    TLS_CA_CERT_OUT="${LC_TLS_CA_CERT:-}"
    TLS_CA_KEY_OUT="${LC_TLS_CA_KEY:-}"
    TLS_CLIENT_CERT_OUT="${LC_TLS_CLIENT_CERT:-}"
    TLS_CLIENT_KEY_OUT="${LC_TLS_CLIENT_KEY:-}"
    if [[ -z "$TLS_CA_CERT_OUT" || -z "$TLS_CA_KEY_OUT" || -z "$TLS_CLIENT_CERT_OUT" || -z "$TLS_CLIENT_KEY_OUT" ]]; then
      lc_warn "caller's LC_TLS_DOCKER_HOST=$CALLER_TLS_DOCKER_HOST comes without all of LC_TLS_CA_CERT, LC_TLS_CA_KEY, LC_TLS_CLIENT_CERT, LC_TLS_CLIENT_KEY"
    elif ! tls_docker_answers "$CALLER_TLS_DOCKER_HOST" "$TLS_CA_CERT_OUT" "$TLS_CLIENT_CERT_OUT" "$TLS_CLIENT_KEY_OUT"; then
      lc_warn "caller's LC_TLS_DOCKER_HOST=$CALLER_TLS_DOCKER_HOST does not answer docker info with the caller's certificates"
    fi
    SUMMARY+=("docker-tls $CALLER_TLS_DOCKER_HOST (given by the caller, not started)")
    return 0
  fi
  TLS_DOCKER_HOST_OUT="$OUR_TLS_DOCKER_HOST"
  TLS_CA_CERT_OUT="$OUR_TLS_CA_CERT"
  TLS_CA_KEY_OUT="$OUR_TLS_CA_KEY"
  TLS_CLIENT_CERT_OUT="$OUR_TLS_CLIENT_CERT"
  TLS_CLIENT_KEY_OUT="$OUR_TLS_CLIENT_KEY"
  ensure_pkg dockerd docker.io

  local certs_changed=1 pid i
  tls_certs_up && certs_changed=0
  if pid="$(pid_alive "$TLS_DOCKER_PIDFILE" dockerd)"; then
    if ((certs_changed == 0)); then
      lc_log "certificates changed: restarting the TLS dockerd"
      tls_docker_down >/dev/null
    else
      local ok=0
      for ((i = 0; i < 60; i++)); do
        tls_docker_ours_answers && ok=1 && break
        sleep 1
      done
      ((ok)) ||
        lc_die "dockerd (pid $pid) runs but does not answer on $OUR_TLS_DOCKER_HOST with TLS; see $TLS_DOCKER_LOG"
      SUMMARY+=("docker-tls $OUR_TLS_DOCKER_HOST (running, pid $pid, reused)")
      return 0
    fi
  fi

  mkdir -p "$TLS_DOCKER_DIR/data" "$TLS_DOCKER_EXEC_ROOT" "$TLS_DOCKER_RUN_DIR"
  chmod 700 "$TLS_DOCKER_DIR/data" "$TLS_DOCKER_EXEC_ROOT"
  rm -f "$TLS_DOCKER_PIDFILE" "$TLS_DOCKER_PULL_MARK"
  lc_log "starting dockerd with TLS on $OUR_TLS_DOCKER_HOST (log: $TLS_DOCKER_LOG)"
  setsid dockerd \
    --bridge=none --iptables=false --ip6tables=false \
    --data-root "$TLS_DOCKER_DIR/data" \
    --exec-root "$TLS_DOCKER_EXEC_ROOT" \
    --pidfile "$TLS_DOCKER_PIDFILE" \
    --tlsverify --tlscacert "$OUR_TLS_CA_CERT" \
    --tlscert "$TLS_SERVER_CERT" --tlskey "$TLS_SERVER_KEY" \
    -H "$OUR_TLS_DOCKER_HOST" \
    -H "unix://$TLS_DOCKER_SOCK" \
    </dev/null >>"$TLS_DOCKER_LOG" 2>&1 &
  local started=$! deadline=$((SECONDS + 60))
  while ((SECONDS < deadline)); do
    tls_docker_ours_answers && break
    kill -0 "$started" 2>/dev/null || break
    sleep 0.25
  done
  if ! tls_docker_ours_answers; then
    echo "---- last lines of $TLS_DOCKER_LOG ----" >&2
    tail -n 30 "$TLS_DOCKER_LOG" >&2 || true
    lc_die "dockerd did not answer on $OUR_TLS_DOCKER_HOST with TLS within 60 s"
  fi
  pid="$(pid_alive "$TLS_DOCKER_PIDFILE" dockerd || echo "$started")"
  SUMMARY+=("docker-tls $OUR_TLS_DOCKER_HOST (started, pid $pid)")
}

tls_docker_down() {
  local pid i
  if pid="$(pid_alive "$TLS_DOCKER_PIDFILE" dockerd)"; then
    lc_log "stopping the TLS dockerd (pid $pid); its containers stop with it"
    kill -TERM "$pid"
    for ((i = 0; i < 360; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.25
    done
    if kill -0 "$pid" 2>/dev/null; then
      lc_warn "TLS dockerd (pid $pid) still running after 90 s"
    else
      echo "docker-tls stopped (pid $pid)"
    fi
  else
    echo "docker-tls not running from $TLS_DOCKER_DIR (nothing to stop)"
  fi
}

# ---------------------------------------------------------------------------- registry

registry_answers() {
  curl -fsS -m 5 -o /dev/null "http://$1/v2/" 2>/dev/null
}

# Debian's docker-registry starts a registry on :5000 (every address) from its init script at
# install time, and enables it at boot. Install it with service starts denied (policy-rc.d),
# then make sure the packaged service is disabled and stopped: we run our own.
registry_install() {
  if [[ ! -x "$REGISTRY_BIN" ]]; then
    local made_policy=0 rc=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
      lc_as_root sh -c 'printf "#!/bin/sh\n# written by LaunchControl scripts/services.sh while installing docker-registry\nexit 101\n" >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d'
      made_policy=1
    fi
    ensure_deb docker-registry || rc=$?
    if ((made_policy)); then
      lc_as_root rm -f /usr/sbin/policy-rc.d
    fi
    ((rc == 0)) || lc_die "installing docker-registry failed"
    [[ -x "$REGISTRY_BIN" ]] || lc_die "installed docker-registry but $REGISTRY_BIN is missing"
    if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1; then
      lc_as_root systemctl disable --now docker-registry.service >/dev/null 2>&1 || true
    fi
    # update-rc.d disables both the init script and the systemd unit
    if [[ -x /etc/init.d/docker-registry ]] && command -v update-rc.d >/dev/null 2>&1; then
      lc_as_root update-rc.d docker-registry disable >/dev/null 2>&1 || true
    fi
    if command -v deb-systemd-helper >/dev/null 2>&1; then
      lc_as_root deb-systemd-helper disable docker-registry.service >/dev/null 2>&1 || true
    fi
  fi
  # the packaged service, started some other way: stop it
  if pid_alive /var/run/docker-registry.pid docker-registry >/dev/null ||
    { [[ -d /run/systemd/system ]] && systemctl is-active --quiet docker-registry.service 2>/dev/null; }; then
    lc_warn "the packaged docker-registry service runs (on :5000, every address): stopping it"
    if [[ -d /run/systemd/system ]]; then
      lc_as_root systemctl disable --now docker-registry.service >/dev/null 2>&1 || true
    else
      lc_as_root /etc/init.d/docker-registry stop >/dev/null 2>&1 || true
    fi
  fi
}

# Writes $REGISTRY_CONFIG; returns 0 when it changed.
registry_write_config() {
  local tmp="$REGISTRY_CONFIG.tmp.$$"
  cat >"$tmp" <<YAML
# written by scripts/services.sh: the local test registry (loopback only, no auth)
version: 0.1
log:
  level: info
  fields:
    service: registry
storage:
  filesystem:
    rootdirectory: $REGISTRY_DIR/data
  delete:
    enabled: true
http:
  addr: $OUR_REGISTRY
  headers:
    X-Content-Type-Options: [nosniff]
YAML
  if [[ -f "$REGISTRY_CONFIG" ]] && cmp -s "$tmp" "$REGISTRY_CONFIG"; then
    rm -f "$tmp"
    return 1
  fi
  mv "$tmp" "$REGISTRY_CONFIG"
  return 0
}

registry_up() {
  ensure_pkg curl curl
  if [[ -n "$CALLER_REGISTRY" ]]; then
    REGISTRY_OUT="$CALLER_REGISTRY"
    registry_answers "$CALLER_REGISTRY" || lc_warn "caller's LC_REGISTRY=$CALLER_REGISTRY does not answer on /v2/"
    SUMMARY+=("registry  $CALLER_REGISTRY (given by the caller, not started)")
    return 0
  fi
  REGISTRY_OUT="$OUR_REGISTRY"
  registry_install
  mkdir -p "$REGISTRY_DIR/data"
  local changed=1 pid i
  registry_write_config && changed=0
  if pid="$(pid_alive "$REGISTRY_PIDFILE" docker-registry)"; then
    if ((changed == 0)); then
      lc_log "registry settings changed: restarting"
      registry_down >/dev/null
    else
      for ((i = 0; i < 40; i++)); do
        registry_answers "$OUR_REGISTRY" && break
        sleep 0.25
      done
      registry_answers "$OUR_REGISTRY" ||
        lc_die "docker-registry (pid $pid) runs but does not answer on $OUR_REGISTRY; see $REGISTRY_LOG"
      SUMMARY+=("registry  $OUR_REGISTRY (running, pid $pid, reused)")
      return 0
    fi
  fi
  if registry_answers "$OUR_REGISTRY"; then
    SUMMARY+=("registry  $OUR_REGISTRY (already answering, not started by services.sh: reused)")
    return 0
  fi

  rm -f "$REGISTRY_PIDFILE"
  lc_log "starting docker-registry on $OUR_REGISTRY (log: $REGISTRY_LOG)"
  setsid "$REGISTRY_BIN" serve "$REGISTRY_CONFIG" </dev/null >>"$REGISTRY_LOG" 2>&1 &
  local started=$!
  echo "$started" >"$REGISTRY_PIDFILE"
  for ((i = 0; i < 80; i++)); do
    registry_answers "$OUR_REGISTRY" && break
    kill -0 "$started" 2>/dev/null || break
    sleep 0.1
  done
  if ! registry_answers "$OUR_REGISTRY"; then
    echo "---- last lines of $REGISTRY_LOG ----" >&2
    tail -n 20 "$REGISTRY_LOG" >&2 || true
    lc_die "docker-registry did not answer on $OUR_REGISTRY within 8 s"
  fi
  SUMMARY+=("registry  $OUR_REGISTRY (started, pid $started)")
}

registry_down() {
  local pid i
  if pid="$(pid_alive "$REGISTRY_PIDFILE" docker-registry)"; then
    lc_log "stopping docker-registry (pid $pid)"
    kill -TERM "$pid"
    for ((i = 0; i < 80; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.25
    done
    kill -0 "$pid" 2>/dev/null && lc_warn "docker-registry (pid $pid) still running after 20 s"
    rm -f "$REGISTRY_PIDFILE"
    echo "registry  stopped (pid $pid)"
  else
    echo "registry  not running from $REGISTRY_DIR (nothing to stop)"
  fi
}

# digest of REGISTRY/lc-busybox:1 as the registry serves it (empty when it has none)
registry_digest() {
  curl -fsS -m 5 -o /dev/null -D - \
    -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
    -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "http://$1/v2/$REGISTRY_REPO/manifests/$REGISTRY_TAG" 2>/dev/null |
    tr -d '\r' | sed -n 's/^[Dd]ocker-[Cc]ontent-[Dd]igest: *//p' | head -n1 || true
}

# Pushes the test image (from the first engine, DOCKER_HOST) as REGISTRY/lc-busybox:1 unless the
# registry already serves this very image; then checks once per digest that our TLS engine can
# pull it, and removes it there again: tests pull it themselves.
registry_image_up() {
  if [[ -n "$CALLER_REGISTRY" ]]; then
    REGISTRY_IMAGE_OUT="${LC_REGISTRY_IMAGE:-$CALLER_REGISTRY/$REGISTRY_REPO:$REGISTRY_TAG}"
    SUMMARY+=("reg-image $REGISTRY_IMAGE_OUT (caller's registry, not pushed)")
    return 0
  fi
  REGISTRY_IMAGE_OUT="$OUR_REGISTRY/$REGISTRY_REPO:$REGISTRY_TAG"
  local digest state
  digest="$(registry_digest "$OUR_REGISTRY")"
  if [[ -n "$digest" ]] &&
    docker image inspect --format '{{range .RepoDigests}}{{println .}}{{end}}' "$LC_IMAGE" 2>/dev/null |
    grep -qxF "$OUR_REGISTRY/$REGISTRY_REPO@$digest"; then
    state="present"
  else
    lc_log "pushing $LC_IMAGE to $REGISTRY_IMAGE_OUT"
    docker tag "$LC_IMAGE" "$REGISTRY_IMAGE_OUT"
    docker push "$REGISTRY_IMAGE_OUT" >/dev/null ||
      lc_die "docker push $REGISTRY_IMAGE_OUT failed (registry log: $REGISTRY_LOG)"
    digest="$(registry_digest "$OUR_REGISTRY")"
    [[ -n "$digest" ]] || lc_die "the registry does not serve $REGISTRY_IMAGE_OUT after the push"
    state="pushed"
  fi

  if [[ -z "$CALLER_TLS_DOCKER_HOST" && "$(cat "$TLS_DOCKER_PULL_MARK" 2>/dev/null)" != "$digest" ]]; then
    if tls_docker_ours image inspect "$REGISTRY_IMAGE_OUT" >/dev/null 2>&1; then
      # a test pulled it already: that proves the pull, and the image is the test's to remove
      state="$state; the TLS engine has it"
    else
      tls_docker_ours pull -q "$REGISTRY_IMAGE_OUT" >/dev/null ||
        lc_die "the TLS engine ($OUR_TLS_DOCKER_HOST) cannot pull $REGISTRY_IMAGE_OUT; see $TLS_DOCKER_LOG"
      tls_docker_ours image rm "$REGISTRY_IMAGE_OUT" >/dev/null ||
        lc_warn "could not remove $REGISTRY_IMAGE_OUT from the TLS engine after the pull check"
      state="$state; the TLS engine pulled it (and removed it again)"
    fi
    echo "$digest" >"$TLS_DOCKER_PULL_MARK"
  fi
  SUMMARY+=("reg-image $REGISTRY_IMAGE_OUT ($state, $digest)")
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
    env_line LC_SECRET_KEY "$SECRET_KEY_OUT"
    env_line LC_TLS_DOCKER_HOST "$TLS_DOCKER_HOST_OUT"
    env_line LC_TLS_CA_CERT "$TLS_CA_CERT_OUT"
    env_line LC_TLS_CA_KEY "$TLS_CA_KEY_OUT"
    env_line LC_TLS_CLIENT_CERT "$TLS_CLIENT_CERT_OUT"
    env_line LC_TLS_CLIENT_KEY "$TLS_CLIENT_KEY_OUT"
    env_line LC_REGISTRY "$REGISTRY_OUT"
    env_line LC_REGISTRY_IMAGE "$REGISTRY_IMAGE_OUT"
  } >"$tmp"
  chmod 600 "$tmp" # it holds LC_SECRET_KEY
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

# The HA cluster of `up --ha` (scripts/ha.sh) in place of the single server.
HA_DIR="$LC_HOME/ha"

ha_up() {
  if [[ -n "$CALLER_DATABASE_URL" ]]; then
    lc_die "up --ha starts its own PostgreSQL: unset DATABASE_URL ($CALLER_DATABASE_URL) first"
  fi
  "$LC_ROOT/scripts/ha.sh" up "$HA_DIR" >/dev/null
  DATABASE_URL_OUT="$(. "$HA_DIR/env" && printf '%s' "$DATABASE_URL")"
  PG_ADMIN_URL_OUT="$(. "$HA_DIR/env" && printf '%s' "$PG_ADMIN_URL")"
  SUMMARY+=("postgres  $DATABASE_URL_OUT (HA: pg_auto_failover in $HA_DIR, primary node $("$LC_ROOT/scripts/ha.sh" primary "$HA_DIR"))")
}

ha_down() {
  if [[ -f "$HA_DIR/ports" ]]; then
    "$LC_ROOT/scripts/ha.sh" down "$HA_DIR"
  else
    echo "ha        no cluster in $HA_DIR (nothing to stop)"
  fi
}

cmd_up() {
  local ha=0
  [[ "${1:-}" == --ha ]] && ha=1
  lock up "$@"
  redis_up
  if ((ha)); then
    ha_up
  else
    pg_up
  fi
  docker_up
  export DOCKER_HOST="$DOCKER_HOST_OUT" LC_IMAGE
  local image_state
  image_state="$("$LC_ROOT/scripts/image.sh")"
  SUMMARY+=("image     $LC_IMAGE ($image_state)")
  secret_up
  tls_docker_up
  registry_up
  registry_image_up
  write_env
  SUMMARY+=("env       $ENV_FILE")
  printf '%s\n' "${SUMMARY[@]}"
}

cmd_down() {
  lock down "$@"
  local wanted=" $* " svc
  for svc in "$@"; do
    case "$svc" in
      redis | postgres | ha | docker | docker-tls | registry) ;;
      *) usage ;;
    esac
  done
  [[ $# -eq 0 ]] && wanted=" docker-tls registry docker ha postgres redis "
  for svc in docker-tls registry docker ha postgres redis; do
    [[ "$wanted" == *" $svc "* ]] || continue
    case "$svc" in
      docker-tls) tls_docker_down ;;
      registry) registry_down ;;
      docker) docker_down ;;
      postgres) pg_down ;;
      ha) ha_down ;;
      redis) redis_down ;;
    esac
  done
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
  # The HA cluster of `up --ha`
  if [[ -f "$HA_DIR/ports" ]]; then
    if pid="$("$LC_ROOT/scripts/ha.sh" primary "$HA_DIR" 2>/dev/null)"; then
      echo "ha        cluster in $HA_DIR, primary node $pid (scripts/ha.sh status $HA_DIR)"
    else
      echo "ha        cluster in $HA_DIR not running (or without a primary)"
    fi
  fi
  # Docker
  if pid="$(pid_alive "$DOCKER_PIDFILE" dockerd)"; then
    echo "docker    running, pid $pid (started by services.sh), $OUR_DOCKER_HOST"
  else
    echo "docker    no dockerd started from $DOCKER_DIR"
  fi
  # Docker with TLS
  if pid="$(pid_alive "$TLS_DOCKER_PIDFILE" dockerd)"; then
    echo "docker-tls running, pid $pid (started by services.sh), $OUR_TLS_DOCKER_HOST (TLS, CA $OUR_TLS_CA_CERT)"
  else
    echo "docker-tls no dockerd started from $TLS_DOCKER_DIR"
  fi
  # Registry
  if pid="$(pid_alive "$REGISTRY_PIDFILE" docker-registry)"; then
    echo "registry  running, pid $pid (started by services.sh), $OUR_REGISTRY, data $REGISTRY_DIR/data"
  elif command -v curl >/dev/null 2>&1 && registry_answers "$OUR_REGISTRY"; then
    echo "registry  answering on $OUR_REGISTRY (not started by services.sh)"
  else
    echo "registry  not running from $REGISTRY_DIR"
  fi
  # What the env file points at
  if [[ -f "$ENV_FILE" ]]; then
    local DATABASE_URL REDIS_URL DOCKER_HOST LC_IMAGE PG_ADMIN_URL LC_SECRET_KEY \
      LC_TLS_DOCKER_HOST LC_TLS_CA_CERT LC_TLS_CA_KEY LC_TLS_CLIENT_CERT LC_TLS_CLIENT_KEY \
      LC_REGISTRY LC_REGISTRY_IMAGE
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
    if [[ -n "${LC_TLS_DOCKER_HOST:-}" ]] &&
      tls_docker_answers "$LC_TLS_DOCKER_HOST" "${LC_TLS_CA_CERT:-}" "${LC_TLS_CLIENT_CERT:-}" "${LC_TLS_CLIENT_KEY:-}"; then
      echo "env       LC_TLS_DOCKER_HOST=$LC_TLS_DOCKER_HOST answers (TLS, client certificate $LC_TLS_CLIENT_CERT)"
    else
      echo "env       LC_TLS_DOCKER_HOST=${LC_TLS_DOCKER_HOST:-} does NOT answer with LC_TLS_CA_CERT, LC_TLS_CLIENT_CERT, LC_TLS_CLIENT_KEY"; rc=1
    fi
    if [[ -n "${LC_REGISTRY:-}" ]] && registry_answers "$LC_REGISTRY"; then
      echo "env       LC_REGISTRY=$LC_REGISTRY answers (LC_REGISTRY_IMAGE=${LC_REGISTRY_IMAGE:-})"
    else
      echo "env       LC_REGISTRY=${LC_REGISTRY:-} does NOT answer"; rc=1
    fi
    if [[ -n "${LC_SECRET_KEY:-}" ]]; then
      echo "env       LC_SECRET_KEY set"
    else
      echo "env       LC_SECRET_KEY missing"; rc=1
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
  echo "usage: $0 up [--ha] | down [redis|postgres|ha|docker|docker-tls|registry ...] | status | env" >&2
  exit 2
}

[[ $# -ge 1 ]] || usage
case "$1" in
  up) [[ $# -eq 1 || ($# -eq 2 && "$2" == --ha) ]] || usage; shift; cmd_up "$@" ;;
  down) shift; cmd_down "$@" ;;
  status) [[ $# -eq 1 ]] || usage; cmd_status ;;
  env) [[ $# -eq 1 ]] || usage; cmd_env ;;
  *) usage ;;
esac
