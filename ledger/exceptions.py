"""Errors of the ledger package."""

from __future__ import annotations


class LedgerError(Exception):
    """Root of the ledger's errors."""


class ProofError(LedgerError):
    """An inclusion or consistency proof does not verify."""


class NoteError(LedgerError):
    """A signed note is malformed, or carries no valid signature by a known key."""
