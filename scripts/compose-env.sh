#!/bin/sh
# Writes .env for `docker compose up`: one fresh API key per role (read, write, admin) and
# the simulator's write key. Readable by this user only; an existing .env is kept as it is.
# Usage: scripts/compose-env.sh [PATH]   (default: .env beside docker-compose.yml)
set -eu
target=${1:-$(dirname "$0")/../.env}
if [ -e "$target" ] && grep -q '^STREAMREC_API_KEYS=' "$target"; then
    echo "$target already holds STREAMREC_API_KEYS: kept as it is" >&2
    exit 0
fi
key() {  # 32 URL-safe characters from the kernel's generator
    LC_ALL=C tr -dc 'A-Za-z0-9_-' </dev/urandom | head -c 32
}
read_key="sr-read-$(key)"
write_key="sr-write-$(key)"
admin_key="sr-admin-$(key)"
umask 077
cat >>"$target" <<KEYS
# API keys for docker compose (send one as X-API-Key). Keep this file private.
STREAMREC_API_KEYS='{"$read_key": "read", "$write_key": "write", "$admin_key": "admin"}'
STREAMREC_CLIENT_API_KEY='$write_key'
# Publish the API beyond this host (it is on 127.0.0.1 by default):
# API_PUBLISH_ADDRESS=0.0.0.0
KEYS
chmod 600 "$target"
echo "wrote $target; the keys:"
echo "  read   $read_key"
echo "  write  $write_key"
echo "  admin  $admin_key"
