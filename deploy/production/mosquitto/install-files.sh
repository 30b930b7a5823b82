#!/bin/sh
# One-shot (compose service `broker-files`, in the Mosquitto image, as root): copy the
# broker's password file, ACL and TLS files into the volume the broker reads them from, owned
# by the broker's user and readable by nobody else. Mosquitto reads them after dropping to
# that user (deploy/README.md §2), so files owned by whoever generated them would not do.
# Re-run after regenerating them, then reload the broker:
#   docker compose run --rm broker-files && docker compose kill -s HUP mosquitto
# Environment: SRC_AUTH (passwd, acl), SRC_CERTS (ca.crt, broker.crt, broker.key), DEST,
# BROKER_USER (default mosquitto).
set -eu

src_auth="${SRC_AUTH:-/src/auth}"
src_certs="${SRC_CERTS:-/src/certs}"
dest="${DEST:-/mosquitto/secrets}"
owner="${BROKER_USER:-mosquitto}"

for f in "$src_auth/passwd" "$src_auth/acl" "$src_certs/ca.crt" "$src_certs/broker.crt" \
         "$src_certs/broker.key"; do
  if [ ! -s "$f" ]; then
    echo "missing or empty: $f (see deploy/production/README.md, step 2)" >&2
    exit 1
  fi
done

mkdir -p "$dest"
chown "$owner:$owner" "$dest"
chmod 0700 "$dest"
# Each file is copied under a temporary name and renamed: the broker, reloading at any
# moment, reads the old file or the new one, never half of one.
copy() {  # source, name, mode
  install -o "$owner" -g "$owner" -m "$3" "$1" "$dest/.$2.new"
  mv -f "$dest/.$2.new" "$dest/$2"
}
copy "$src_auth/passwd" passwd 0600
copy "$src_auth/acl" acl 0600
copy "$src_certs/ca.crt" ca.crt 0644
copy "$src_certs/broker.crt" broker.crt 0644
copy "$src_certs/broker.key" broker.key 0600
echo "broker files installed in $dest for user $owner"
