"""Condition types and reasons of MLJob status: the vocabulary clients match on.

They live next to the API types because they are API: `kubectl wait
--for=condition=Closed`, dashboards and GitOps health checks key on these strings, so they
change only with an API version. Reasons are CamelCase, as `metav1.Condition` requires.
"""

from __future__ import annotations

from enum import StrEnum


class ConditionType(StrEnum):
    """`status.conditions[].type` values."""

    READY = "Ready"
    """True when the job is in the state `spec.state` asks for and has not failed."""
    OPENED = "Opened"
    """True while the job takes data and analyses it."""
    CLOSING = "Closing"
    """True while close housekeeping runs (reason TimedOut once `closeTimeout` passed)."""
    CLOSED = "Closed"
    """True once the job is closed (housekeeping done, or skipped by a forced close)."""
    FAILED = "Failed"
    """True when the job failed; only a forced close gets it out of there."""


class Reason(StrEnum):
    """`status.conditions[].reason` values (and Event reasons)."""

    OPENING = "Opening"
    """The job is being opened (model restored from its latest snapshot)."""
    OPENED = "Opened"
    """The job is open and takes data."""
    CLOSE_REQUESTED = "CloseRequested"
    """`spec.state: closed` was seen; housekeeping has not started yet."""
    CLOSING = "Closing"
    """Housekeeping (flush, final results, snapshot, pruning) is running."""
    TIMED_OUT = "TimedOut"
    """`closeTimeout` passed while closing; housekeeping goes on, force-close may help."""
    CLOSED = "Closed"
    """Housekeeping finished and the job is closed."""
    FORCE_CLOSED = "ForceClosed"
    """Closed by the force-close annotation (or `?force=true`) without housekeeping."""
    FORCE_CLOSE_IGNORED = "ForceCloseIgnored"
    """(Event only) a force-close value set while the job was closed: nothing to force."""
    DATAFEED_ENDED = "DatafeedEnded"
    """The datafeed reached `spec.datafeed.end` and closed the job by itself."""
    CLOSE_REFUSED = "CloseRefused"
    """A close of a failed job was asked without force; set the force-close annotation."""
    NOT_FAILED = "NotFailed"
    """The job has not failed (reason of `Failed=False`)."""
    ENGINE_ERROR = "EngineError"
    """The detection engine or its store failed."""
    DATAFEED_ERROR = "DatafeedError"
    """The datafeed could not fetch or parse data."""
    CREDENTIALS_NOT_FOUND = "CredentialsNotFound"
    """A Secret, ConfigMap or key named by the datafeed's authentication is missing, or
    the operator may not read it; retried with backoff, so creating it heals the feed."""
    CREDENTIALS_INVALID = "CredentialsInvalid"
    """The datafeed's credentials or TLS material cannot be used (not PEM, control
    characters in a header value)."""
    SNAPSHOT_RESTORE_FAILED = "SnapshotRestoreFailed"
    """Reopening could not restore the model from its latest snapshot."""
    INVALID_SPEC = "InvalidSpec"
    """The spec passed the schema but the operator cannot run it."""
