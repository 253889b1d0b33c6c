#!/usr/bin/env bash
# A highly available PostgreSQL on loopback: a pg_auto_failover monitor and two PostgreSQL
# nodes (a primary and a synchronous standby) that fail over automatically.
#
#   scripts/ha.sh install           install the packages (pg_auto_failover for PostgreSQL 15)
#   scripts/ha.sh up DIR [--async]   create (first time) and start the cluster in DIR; write
#                                    DIR/env (DATABASE_URL, PG_ADMIN_URL: multi-host URLs with
#                                    target_session_attrs=read-write). --async: the standby
#                                    leaves the write quorum (commits no longer wait for it)
#   scripts/ha.sh down DIR           stop every process of the cluster in DIR (data is kept)
#   scripts/ha.sh status DIR         the monitor's view of the nodes
#   scripts/ha.sh primary DIR        the number (1 or 2) of the node that is primary now
#   scripts/ha.sh kill-primary DIR   kill -9 the primary node: its postmaster, backends and
#                                    pg_autoctl keeper (a lost host); prints its number
#   scripts/ha.sh start-node DIR N   start node N again (a node that was primary rejoins as a
#                                    standby of the new primary)
#   scripts/ha.sh wait-sync DIR [S]  wait up to S seconds (default 120) until a primary and a
#                                    standby are both healthy and replicating (state "primary"
#                                    and "secondary")
#
# Ports: LC_HA_MONITOR_PORT, LC_HA_PORT1, LC_HA_PORT2 (default 56440, 56441, 56442); they are
# recorded in DIR on creation and read from there afterwards. Everything listens on 127.0.0.1
# only; every process runs in its own session with its pid recorded in DIR, so `down` (and a
# test's guard) stop exactly these processes.
#
# The monitor is tuned to decide quickly (the defaults wait 20 s before calling a node
# unhealthy and 30 s more before promoting): a loopback cluster has no network hiccups to ride
# out, and the drill's failover time is the figure the README gives.
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PGBIN_HA=/usr/lib/postgresql/15/bin
FORMATION=default

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
  exit 2
}

ha_install() {
  ensure_pkg "$PGBIN_HA/initdb" postgresql-15
  ensure_deb postgresql-15-auto-failover
  ensure_deb pg-auto-failover-cli
  ensure_pkg pg_autoctl pg-auto-failover-cli
  ensure_pkg runuser util-linux
}

# Run as the postgres user when we are root (PostgreSQL and pg_autoctl refuse to run as root),
# with pg_autoctl's configuration and state kept inside DIR instead of ~postgres.
as_pg() {
  local envs=(XDG_CONFIG_HOME="$HA_DIR/xdg/config" XDG_DATA_HOME="$HA_DIR/xdg/data"
    PG_REGRESS_SOCK_DIR="$HA_SOCK" PGHOST="$HA_SOCK" PG_CONFIG="$PGBIN_HA/pg_config" PATH="$PGBIN_HA:$PATH")
  if [[ "$(id -u)" -eq 0 ]]; then
    (cd / && runuser -u postgres -- env "${envs[@]}" "$@")
  else
    (cd / && env "${envs[@]}" "$@")
  fi
}

ha_load_dir() {
  HA_DIR="$1"
  [[ -n "$HA_DIR" ]] || usage
  mkdir -p "$HA_DIR"
  HA_DIR="$(cd "$HA_DIR" && pwd -P)"
  HA_SOCK="$(lc_sock_dir "$HA_DIR/sock" ".s.PGSQL.65535.lock")"
  if [[ -f "$HA_DIR/ports" ]]; then
    # shellcheck disable=SC1091
    . "$HA_DIR/ports"
  else
    MONITOR_PORT="${LC_HA_MONITOR_PORT:-56440}"
    PORT1="${LC_HA_PORT1:-56441}"
    PORT2="${LC_HA_PORT2:-56442}"
  fi
  MONITOR_URL="postgres://autoctl_node@127.0.0.1:$MONITOR_PORT/pg_auto_failover?sslmode=disable"
}

node_data() { # node_data N|monitor
  printf '%s/%s\n' "$HA_DIR" "$([[ "$1" == monitor ]] && echo monitor || echo "node$1")"
}

