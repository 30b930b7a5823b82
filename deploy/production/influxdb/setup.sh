#!/bin/bash
# One-shot InfluxDB 2.7 set-up for greenmon (compose service `influxdb-setup`), idempotent:
# run it as often as you like. The `influxdb` service's first start (DOCKER_INFLUXDB_INIT_*)
# created the organisation, the admin user and token, and the bucket $GREENMON_DATABASE;
# this script makes sure that
#   - the buckets exist: $GREENMON_DATABASE (the aggregator's windows, alerts, screening:
#     kept forever) and $GREENMON_DATABASE/raw (raw meter_reading: kept $RAW_RETENTION_DAYS
#     days, default 1096 = three years);
#   - DBRP mappings let the v1 API (what greenmon and Grafana's InfluxQL data source speak)
#     find them: database $GREENMON_DATABASE, policy autogen (the default) -> the first,
#     policy raw -> the second;
#   - v1 authorizations exist: `greenmon` (read and write both buckets: ingest, aggregate,
#     alerts) and `grafana` (read only), with the passwords from .env. They are re-set on
#     every run, so rotating a password is: change .env, `docker compose run --rm
#     influxdb-setup`, restart the services.
# Environment (from compose): INFLUX_HOST, INFLUX_TOKEN (the admin token), INFLUX_ORG,
# GREENMON_DATABASE, RAW_RETENTION_DAYS, GREENMON_INFLUX_PASSWORD, GRAFANA_INFLUX_PASSWORD.
# Not run here (no InfluxDB 2.x on the development machines): tests/deploy/test_production.py
# runs it against a stand-in for the `influx` CLI that answers as the CLI documents.
set -euo pipefail

db="${GREENMON_DATABASE:?}"
: "${INFLUX_HOST:?}" "${INFLUX_TOKEN:?}" "${INFLUX_ORG:?}"
: "${GREENMON_INFLUX_PASSWORD:?}" "${GRAFANA_INFLUX_PASSWORD:?}"

# The ID of bucket $1 (empty when there is none: `influx bucket list --name` fails then).
bucket_id() {
  influx bucket list --name "$1" --hide-headers 2>/dev/null | awk 'NR==1 {print $1}' || true
}

ensure_bucket() {  # name retention
  local id
  id="$(bucket_id "$1")"
  if [ -z "$id" ]; then
    influx bucket create --name "$1" --retention "$2" --hide-headers >/dev/null
    id="$(bucket_id "$1")"
    [ -n "$id" ] || { echo "bucket $1 was not created" >&2; exit 1; }
    echo "bucket $1 created (retention $2)" >&2
  fi
  echo "$id"
}

ensure_dbrp() {  # rp bucket-id [--default]
  if [ -z "$(influx v1 dbrp list --db "$db" --rp "$1" --hide-headers 2>/dev/null || true)" ]; then
    influx v1 dbrp create --db "$db" --rp "$1" --bucket-id "$2" "${@:3}" >/dev/null
    echo "DBRP mapping $db/$1 -> bucket $2 created"
  fi
}

ensure_v1_user() {  # name password flags...
  local name="$1" password="$2"
  shift 2
  if [ -z "$(influx v1 auth list --username "$name" --hide-headers 2>/dev/null || true)" ]; then
    influx v1 auth create --username "$name" --password "$password" \
      --description "greenmon: $name" "$@" >/dev/null
    echo "v1 authorization $name created"
  else
    influx v1 auth set-password --username "$name" --password "$password" >/dev/null
    echo "v1 authorization $name: password set"
  fi
}

results="$(ensure_bucket "$db" 0)"
raw="$(ensure_bucket "$db/raw" "${RAW_RETENTION_DAYS:-1096}d")"
ensure_dbrp autogen "$results" --default
ensure_dbrp raw "$raw"
ensure_v1_user greenmon "$GREENMON_INFLUX_PASSWORD" \
  --read-bucket "$results" --write-bucket "$results" --read-bucket "$raw" --write-bucket "$raw"
ensure_v1_user grafana "$GRAFANA_INFLUX_PASSWORD" --read-bucket "$results" --read-bucket "$raw"
echo "InfluxDB ready for greenmon: database $db (buckets $db, $db/raw)"
