"""The one root exception of meterseal and its families. Messages say what to do next."""

from __future__ import annotations


class MeterSealError(Exception):
    """Root of every error meterseal raises on purpose."""


class ConfigError(MeterSealError):
    """A setting, flag or environment variable is missing or wrong."""


class KeystoreError(MeterSealError):
    """No keystore, a wrong passphrase, or a key that is not there: never a silent pass-through."""


class KeyServiceError(KeystoreError):
    """A key service (OpenBao transit, a PKCS#11 token, the passphrase keystore behind ``streams.kms``) refused or
    could not do an operation: the message names the service, the key and what to check. A wrapped key that does
    not open under the key that should open it (altered, or wrapped under another service's key) is one too."""


class KeyServiceUnavailable(KeyServiceError):
    """The key service cannot be reached (down, sealed, timed out, token absent): nothing was done; try again.
    The CLI exits 78 on it; a worker pauses consumption until the service is back."""


class KeyServiceDenied(KeyServiceError):
    """The key service refused: the token lacks the capability the message names, or was revoked or expired."""


class InvalidEnvelope(MeterSealError):
    """A sealed envelope could not be opened. Deliberately does not say which check failed."""


class InvalidInput(MeterSealError):
    """A raw reading or bill that must go to the dead-letter topic.

    ``rule`` is a short machine name (``decode``, ``schema``, ``kwh``, ...); ``reason`` is for people
    and never quotes the rejected data, because it is stored in clear.
    """

    def __init__(self, rule: str, reason: str) -> None:
        super().__init__(f"{rule}: {reason}")
        self.rule = rule
        self.reason = reason


class BrokerError(MeterSealError):
    """The Kafka broker could not be started, reached, or written to."""


class StoreError(MeterSealError):
    """The sealed store in the data directory is missing or unreadable."""


class ShareError(MeterSealError):
    """A party, grant or share bundle is missing, malformed, out of scope, or fails a check (the message
    names which)."""


class ErasureError(MeterSealError):
    """An erasure or retention job cannot go on: an unknown subject, a subject already erased, a store it cannot
    reach. Nothing is changed when the subject is unknown; a job cut short finishes when run again."""


class UnknownSubject(ErasureError):
    """Nothing names the meter or account an erasure was asked for (and it was never erased): nothing changed."""


class SubjectErased(KeyError):
    """A subject key asked for was destroyed by an erasure (its id is in the fence): it is never loaded, recreated or
    restored. A ``KeyError``, so every opener treats it like any missing key (the record does not open)."""
