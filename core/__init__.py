"""greenmon: a streaming energy and green-manufacturing monitor.

This package is the shared kernel (configuration, registry, units, the InfluxDB client,
the command line); the pipeline stages are its subpackages `greenmon.ingest`,
`greenmon.aggregator`, `greenmon.rules`, `greenmon.dashboards`, `greenmon.simulators`
and `greenmon.deploy`.
"""

import os
import sys

__version__ = "0.1.0"

# `greenmon aggregate` computes a range one group of enterprises after another (read, computed
# and written on three threads). Polars allocates through its own jemalloc, which by default
# keeps freed pages resident for seconds, one arena per thread: the command's peak RSS then grew
# with the length of the range (468 MB for a day, 636 MB for a month of 1,000 enterprises).
# For that command freed pages go back at once and one arena is shared. Elsewhere the default
# stays: on one large frame (`greenmon bench aggregate`) the setting costs far more CPU than
# it saves memory. jemalloc reads it when Polars loads, so it is set before anything imports
# Polars; a user's own _RJEM_MALLOC_CONF wins.
if sys.argv[1:2] == ["aggregate"]:
    os.environ.setdefault("_RJEM_MALLOC_CONF", "narenas:1,dirty_decay_ms:0,muzzy_decay_ms:0")
