#!/usr/bin/env bash
# The Debian packages a profile needs, installed when missing: the one list that `make up`,
# `make test`, `make bench` and .ci/run all read, so they never drift.
#
#   scripts/system-deps.sh up|bench|test
#
# As root: `apt-get update` once, then `apt-get install` of what is missing (nothing at all
# when everything is there, so a second run changes nothing). Otherwise: print the exact
# apt-get line to run and exit 1. Exit 2 on an unknown profile.
set -euo pipefail

# The local target of `make up` (playbooks/inventories/local): supervisord runs two gateway
# instances behind haproxy, socat talks to haproxy's admin socket, sqlite3 backs up SQLite.
UP=(haproxy supervisor socat sqlite3)
# `make bench`: nginx as the upstream, wrk as the load.
BENCH=(nginx-light wrk)
# `make test`: everything the suite drives for real, beyond the two above.
#   prometheus (promtool) and prometheus-alertmanager (amtool): alert rules and routes;
#   openssl: TLS certificates for cert_check and the upstream client; postgresql-client:
#   pg_dump/pg_restore/psql of the PostgreSQL runbooks; redis-server: rate limits;
#   docker.io, docker-compose, debootstrap: the image tests (engine: scripts/docker_engine.sh);
#   chromium: the browser tests of the admin UI.
TEST=(
  "${UP[@]}" "${BENCH[@]}"
  prometheus prometheus-alertmanager openssl postgresql-client redis-server
  docker.io docker-compose debootstrap chromium
)

case "${1:-}" in
  up) wanted=("${UP[@]}") ;;
  bench) wanted=("${BENCH[@]}") ;;
  test) wanted=("${TEST[@]}") ;;
  *)
    echo "usage: $0 up|bench|test" >&2
    exit 2
    ;;
esac

missing=()
for pkg in "${wanted[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

install_line="apt-get install -y --no-install-recommends ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "Missing Debian packages for '$1': ${missing[*]}" >&2
  echo "Install them as root, then run make again:" >&2
  echo "  apt-get update && $install_line" >&2
  exit 1
fi

echo "Installing the Debian packages '$1' needs: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
