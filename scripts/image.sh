#!/usr/bin/env bash
# Builds the local test image (default lc-busybox:latest, override with LC_IMAGE) when the Docker
# engine does not have it yet: a rootfs holding Debian's static busybox, one symlink per applet,
# /tmp, /etc/passwd and /etc/group, imported with `docker import`. No registry is involved
# (none is reachable): never `docker pull`.
# Prints "present" or "built" on stdout; logs go to stderr.
# Uses DOCKER_HOST from the environment, else the one in $LC_HOME/env, else docker's default.
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

LC_IMAGE="${LC_IMAGE:-lc-busybox:latest}"

if [[ -z "${DOCKER_HOST:-}" && -f "$LC_HOME/env" ]]; then
  DOCKER_HOST="$(sed -n 's/^export DOCKER_HOST=//p' "$LC_HOME/env" | tail -n1)"
  [[ -n "$DOCKER_HOST" ]] && export DOCKER_HOST
fi

ensure_pkg docker docker.io
timeout 30 docker info >/dev/null 2>&1 ||
  lc_die "no Docker engine answers at ${DOCKER_HOST:-the default socket} (run scripts/services.sh up)"

if docker image inspect "$LC_IMAGE" >/dev/null 2>&1; then
  echo present
  exit 0
fi

# busybox (dynamic) also ships /bin/busybox: insist on the static build
ensure_deb busybox-static
BUSYBOX=/bin/busybox
[[ -x "$BUSYBOX" ]] || lc_die "$BUSYBOX missing after installing busybox-static"
if ldd "$BUSYBOX" >/dev/null 2>&1; then
  lc_die "$BUSYBOX is dynamically linked; the image needs busybox-static"
fi

ROOTFS="$(mktemp -d "${TMPDIR:-/tmp}/lc-rootfs.XXXXXX")"
trap 'rm -rf "$ROOTFS"' EXIT

lc_log "building $LC_IMAGE from $BUSYBOX"
mkdir -p "$ROOTFS"/{bin,sbin,usr/bin,usr/sbin,etc,root,tmp,proc,sys,dev,var/tmp,home}
chmod 1777 "$ROOTFS/tmp" "$ROOTFS/var/tmp"
chmod 700 "$ROOTFS/root"
cp "$BUSYBOX" "$ROOTFS/bin/busybox"
chmod 755 "$ROOTFS/bin/busybox"

# --list-full gives each applet's usual place (bin/sh, usr/bin/env, sbin/ip, ...)
count=0
while IFS= read -r applet; do
  [[ -n "$applet" ]] || continue
  case "$applet" in
    /* | *..*) continue ;;
  esac
  [[ "$applet" == bin/busybox ]] && continue
  target="$ROOTFS/$applet"
  [[ -e "$target" || -L "$target" ]] && continue
  mkdir -p "$(dirname "$target")"
  ln -s /bin/busybox "$target"
  count=$((count + 1))
done < <("$BUSYBOX" --list-full)
# every applet also reachable as /bin/NAME (symlink per `busybox --list`)
while IFS= read -r name; do
  [[ -n "$name" && "$name" != busybox ]] || continue
  [[ -e "$ROOTFS/bin/$name" || -L "$ROOTFS/bin/$name" ]] && continue
  ln -s /bin/busybox "$ROOTFS/bin/$name"
done < <("$BUSYBOX" --list)

cat >"$ROOTFS/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat >"$ROOTFS/etc/group" <<'GROUP'
root:x:0:
nogroup:x:65534:
GROUP
echo "lc-busybox" >"$ROOTFS/etc/hostname"

tar --numeric-owner --owner=0 --group=0 -C "$ROOTFS" -c . |
  docker import \
    --change 'ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/sh"]' \
    --message "LaunchControl test image: static busybox ($count applets)" \
    - "$LC_IMAGE" >/dev/null
lc_log "built $LC_IMAGE ($count applets)"
echo built
