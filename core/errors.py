"""The root of greenmon's exception tree and the kernel's own error types.

Each stage has one root (`ConfigError`, `RegistryError`, `InfluxError`, `ServicesError`,
and the stages' own roots in their packages), all under `GreenmonError`, so the command line
can turn any of them into a readable message instead of a traceback. Foreign exceptions are
wrapped at the boundary with ``raise ... from``.
"""

from __future__ import annotations


class GreenmonError(Exception):
    """Root of every error greenmon raises on purpose."""


class ConfigError(GreenmonError):
    """The configuration is invalid; the message names the offending key."""


class ServicesError(GreenmonError):
    """The local Mosquitto / influxd services could not be started, found or stopped."""