node_port() {
  case "$1" in
    monitor) echo "$MONITOR_PORT" ;;
    1) echo "$PORT1" ;;
    2) echo "$PORT2" ;;
  esac
}

# The settings every server of the cluster gets; included last in postgresql.conf, so they win
# over pg_auto_failover's own (which listen on every address and size shared_buffers to the
# machine). The same isolation and predicate-lock sizing as scripts/services.sh's server.
write_local_conf() {
  local data="$1"
  cat >"$data/launchcontrol-ha.conf" <<EOF
# written by scripts/ha.sh: loopback only, modest memory (the serializable default
# isolation of scripts/services.sh's server is set on the role lc instead: a hot standby refuses
# it server-wide, and pg_autoctl's own sessions there would fail)
listen_addresses = '127.0.0.1'
unix_socket_directories = '$HA_SOCK'
shared_buffers = 128MB
effective_cache_size = 1GB
maintenance_work_mem = 64MB
work_mem = 8MB
max_connections = 300
max_pred_locks_per_transaction = 1024
max_pred_locks_per_relation = 8192
max_pred_locks_per_page = 64
logging_collector = off
EOF
  if ! grep -q "^include_if_exists = 'launchcontrol-ha.conf'" "$data/postgresql.conf"; then
    printf "\n# LaunchControl (scripts/ha.sh)\ninclude_if_exists = 'launchcontrol-ha.conf'\n" >>"$data/postgresql.conf"
  fi
  # the server's own: pg_rewind, rejoining an old primary, rewrites every file of PGDATA
  [[ "$(id -u)" -eq 0 ]] && chown postgres:postgres "$data/launchcontrol-ha.conf"
  return 0
}

# initdb ourselves (instead of letting pg_autoctl do it) so that the server never starts with
# pg_auto_failover's listen_addresses = '*'.
initdb_local() {
  local data="$1"
  [[ -s "$data/PG_VERSION" ]] && return 0
  as_pg "$PGBIN_HA/initdb" -D "$data" --auth=trust -U postgres --encoding=UTF8 --locale=C \
    >"$data.initdb.log" 2>&1 || { tail -n 20 "$data.initdb.log" >&2; lc_die "initdb $data failed"; }
  write_local_conf "$data"
}

# monitor, node1, node2: the name of the pid file and log file of a service
service_name() { basename "$(node_data "$1")"; }
pidfile_of() { printf '%s/%s.pid\n' "$HA_DIR" "$(service_name "$1")"; }

# Start `pg_autoctl run` for a node (or the monitor) in its own session; no-op when it runs.
run_service() {
  local who="$1" data pidfile pid
  data="$(node_data "$who")"
  pidfile="$(pidfile_of "$who")"
  if pid="$(pid_alive "$pidfile" pg_autoctl)"; then
    return 0
  fi
  # a crashed server leaves postmaster.pid behind; pg_autoctl copes, but not with a pid that
  # now belongs to another process
  if [[ -f "$data/postmaster.pid" ]] && ! pid_alive "$data/postmaster.pid" postgres >/dev/null; then
    rm -f "$data/postmaster.pid"
  fi
  as_pg setsid -f pg_autoctl run --pgdata "$data" </dev/null >>"$HA_DIR/$(service_name "$who").log" 2>&1
  # runuser forks: the pid we want is pg_autoctl's, found by its session (setsid makes it leader)
  local i
  for ((i = 0; i < 50; i++)); do
    pid="$(ps -eo pid=,sid=,args= | awk -v d="$data" '$1 == $2 && $3 == "pg_autoctl" && $4 == "run" && $6 == d {print $1; exit}')"
    [[ -n "$pid" ]] && break
    sleep 0.1
  done
  [[ -n "$pid" ]] || { tail -n 20 "$HA_DIR/$(service_name "$who").log" >&2; lc_die "pg_autoctl run for $who did not start"; }
  echo "$pid" >"$pidfile"
}

monitor_sql() {
  "$PGBIN_HA/psql" -X -q -t -A -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$MONITOR_PORT" -U postgres -d pg_auto_failover "$@"
}

node_sql() {
  local n="$1"
  shift
  "$PGBIN_HA/psql" -X -q -t -A -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$(node_port "$n")" -U postgres -d postgres "$@"
}

