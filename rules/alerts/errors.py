"""The alerts' errors, under the rules stage's root `greenmon.rules.errors.RulesError`."""

from __future__ import annotations

from greenmon.rules.errors import RulesError

__all__ = ["AlertsError", "SinkError", "StoreError"]


class AlertsError(RulesError):
    """Root of the errors of the alerts."""


class StoreError(AlertsError):
    """The alert state database cannot be opened or written."""


class SinkError(AlertsError):
    """A sink could not deliver (network, refusal); the outbox keeps the entries and retries.

    `retry_after` (seconds), when the far side said how long to wait (rate limits)."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
