"""The ingest stage's exception tree: `IngestError` and everything under it.

`IngestError` is the stage's root (itself under `greenmon.errors.GreenmonError`), so the
command line can report any ingest failure as a readable message. Foreign exceptions
(``OSError``, ``zlib.error``, client errors) are wrapped at the boundary with ``raise ... from``.
"""

from __future__ import annotations

from greenmon.errors import GreenmonError

__all__ = ["IngestError", "SpoolCorruptError", "SpoolError", "SpoolFullError"]


class IngestError(GreenmonError):
    """Root of every error the ingest stage raises on purpose."""


class SpoolError(IngestError):
    """The local spool could not store, read or commit a record."""


class SpoolFullError(SpoolError):
    """Appending would take the spool past its byte bound; the record was NOT stored.

    The caller must not acknowledge the message the record came from: it stays with the
    broker (QoS 1) and is redelivered later, so nothing is dropped.
    """

    def __init__(self, message: str, *, depth: int, limit: int, records: int, needed: int) -> None:
        super().__init__(message)
        #: Unconsumed bytes in the spool when the append was refused.
        self.depth = depth
        #: The spool's bound (``max_bytes``).
        self.limit = limit
        #: Unconsumed records in the spool when the append was refused.
        self.records = records
        #: On-disk bytes the refused record would have taken (header included).
        self.needed = needed


class SpoolCorruptError(SpoolError):
    """The spool's files cannot be interpreted safely (e.g. an unknown format version).

    Ordinary damage — a torn tail, a bad record in the middle — is repaired or skipped on
    open and counted instead; this error is for states where guessing could lose data.
    """