wait_port() {
  local port="$1" secs="$2" i
  for ((i = 0; i < secs * 4; i++)); do
    "$PGBIN_HA/pg_isready" -q -h 127.0.0.1 -p "$port" -t 1 >/dev/null 2>&1 && return 0
    sleep 0.25
  done
  return 1
}

# "N state" lines from the monitor: the reported and the goal state of each node.
node_states() {
  monitor_sql -F ' ' -c "select nodeport, reportedstate, goalstate from pgautofailover.node where formationid = '$FORMATION' order by nodeid" 2>/dev/null
}

cmd_primary() {
  local port state goal
  while read -r port state goal; do
    if [[ "$state" == "$goal" && ("$state" == primary || "$state" == wait_primary || "$state" == single) ]]; then
      [[ "$port" == "$PORT1" ]] && echo 1 || echo 2
      return 0
    fi
  done < <(node_states)
  return 1
}

cmd_wait_sync() {
  local secs="${1:-120}" i states primary
  for ((i = 0; i < secs * 2; i++)); do
    states="$(node_states | awk '$2 == $3 {print $2}' | sort | tr '\n' ' ')"
    [[ "$states" == "primary secondary " ]] && return 0
    # A standby made again from scratch (pg_basebackup, when pg_rewind cannot be used) waits
    # for a checkpoint on the primary, which pg_autoctl asks for spread over minutes; an
    # immediate CHECKPOINT request finishes the one in progress at once.
    if ((i % 6 == 5)) && primary="$(cmd_primary)"; then
      node_sql "$primary" -c checkpoint >/dev/null 2>&1 || true
    fi
    sleep 0.5
  done
  node_states >&2 || true
  lc_die "the cluster in $HA_DIR did not reach primary + secondary within $secs s"
}

create_monitor() {
  local data
  data="$(node_data monitor)"
  [[ -f "$HA_DIR/xdg/config/pg_autoctl$data/pg_autoctl.cfg" ]] && return 0
  initdb_local "$data"
  lc_log "creating the pg_auto_failover monitor on 127.0.0.1:$MONITOR_PORT"
  as_pg pg_autoctl create monitor --pgdata "$data" --pgport "$MONITOR_PORT" --listen 127.0.0.1 --hostname 127.0.0.1 \
    --auth trust --no-ssl --pgctl "$PGBIN_HA/pg_ctl" >>"$HA_DIR/monitor.log" 2>&1 ||
    { tail -n 30 "$HA_DIR/monitor.log" >&2; lc_die "pg_autoctl create monitor failed (log: $HA_DIR/monitor.log)"; }
}

tune_monitor() {
  # seconds -> milliseconds: how often and how patiently the monitor checks the nodes, how long
  # a silent node stays "healthy", and how long it waits for a lost primary to demote itself
  # before promoting the standby
  monitor_sql >/dev/null <<'SQL'
alter system set pgautofailover.health_check_period = 1000;
alter system set pgautofailover.health_check_timeout = 1000;
alter system set pgautofailover.health_check_max_retries = 1;
alter system set pgautofailover.health_check_retry_delay = 500;
alter system set pgautofailover.node_considered_unhealthy_timeout = 3000;
alter system set pgautofailover.primary_demote_timeout = 3000;
alter system set pgautofailover.startup_grace_period = 3000;
select pg_reload_conf();
SQL
}

create_node() {
  local n="$1" data port
  data="$(node_data "$n")"
  port="$(node_port "$n")"
  [[ -f "$HA_DIR/xdg/config/pg_autoctl$data/pg_autoctl.cfg" ]] && return 0
  if [[ "$n" == 1 ]]; then
    initdb_local "$data"
  fi
  lc_log "creating PostgreSQL node $n on 127.0.0.1:$port"
  as_pg pg_autoctl create postgres --pgdata "$data" --pgport "$port" --pghost "$HA_SOCK" \
    --listen 127.0.0.1 --hostname 127.0.0.1 --name "node$n" --dbname launchcontrol \
    --monitor "$MONITOR_URL" --auth trust --no-ssl --pgctl "$PGBIN_HA/pg_ctl" \
    >>"$HA_DIR/node$n.log" 2>&1 ||
    { tail -n 30 "$HA_DIR/node$n.log" >&2; lc_die "pg_autoctl create postgres (node $n) failed (log: $HA_DIR/node$n.log)"; }
  # the keeper's own timeouts: restart a crashed local server quickly, and give up on it (so
  # the monitor fails over) after a few seconds instead of 20
  as_pg pg_autoctl config set --pgdata "$data" timeout.postgresql_restart_failure_timeout 5 >/dev/null
}

