#!/usr/bin/env bash
# Builds LaunchControl's images on the local Docker engine from Debian's packages only: no
# registry is involved (none is reachable here): never `docker pull`.
#
#   scripts/image.sh [busybox]   the tests' payload image (LC_IMAGE, default lc-busybox:latest):
#                                Debian's static busybox, one symlink per applet
#   scripts/image.sh base        Debian 12 made by mmdebstrap from Debian's packages
#                                (LC_BASE_IMAGE, default launchcontrol-base:bookworm; packages
#                                LC_BASE_PACKAGES, default ca-certificates,curl)
#   scripts/image.sh postgres    PostgreSQL 15 from Debian's packages
#                                (LC_POSTGRES_IMAGE, default launchcontrol-postgres:bookworm)
#   scripts/image.sh redis       Redis from Debian's packages
#                                (LC_REDIS_IMAGE, default launchcontrol-redis:bookworm)
#   scripts/image.sh launchcontrol
#                                lc and lc-worker, built on the host, on LC_BASE_IMAGE (built
#                                first when missing) through the Dockerfile's BASE_IMAGE
#                                (LC_APP_IMAGE, default launchcontrol:latest; binaries from
#                                LC_BINARIES, default target/release: run
#                                `cargo build --release --bin lc --bin lc-worker` first)
#
# Several names build several images, in order. busybox, base, postgres and redis are built
# only when the engine lacks them (print "present" or "built" on stdout); launchcontrol is
# built every time (the binaries change). Logs go to stderr.
# Uses DOCKER_HOST from the environment, else the one in $LC_HOME/env, else docker's default.
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

LC_IMAGE="${LC_IMAGE:-lc-busybox:latest}"
LC_BASE_IMAGE="${LC_BASE_IMAGE:-launchcontrol-base:bookworm}"
LC_BASE_PACKAGES="${LC_BASE_PACKAGES:-ca-certificates,curl}"
LC_POSTGRES_IMAGE="${LC_POSTGRES_IMAGE:-launchcontrol-postgres:bookworm}"
LC_REDIS_IMAGE="${LC_REDIS_IMAGE:-launchcontrol-redis:bookworm}"
LC_APP_IMAGE="${LC_APP_IMAGE:-launchcontrol:latest}"
LC_BINARIES="${LC_BINARIES:-$LC_ROOT/target/release}"
# The Debian release of every image: the host's glibc must be no newer than the image's
# for binaries built on the host (the project's hosts are Debian 12 too).
SUITE=bookworm

if [[ -z "${DOCKER_HOST:-}" && -f "$LC_HOME/env" ]]; then
  DOCKER_HOST="$(sed -n 's/^export DOCKER_HOST=//p' "$LC_HOME/env" | tail -n1)"
  [[ -n "$DOCKER_HOST" ]] && export DOCKER_HOST
fi

ensure_pkg docker docker.io
timeout 30 docker info >/dev/null 2>&1 ||
  lc_die "no Docker engine answers at ${DOCKER_HOST:-the default socket} (run scripts/services.sh up)"

have_image() {
  docker image inspect "$1" >/dev/null 2>&1
}

# A scratch directory removed when the script ends.
SCRATCH="$(mktemp -d "${TMPDIR:-/tmp}/lc-image.XXXXXX")"
trap 'rm -rf "$SCRATCH"' EXIT

