"""Deployment: how the real parts (Mosquitto, InfluxDB) start, locally and in production."""
