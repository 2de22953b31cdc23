#!/usr/bin/env bash
# Installs what streamrec needs from Debian when it is missing: redis-server (state),
# Java 17 and Maven (the Kafka broker), wrk (HTTP benchmarks), Chromium (the dashboard's
# and the JavaScript client's browser tests), Node.js (the JavaScript client's tests),
# promtool (package prometheus: checks deploy/prometheus/alerts.yml). Needs root for apt-get;
# without root it names what is missing and stops.
set -euo pipefail
declare -A package=([redis-server]=redis-server [redis-cli]=redis-tools [java]=openjdk-17-jre-headless [mvn]=maven [wrk]=wrk
                    [chromium]=chromium [node]=nodejs [promtool]=prometheus)
missing=()
for command in "${!package[@]}"; do
  command -v "$command" >/dev/null 2>&1 || missing+=("${package[$command]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing from Debian: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts a system redis on 6379; streamrec runs its own, so stop that one.
  if [[ " ${missing[*]} " == *" redis-server "* ]]; then
    (service redis-server stop || true) >/dev/null 2>&1
  fi
  # Only promtool is wanted from the prometheus package, not a server on port 9090.
  if [[ " ${missing[*]} " == *" prometheus "* ]]; then
    (service prometheus stop || true) >/dev/null 2>&1
  fi
else
  echo "missing: ${missing[*]}. Install them (Debian/Ubuntu: sudo apt-get install ${missing[*]}) or use docker compose." >&2
  exit 1
fi
