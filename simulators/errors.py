"""The simulators' exceptions: one root, `SimulatorError`, under `GreenmonError`.

The command line turns every one of them into a one-line message and an exit code (see
`greenmon.cli_common.run_guarded`); foreign exceptions are wrapped with ``raise ... from``.
"""

from __future__ import annotations

from greenmon.errors import GreenmonError

__all__ = ["FaultSpecError", "FleetError", "PublishError", "SimulatorError"]


class SimulatorError(GreenmonError):
    """Root of every error the simulators raise on purpose."""


class FleetError(SimulatorError):
    """A fleet cannot be generated, written or read back (bad size, bad directory, bad file)."""


class FaultSpecError(SimulatorError):
    """A `--faults` specification is malformed, or its rates cannot be placed in the run."""


class PublishError(SimulatorError):
    """Publishing to the broker failed (cannot connect, refused, lost connection for good)."""