# debian_image IMAGE PACKAGES MESSAGE [--change LINE]... [MMDEBSTRAP_OPTION]...: a Debian root
# file system of PACKAGES (comma separated, on top of the minimal base) imported as IMAGE. The
# leading --change pairs go to `docker import`, the options after them (hooks) to mmdebstrap.
debian_image() {
  local image="$1" packages="$2" message="$3"
  shift 3
  local -a changes=()
  while (($#)) && [[ "$1" == --change ]]; do
    changes+=(--change "$2")
    shift 2
  done
  ensure_deb mmdebstrap
  local tarball="$SCRATCH/rootfs.tar"
  local started=$SECONDS
  lc_log "building $image: mmdebstrap $SUITE with $packages"
  # minbase: apt and the essential packages only; no documentation or man pages.
  mmdebstrap --quiet --variant=minbase --include="$packages" \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    "$@" "$SUITE" "$tarball" >&2
  docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    "${changes[@]}" \
    --message "$message" \
    "$tarball" "$image" >/dev/null
  rm -f "$tarball"
  lc_log "built $image in $((SECONDS - started))s"
}

build_busybox() {
  if have_image "$LC_IMAGE"; then
    echo present
    return 0
  fi
  # busybox (dynamic) also ships /bin/busybox: insist on the static build
  ensure_deb busybox-static
  local busybox=/bin/busybox rootfs="$SCRATCH/busybox"
  [[ -x "$busybox" ]] || lc_die "$busybox missing after installing busybox-static"
  if ldd "$busybox" >/dev/null 2>&1; then
    lc_die "$busybox is dynamically linked; the image needs busybox-static"
  fi

  lc_log "building $LC_IMAGE from $busybox"
  mkdir -p "$rootfs"/{bin,sbin,usr/bin,usr/sbin,etc,root,tmp,proc,sys,dev,var/tmp,home}
  chmod 1777 "$rootfs/tmp" "$rootfs/var/tmp"
  chmod 700 "$rootfs/root"
  cp "$busybox" "$rootfs/bin/busybox"
  chmod 755 "$rootfs/bin/busybox"

  # --list-full gives each applet's usual place (bin/sh, usr/bin/env, sbin/ip, ...)
  local count=0 applet target name
  while IFS= read -r applet; do
    [[ -n "$applet" ]] || continue
    case "$applet" in
      /* | *..*) continue ;;
    esac
    [[ "$applet" == bin/busybox ]] && continue
    target="$rootfs/$applet"
    [[ -e "$target" || -L "$target" ]] && continue
    mkdir -p "$(dirname "$target")"
    ln -s /bin/busybox "$target"
    count=$((count + 1))
  done < <("$busybox" --list-full)
  # every applet also reachable as /bin/NAME (symlink per `busybox --list`)
  while IFS= read -r name; do
    [[ -n "$name" && "$name" != busybox ]] || continue
    [[ -e "$rootfs/bin/$name" || -L "$rootfs/bin/$name" ]] && continue
    ln -s /bin/busybox "$rootfs/bin/$name"
  done < <("$busybox" --list)

  cat >"$rootfs/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
  cat >"$rootfs/etc/group" <<'GROUP'
root:x:0:
nogroup:x:65534:
GROUP
  echo "lc-busybox" >"$rootfs/etc/hostname"

  tar --numeric-owner --owner=0 --group=0 -C "$rootfs" -c . |
    docker import \
      --change 'ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'CMD ["/bin/sh"]' \
      --message "LaunchControl test image: static busybox ($count applets)" \
      - "$LC_IMAGE" >/dev/null
  lc_log "built $LC_IMAGE ($count applets)"
  echo built
}

build_base() {
  if have_image "$LC_BASE_IMAGE"; then
    echo present
    return 0
  fi
  debian_image "$LC_BASE_IMAGE" "$LC_BASE_PACKAGES" \
    "LaunchControl base: Debian $SUITE minbase with $LC_BASE_PACKAGES" \
    --change 'CMD ["/bin/bash"]'
  echo built
}

build_postgres() {
  if have_image "$LC_POSTGRES_IMAGE"; then
    echo present
    return 0
  fi
  # The package's post-install makes a cluster "main" that the image does not use: its
  # start script makes one in $PGDATA (a volume) on the first start.
  debian_image "$LC_POSTGRES_IMAGE" postgresql-15 \
    "LaunchControl test world: PostgreSQL 15 from Debian $SUITE" \
    --change 'ENV PGDATA=/var/lib/postgresql/data' \
    --change 'CMD ["/usr/local/bin/postgres-start"]' \
    --customize-hook='rm -rf "$1"/var/lib/postgresql/15/main "$1"/etc/postgresql/15/main' \
    --customize-hook="upload $LC_ROOT/docker/postgres-start.sh /usr/local/bin/postgres-start" \
    --customize-hook='chmod 755 "$1"/usr/local/bin/postgres-start'
  echo built
}

build_redis() {
  if have_image "$LC_REDIS_IMAGE"; then
    echo present
    return 0
  fi
  # Redis holds only dispatch hints (the database can rebuild them): no persistence.
  debian_image "$LC_REDIS_IMAGE" redis-server \
    "LaunchControl test world: Redis from Debian $SUITE" \
    --change 'USER redis' \
    --change 'CMD ["redis-server", "--bind", "127.0.0.1", "--port", "6379", "--save", "", "--appendonly", "no"]'
  echo built
}

build_launchcontrol() {
  local bin
  for bin in lc lc-worker; do
    [[ -x "$LC_BINARIES/$bin" ]] ||
      lc_die "$LC_BINARIES/$bin missing: run cargo build --release --bin lc --bin lc-worker (or set LC_BINARIES)"
  done
  build_base >/dev/null
  # A small build context: the Dockerfile and the binaries in prebuilt/, which its build
  # stage takes instead of compiling. Without their debug information (a debug build's
  # is most of its 200 MB; function names stay for backtraces).
  local context="$SCRATCH/launchcontrol"
  mkdir -p "$context/prebuilt"
  cp "$LC_ROOT/Dockerfile" "$context/Dockerfile"
  for bin in lc lc-worker; do
    if command -v strip >/dev/null 2>&1; then
      strip --strip-debug -o "$context/prebuilt/$bin" "$LC_BINARIES/$bin"
    else
      cp "$LC_BINARIES/$bin" "$context/prebuilt/$bin"
    fi
  done
  local started=$SECONDS
  lc_log "building $LC_APP_IMAGE on $LC_BASE_IMAGE with $LC_BINARIES/{lc,lc-worker}"
  # LC_BUILD_STAGE names the stage's image (a caller that checks it is gone sets it).
  local stage="${LC_BUILD_STAGE:-launchcontrol-$$-$RANDOM}"
  docker build --quiet --network none \
    --build-arg "BASE_IMAGE=$LC_BASE_IMAGE" \
    --build-arg "BUILDER_IMAGE=$LC_BASE_IMAGE" \
    --build-arg "BUILD_STAGE=$stage" \
    --tag "$LC_APP_IMAGE" "$context" >/dev/null
  # the build stage's image (a copy of the binaries), left untagged by the legacy builder
  docker image ls -q --filter "label=lc.build-stage=$stage" | sort -u |
    xargs -r docker image rm -f >/dev/null
  lc_log "built $LC_APP_IMAGE in $((SECONDS - started))s"
  echo built
}

(($#)) || set -- busybox
for what in "$@"; do
  case "$what" in
    busybox) build_busybox ;;
    base) build_base ;;
    postgres) build_postgres ;;
    redis) build_redis ;;
    launchcontrol) build_launchcontrol ;;
    *) lc_die "unknown image $what (busybox, base, postgres, redis, launchcontrol)" ;;
  esac
done
