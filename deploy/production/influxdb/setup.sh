#!/bin/bash
# One-shot InfluxDB 2.7 set-up for greenmon (compose service `influxdb-setup`), idempotent:
# run it as often as you like. The `influxdb` service's first start (DOCKER_INFLUXDB_INIT_*)
# created the organisation, the admin user and token, and the bucket; this script makes sure
#   - the bucket $GREENMON_DATABASE exists (retention: $GREENMON_BUCKET_RETENTION, 0 = forever),
#   - a DBRP mapping database=$GREENMON_DATABASE, rp=autogen -> that bucket (the v1 API that
#     greenmon and Grafana's InfluxQL data source speak),
#   - v1 authorizations: `greenmon` (read + write the bucket: ingest, aggregate, alerts) and
#     `grafana` (read only), with the passwords from .env (re-set on every run, so rotating a
#     password is: change .env, `docker compose up influxdb-setup`, restart the services).
# Environment (from compose): INFLUX_HOST, INFLUX_TOKEN (the admin token), INFLUX_ORG,
# GREENMON_DATABASE, GREENMON_BUCKET_RETENTION, GREENMON_INFLUX_PASSWORD, GRAFANA_INFLUX_PASSWORD.
set -euo pipefail

db="${GREENMON_DATABASE:?}"
: "${INFLUX_HOST:?}" "${INFLUX_TOKEN:?}" "${INFLUX_ORG:?}"
: "${GREENMON_INFLUX_PASSWORD:?}" "${GRAFANA_INFLUX_PASSWORD:?}"

bucket_id="$(influx bucket list --name "$db" --hide-headers 2>/dev/null | awk 'NR==1 {print $1}')"
if [ -z "$bucket_id" ]; then
  bucket_id="$(influx bucket create --name "$db" --retention "${GREENMON_BUCKET_RETENTION:-0}" \
    --hide-headers | awk 'NR==1 {print $1}')"
  echo "bucket $db created ($bucket_id)"
fi

if [ -z "$(influx v1 dbrp list --db "$db" --hide-headers 2>/dev/null)" ]; then
  influx v1 dbrp create --db "$db" --rp autogen --bucket-id "$bucket_id" --default >/dev/null
  echo "DBRP mapping $db/autogen -> bucket $bucket_id created"
fi

ensure_v1_user() {  # name password flags...
  local name="$1" password="$2"
  shift 2
  if [ -z "$(influx v1 auth list --username "$name" --hide-headers 2>/dev/null)" ]; then
    influx v1 auth create --username "$name" --password "$password" \
      --description "greenmon: $name" "$@" >/dev/null
    echo "v1 authorization $name created"
  else
    influx v1 auth set-password --username "$name" --password "$password" >/dev/null
    echo "v1 authorization $name: password set"
  fi
}
ensure_v1_user greenmon "$GREENMON_INFLUX_PASSWORD" --read-bucket "$bucket_id" --write-bucket "$bucket_id"
ensure_v1_user grafana "$GRAFANA_INFLUX_PASSWORD" --read-bucket "$bucket_id"
echo "InfluxDB ready for greenmon: database $db"
