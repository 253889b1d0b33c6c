# shellcheck shell=bash
# Helpers shared by the LaunchControl scripts. Source it; do not run it.
#
#   LC_ROOT   repository root (derived from this file's location)
#   LC_HOME   data directory for local services (default: $LC_ROOT/.lc, gitignored)
#   lc_log / lc_warn / lc_die        messages on stderr
#   ensure_pkg CMD_OR_PATH PACKAGE   apt-get install PACKAGE when CMD_OR_PATH is missing
#                                    (a command name, a path, or a glob of paths)
#   ensure_python_venv DIR PKG==VER...  a Python virtualenv at DIR holding the pinned
#                                    packages (from PyPI, installed only when missing)

if [[ -n "${LC_LIB_SOURCED:-}" ]]; then
  return 0
fi
LC_LIB_SOURCED=1

LC_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
LC_HOME="${LC_HOME:-$LC_ROOT/.lc}"
# make LC_HOME absolute without requiring it to exist yet
case "$LC_HOME" in
  /*) ;;
  *) LC_HOME="$PWD/$LC_HOME" ;;
esac
export LC_ROOT LC_HOME

# daemons and admin tools live in sbin on Debian; a non-login root shell may lack it
case ":$PATH:" in
  *:/usr/sbin:*) ;;
  *) PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin" ;;
esac
export PATH

lc_log() {
  printf '[lc %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2
}

lc_warn() {
  printf '[lc %s] WARNING: %s\n' "$(date +%H:%M:%S)" "$*" >&2
}

lc_die() {
  printf '[lc %s] ERROR: %s\n' "$(date +%H:%M:%S)" "$*" >&2
  exit 1
}

# Run a command as root: directly when we are root, else through sudo.
lc_as_root() {
  if [[ "$(id -u)" -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo -n "$@"
  else
    lc_die "need root to run: $* (no sudo available)"
  fi
}

# True when CMD_OR_PATH is present: a command on PATH, or an existing path (globs allowed).
lc_have() {
  local what="$1"
  if [[ "$what" == */* ]]; then
    compgen -G "$what" >/dev/null 2>&1
  else
    command -v "$what" >/dev/null 2>&1
  fi
}

# apt-get update at most once per run (shared with child scripts through the environment).
lc_apt_update_once() {
  if [[ "${LC_APT_UPDATED:-0}" != 1 ]]; then
    lc_log "apt-get update"
    lc_as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update -qq
    LC_APT_UPDATED=1
    export LC_APT_UPDATED
  fi
}

# ensure_pkg CMD_OR_PATH PACKAGE: install PACKAGE (Debian) when CMD_OR_PATH is missing.
ensure_pkg() {
  local what="$1" pkg="$2"
  if lc_have "$what"; then
    return 0
  fi
  command -v apt-get >/dev/null 2>&1 || lc_die "$what is missing and apt-get is not available to install $pkg"
  lc_apt_update_once
  lc_log "installing $pkg (missing: $what)"
  lc_as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 \
    install -y -q --no-install-recommends "$pkg" >&2
  hash -r
  lc_have "$what" || lc_die "installed $pkg but $what is still missing"
}

# ensure_deb PACKAGE: install PACKAGE when dpkg does not list it as installed.
ensure_deb() {
  local pkg="$1"
  if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
    return 0
  fi
  lc_apt_update_once
  lc_log "installing $pkg"
  lc_as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 \
    install -y -q --no-install-recommends "$pkg" >&2
}

# ensure_python_venv DIR NAME==VERSION...: a virtualenv at DIR (Debian's python3 and
# python3-venv) holding exactly these pinned packages; pip runs only when one of them
# is missing or at another version.
ensure_python_venv() {
  local dir="$1" req missing=()
  shift
  ensure_pkg python3 python3
  if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    ensure_deb python3-venv
  fi
  if [[ ! -x "$dir/bin/python3" ]]; then
    lc_log "creating a Python virtualenv in $dir"
    python3 -m venv "$dir" >&2
  fi
  local installed
  installed="$("$dir/bin/python3" -m pip freeze --disable-pip-version-check 2>/dev/null || true)"
  for req in "$@"; do
    grep -qixF "$req" <<<"$installed" || missing+=("$req")
  done
  if ((${#missing[@]})); then
    lc_log "installing ${missing[*]} into $dir"
    "$dir/bin/python3" -m pip install -q --disable-pip-version-check "${missing[@]}" >&2
  fi
}

# pid_alive PIDFILE [COMM]: the pid in PIDFILE runs (and its command name is COMM, when given).
pid_alive() {
  local pidfile="$1" comm="${2:-}" pid
  [[ -r "$pidfile" ]] || return 1
  pid="$(head -n1 "$pidfile" 2>/dev/null | tr -dc '0-9')"
  [[ -n "$pid" ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  if [[ -n "$comm" && -r "/proc/$pid/comm" ]]; then
    [[ "$(cat "/proc/$pid/comm")" == "$comm"* ]] || return 1
  fi
  printf '%s\n' "$pid"
}

# A short directory for unix sockets when LC_HOME is too deep for the 108-byte sun_path limit.
lc_short_run_dir() {
  local h
  h="$(printf '%s' "$LC_HOME" | sha256sum | cut -c1-12)"
  printf '/tmp/lc-%s-%s\n' "$(id -u)" "$h"
}

# lc_sock_dir DEFAULT_DIR LONGEST_SUFFIX: DEFAULT_DIR when DEFAULT_DIR/LONGEST_SUFFIX fits in 100 bytes.
lc_sock_dir() {
  local dir="$1" suffix="$2"
  if (( ${#dir} + ${#suffix} + 1 <= 100 )); then
    printf '%s\n' "$dir"
  else
    printf '%s\n' "$(lc_short_run_dir)/$(basename "$dir")"
  fi
}

# Drops the databases earlier test runs left behind (lc_test_*, one per test, kept for a
# look after a failure). They pile up (about 9 MB each, 100+ per run), and autovacuum
# visiting every one of them is load that doubles a benchmark's latency tail. One still
# in use (a run going on now) is left alone: no FORCE.
lc_drop_test_databases() {
  local admin_url="$1" psql db dropped=0
  psql="$(command -v psql || find /usr/lib/postgresql -path '*/bin/psql' 2>/dev/null | sort -V | tail -n1)"
  [[ -x "$psql" ]] || return 0
  local -a old_dbs
  mapfile -t old_dbs < <("$psql" -X -A -t "$admin_url" \
    -c "SELECT datname FROM pg_database WHERE datname ~ '^lc_test_[0-9a-f]+(_[a-z]+)?$'" 2>/dev/null || true)
  for db in "${old_dbs[@]}"; do
    [[ "$db" =~ ^lc_test_[0-9a-f]+(_[a-z]+)?$ ]] || continue
    "$psql" -X -q "$admin_url" -c "DROP DATABASE IF EXISTS $db" >/dev/null 2>&1 && dropped=$((dropped + 1))
  done
  ((dropped == 0)) || lc_log "dropped $dropped test databases of earlier runs"
}
