"""greenmon: a streaming energy and green-manufacturing monitor.

This package is the shared kernel (configuration, registry, units, the InfluxDB client,
the command line); the pipeline stages are its subpackages `greenmon.ingest`,
`greenmon.aggregator`, `greenmon.rules`, `greenmon.dashboards`, `greenmon.simulators`
and `greenmon.deploy`.
"""

__version__ = "0.1.0"
