"""Exceptions grouped by what to do about them, and the exit codes they map to."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """The process exit codes of every command."""

    OK = 0  # done; also nothing new, or another run holds the lock
    PARTIAL = 1  # the run finished but some calls failed or a service was unreachable
    CONFIG = 2  # bad usage or configuration, including what only shows at run time


class PollerError(Exception):
    """Base of the errors this package raises on purpose."""

    exit_code = ExitCode.PARTIAL


class ConfigError(PollerError):
    """Bad configuration or usage: fatal, the run stops with exit code 2 and changes nothing."""

    exit_code = ExitCode.CONFIG


class SourceSchemaError(ConfigError):
    """The cdr table lacks a column the poller needs (or the table does not exist)."""


class ServiceUnavailable(PollerError):
    """A database or target could not be reached: retried by the next run."""


class TargetUnavailable(ServiceUnavailable):
    """The target as a whole did not answer: nobody's call is charged for it."""

    # the connection failed in the middle of one call's request: a probe of the target tells
    # whose fault that was (no answer: the target's; an answer: the call's)
    in_transit = False
    # seconds the target asked for no request (HTTP Retry-After); None when it did not ask
    retry_after: float | None = None


class LedgerUnavailable(ServiceUnavailable):
    """The state database refused a write the run cannot go on without."""


class StorageUnavailable(ServiceUnavailable):
    """A folder of the poller's own (state.dir, its tmp/) refuses writes (a root run left it
    root's, a read-only remount, a full disk or quota): a local outage, nobody's call's fault.
    The run stops saying what and where; no call is charged."""


class RecordingsUnavailable(ServiceUnavailable):
    """recordings.dir is not there (a spool not mounted): calls wait, no attempt counted."""


class DeliveryError(PollerError):
    """One call could not be delivered; it is retried with back-off."""


class LockHeld(PollerError):
    """Another run holds the lock."""

    exit_code = ExitCode.OK

    def __init__(self, message: str, host: str | None = None):
        super().__init__(message)
        self.host = host  # the holder's host, when the lock is a server ledger's and it said
