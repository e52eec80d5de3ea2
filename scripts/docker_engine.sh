#!/usr/bin/env bash
# A Docker engine that answers, and the local base image the gateway image builds from.
# Idempotent: an engine that already answers `docker info` and a base image that already
# exists are reused, never restarted or rebuilt. docs/docker.md explains the choices.
#
#   - Debian packages docker.io, docker-compose, debootstrap: installed when missing (root).
#   - dockerd --iptables=false --bridge=none --storage-driver=overlay2: started when no engine
#     answers (root; otherwise the exact command to run is printed and the script exits 2).
#     overlay2 when the kernel mounts an overlay on the engine's data filesystem, else (or when
#     dockerd refuses overlay2) vfs:
#     on vfs every container start and build step copies the whole image (here 6 s against
#     0.5 s per `docker run` on an idle machine, minutes on a busy one).
#   - One run at a time (flock on $ENGINE_LOCK, as root): concurrent callers wait, then reuse.
#   - local/python:3.11-bookworm: debootstrap --variant=minbase bookworm from the mirror apt
#     uses, python3 + venv + CA certificates, imported with `docker import`.
set -euo pipefail

BASE_IMAGE="${BASE_IMAGE:-local/python:3.11-bookworm}"
DOCKERD_LOG="${DOCKERD_LOG:-/var/log/dockerd.log}"
ENGINE_WAIT_SECONDS="${ENGINE_WAIT_SECONDS:-60}"
# One run at a time per machine (below); a waiting run gives up after this many seconds.
ENGINE_LOCK="${ENGINE_LOCK:-/run/lock/gateway-docker-engine.lock}"
ENGINE_LOCK_WAIT_SECONDS="${ENGINE_LOCK_WAIT_SECONDS:-600}"
# dockerd's default --data-root: where the storage driver keeps images and containers.
DOCKER_DATA_ROOT=/var/lib/docker

say() { echo "docker_engine: $*" >&2; }
is_root() { [ "$(id -u)" -eq 0 ]; }

# overlay2 if an overlay mounts on the filesystem that holds the engine's data, else vfs.
# Without root nothing can be probed: overlay2, the usual answer (the message names vfs too).
storage_driver() {
  local probe parent
  if ! is_root; then
    echo overlay2
    return
  fi
  parent="$DOCKER_DATA_ROOT"
  while [ ! -d "$parent" ]; do parent="$(dirname "$parent")"; done
  if probe="$(mktemp -d "$parent/.overlay-probe.XXXXXX" 2>/dev/null)"; then
    mkdir "$probe"/{lower,upper,work,merged}
    if mount -t overlay overlay -o "lowerdir=$probe/lower,upperdir=$probe/upper,workdir=$probe/work" \
      "$probe/merged" 2>/dev/null; then
      umount "$probe/merged"
      rm -rf "$probe"
      echo overlay2
      return
    fi
    rm -rf "$probe"
  fi
  echo vfs
}
engine_answers() { timeout 20 docker info >/dev/null 2>&1; }
dockerd_cmd() { DOCKERD_CMD=(dockerd --iptables=false --bridge=none --storage-driver="$1"); }

# Returns 1 when dockerd exits before answering (its log's tail printed), so that an overlay2
# the probe accepted but dockerd refuses still ends on vfs; exits 2 when it never answers.
start_engine() {
  say "starting ${DOCKERD_CMD[*]} (log: $DOCKERD_LOG)"
  # 9>&-: the engine outlives this script and must not inherit (and so hold) the run lock.
  nohup "${DOCKERD_CMD[@]}" >>"$DOCKERD_LOG" 2>&1 9>&- &
  dockerd_pid=$!
  deadline=$((SECONDS + ENGINE_WAIT_SECONDS))
  until engine_answers; do
    if ! kill -0 "$dockerd_pid" 2>/dev/null; then
      say "dockerd exited before answering; last lines of $DOCKERD_LOG:"
      tail -n 20 "$DOCKERD_LOG" >&2
      return 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      say "dockerd (pid $dockerd_pid) did not answer docker info within ${ENGINE_WAIT_SECONDS}s; see $DOCKERD_LOG"
      exit 2
    fi
    sleep 1
  done
}

# Concurrent runs (pytest-xdist workers on a new machine) queue here, then reuse the engine and
# base image the first one made: otherwise each starts a dockerd and runs its own debootstrap.
# Without root this script changes nothing, so it takes no lock.
if is_root; then
  mkdir -p "$(dirname "$ENGINE_LOCK")"
  exec 9>"$ENGINE_LOCK"
  if ! flock -w "$ENGINE_LOCK_WAIT_SECONDS" 9; then
    say "another run of this script has held $ENGINE_LOCK for ${ENGINE_LOCK_WAIT_SECONDS}s (starting" \
      "the engine or building $BASE_IMAGE); wait for it (see $DOCKERD_LOG), then run this again"
    exit 2
  fi
fi

need=()
for pkg in docker.io docker-compose debootstrap; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  if ! is_root; then
    say "missing Debian packages: ${need[*]}; run as root: apt-get install -y ${need[*]}"
    exit 2
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if engine_answers; then
  say "engine answers docker info: reusing it"
else
  driver="$(storage_driver)"
  dockerd_cmd "$driver"
  if ! is_root; then
    say "no Docker engine answers docker info; start one as root with:"
    say "  ${DOCKERD_CMD[*]} >>$DOCKERD_LOG 2>&1 &"
    say "(--storage-driver=vfs where the kernel refuses overlay mounts)"
    exit 2
  fi
  mkdir -p "$(dirname "$DOCKERD_LOG")"
  if ! start_engine; then
    [ "$driver" = vfs ] && exit 2
    say "retrying on the vfs storage driver"
    dockerd_cmd vfs
    start_engine || exit 2
  fi
  say "engine started (pid $dockerd_pid)"
fi

if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  say "base image $BASE_IMAGE present: reusing it"
  exit 0
fi
if ! is_root; then
  say "base image $BASE_IMAGE missing; building it needs root (debootstrap, chroot): rerun as root"
  exit 2
fi

# The mirror apt already uses (deb822 sources or the classic list), else Debian's CDN.
mirror="$(
  { grep -hoE '^URIs:[[:space:]]*\S+' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}'
    grep -hoE '^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?\S+' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk '{print $NF}'
  } | grep -E '/debian/?$' | head -n 1 || true
)"
mirror="${mirror:-http://deb.debian.org/debian}"

rootfs="$(mktemp -d /var/tmp/gw-base.XXXXXX)"
trap 'rm -rf "$rootfs"' EXIT
say "building $BASE_IMAGE: debootstrap --variant=minbase bookworm from $mirror"
debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >/dev/null
chroot "$rootfs" apt-get update -qq
DEBIAN_FRONTEND=noninteractive chroot "$rootfs" apt-get install -y -qq --no-install-recommends \
  python3 python3-venv python-is-python3 ca-certificates >/dev/null
chroot "$rootfs" apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/*
# tar records "." as the image's /, and mktemp -d made it 0700 (debootstrap keeps that): the
# image's non-root user could then run nothing ("exec /bin/sh: permission denied").
chmod 0755 "$rootfs"
tar -C "$rootfs" -c . | docker import - "$BASE_IMAGE" >/dev/null
say "base image $BASE_IMAGE built"