ha_write_env() {
  local hosts="127.0.0.1:$PORT1,127.0.0.1:$PORT2" tmp="$HA_DIR/env.tmp.$$"
  {
    echo "# written by scripts/ha.sh up; source it: . $HA_DIR/env"
    echo "export DATABASE_URL='postgres://lc@$hosts/launchcontrol?target_session_attrs=read-write'"
    echo "export PG_ADMIN_URL='postgres://lc@$hosts/postgres?target_session_attrs=read-write'"
    echo "export LC_HA_DIR='$HA_DIR'"
  } >"$tmp"
  mv "$tmp" "$HA_DIR/env"
}

# The role LaunchControl connects as (what scripts/services.sh's server has), serializable by
# default like that server, on node N (the primary).
ensure_role() {
  local n="$1"
  if [[ "$(node_sql "$n" -c "select 1 from pg_roles where rolname = 'lc'")" != 1 ]]; then
    node_sql "$n" -c "create role lc superuser login" >/dev/null
    node_sql "$n" -c "alter database launchcontrol owner to lc" >/dev/null
    node_sql "$n" -c "alter role lc set default_transaction_isolation = 'serializable'" >/dev/null
  fi
}

cmd_up() {
  local async=0
  [[ "${1:-}" == --async ]] && async=1
  ha_install
  if [[ "$(id -u)" -eq 0 ]]; then
    id postgres >/dev/null 2>&1 || lc_die "the postgres system user is missing (it comes with the postgresql package)"
    # the postgres user must traverse every parent of DIR
    local d="$HA_DIR"
    while [[ "$d" != / ]]; do
      runuser -u postgres -- test -x "$d" 2>/dev/null || chmod o+x "$d"
      d="$(dirname "$d")"
    done
  fi
  if [[ ! -f "$HA_DIR/ports" ]]; then
    printf 'MONITOR_PORT=%s\nPORT1=%s\nPORT2=%s\n' "$MONITOR_PORT" "$PORT1" "$PORT2" >"$HA_DIR/ports"
  fi
  mkdir -p "$HA_SOCK" "$HA_DIR/xdg"
  if [[ "$(id -u)" -eq 0 ]]; then
    chown postgres:postgres "$HA_DIR" "$HA_SOCK" "$HA_DIR/xdg"
    chmod o+x "$(dirname "$HA_SOCK")"
  fi

  create_monitor
  run_service monitor
  wait_port "$MONITOR_PORT" 30 || lc_die "the monitor does not answer on 127.0.0.1:$MONITOR_PORT (log: $HA_DIR/monitor.log)"
  tune_monitor

  # node 1 first: it becomes the primary; node 2 then clones it and becomes its standby.
  # On a later `up` (both made already) both start and the monitor says which is primary.
  local primary i
  if [[ ! -f "$HA_DIR/xdg/config/pg_autoctl$(node_data 1)/pg_autoctl.cfg" ]]; then
    create_node 1
    run_service 1
    for ((i = 0; i < 120; i++)); do
      node_states | grep -qE "^$PORT1 (single|primary|wait_primary) " && break
      sleep 0.5
    done
    node_states | grep -qE "^$PORT1 (single|primary|wait_primary) " ||
      lc_die "node 1 did not become primary (log: $HA_DIR/node1.log)"
    wait_port "$PORT1" 60 || lc_die "node 1 does not answer on 127.0.0.1:$PORT1 (log: $HA_DIR/node1.log)"
    ensure_role 1
  else
    run_service 1
  fi
  create_node 2
  run_service 2
  cmd_wait_sync 180
  primary="$(cmd_primary)"
  ensure_role "$primary"
  if ((async)); then
    lc_log "making the standby asynchronous (replication-quorum false on both nodes)"
    as_pg pg_autoctl set node replication-quorum false --pgdata "$(node_data 1)" >/dev/null
    as_pg pg_autoctl set node replication-quorum false --pgdata "$(node_data 2)" >/dev/null
  else
    as_pg pg_autoctl set node replication-quorum true --pgdata "$(node_data 1)" >/dev/null 2>&1 || true
    as_pg pg_autoctl set node replication-quorum true --pgdata "$(node_data 2)" >/dev/null 2>&1 || true
  fi
  cmd_wait_sync 60
  # what "synchronous" means here: the primary waits for the standby at each commit
  local names=""
  for ((i = 0; i < 60; i++)); do
    primary="$(cmd_primary)"
    names="$(node_sql "$primary" -c 'show synchronous_standby_names' 2>/dev/null || true)"
    if ((async)); then [[ -z "$names" ]] && break; else [[ -n "$names" ]] && break; fi
    sleep 0.5
  done
  if ((async)); then
    [[ -z "$names" ]] || lc_die "the primary still waits for its standby (synchronous_standby_names = $names)"
  else
    [[ -n "$names" ]] || lc_die "the primary does not wait for its standby (synchronous_standby_names is empty)"
  fi
  ha_write_env
  lc_log "HA PostgreSQL up in $HA_DIR: primary node $primary, synchronous_standby_names = '$names'"
  echo "$HA_DIR/env"
}

