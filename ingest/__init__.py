"""Ingest stage: MQTT meter readings -> InfluxDB `meter_reading`, at least once."""
