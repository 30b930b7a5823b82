"""Simulators: a seeded fleet of factories, gateways publishing over MQTT, ground truth."""