# Kill a process group (pg_autoctl run is a session leader: its keeper, its postgres and the
# backends are in its group) with SIG, then wait until none is left.
kill_group() {
  local pid="$1" sig="$2" secs="$3" i
  kill "-$sig" -- "-$pid" 2>/dev/null || true
  for ((i = 0; i < secs * 4; i++)); do
    pgrep -g "$pid" >/dev/null 2>&1 || return 0
    sleep 0.25
  done
  return 1
}

stop_service() {
  local who="$1" pid data
  data="$(node_data "$who")"
  if pid="$(pid_alive "$(pidfile_of "$who")" pg_autoctl)"; then
    as_pg pg_autoctl stop --pgdata "$data" --fast >/dev/null 2>&1 || true
    kill_group "$pid" TERM 20 || kill_group "$pid" KILL 5 || lc_warn "processes of $who (group $pid) survive"
    echo "$(service_name "$who") stopped (pid $pid)"
  fi
  rm -f "$(pidfile_of "$who")"
  # a postgres left running by a killed keeper (it is in the keeper's group, but be sure)
  if pid="$(pid_alive "$data/postmaster.pid" postgres)"; then
    kill -KILL "$pid" 2>/dev/null || true
  fi
}

cmd_down() {
  stop_service 1
  stop_service 2
  stop_service monitor
}

cmd_kill_primary() {
  local n pid pm
  n="$(cmd_primary)" || lc_die "no primary in $HA_DIR"
  pid="$(pid_alive "$(pidfile_of "$n")" pg_autoctl)" || lc_die "node $n's pg_autoctl is not running"
  pm="$(pid_alive "$(node_data "$n")/postmaster.pid" postgres || true)"
  # the postmaster first (kill -9: no shutdown checkpoint, backends die with it), then the
  # keeper, which would otherwise restart it
  [[ -n "$pm" ]] && kill -KILL "$pm" 2>/dev/null
  kill_group "$pid" KILL 10 || lc_warn "processes of node $n survive kill -9"
  rm -f "$(pidfile_of "$n")"
  echo "$n"
}

cmd_status() {
  as_pg pg_autoctl show state --pgdata "$(node_data monitor)"
}

if [[ "${1:-}" == install ]]; then
  ha_install
  exit 0
fi
[[ $# -ge 2 ]] || usage
cmd="$1"
ha_load_dir "$2"
shift 2
case "$cmd" in
  up) cmd_up "$@" ;;
  down) cmd_down ;;
  status) cmd_status ;;
  primary) cmd_primary ;;
  kill-primary) cmd_kill_primary ;;
  start-node) [[ $# -eq 1 ]] || usage; run_service "$1" ;;
  wait-sync) cmd_wait_sync "${1:-120}" ;;
  *) usage ;;
esac
