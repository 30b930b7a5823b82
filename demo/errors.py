"""The demo's errors: one root, `DemoError`, under greenmon's own."""

from __future__ import annotations

from greenmon.errors import GreenmonError

__all__ = ["DemoError"]


class DemoError(GreenmonError):
    """A step of the demo failed (the message says which, and where its log is)."""
