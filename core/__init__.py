"""greenmon: a streaming energy and green-manufacturing monitor.

This package is the shared kernel (configuration, registry, units, the InfluxDB client,
the command line); the pipeline stages are its subpackages `greenmon.ingest`,
`greenmon.aggregator`, `greenmon.rules`, `greenmon.dashboards`, `greenmon.simulators`
and `greenmon.deploy`.
"""

import os

__version__ = "0.1.0"

# Polars allocates through its own jemalloc, which by default keeps freed pages resident for
# seconds and one arena per thread: a long `greenmon aggregate` (one group of enterprises after
# another, read, computed and written on three threads) then grew its peak RSS with the length
# of the range (468 MB for a day, 636 MB for a month of 1,000 enterprises). Freed pages go back
# at once and one arena is shared; read when Polars loads, so it is set before anything imports
# it. A user's own setting wins.
os.environ.setdefault("_RJEM_MALLOC_CONF", "narenas:1,dirty_decay_ms:0,muzzy_decay_ms:0")
