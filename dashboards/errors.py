"""The dashboards stage's exceptions: one root, `DashboardsError`, under `GreenmonError`.

The command line turns each into a one-line message and an exit code; errors of
grafana-client and of the HTTP layer are wrapped at the boundary with ``raise ... from``.
"""

from __future__ import annotations

from greenmon.errors import GreenmonError

__all__ = ["BuildError", "DashboardsError", "GrafanaAuthError", "GrafanaError"]


class DashboardsError(GreenmonError):
    """Root of every error the dashboards stage raises on purpose."""


class BuildError(DashboardsError):
    """The provisioning tree cannot be built or written."""


class GrafanaError(DashboardsError):
    """Grafana refused a request or could not be reached; the message names the request."""


class GrafanaAuthError(GrafanaError):
    """Grafana refused the credentials (401) or their permissions (403)."""
