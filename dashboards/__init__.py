"""Dashboards stage: Grafana datasource, dashboards and alert rules generated from code."""
