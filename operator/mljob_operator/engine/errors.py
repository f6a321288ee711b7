"""Errors the engine raises; the operator maps each to an HTTP status or a condition."""


class EngineError(Exception):
    """Base class of engine errors."""


class ConfigError(EngineError, ValueError):
    """The job configuration is invalid or does not match the persisted model."""


class DataFormatError(EngineError, ValueError):
    """A data body is not NDJSON or a JSON array of objects, or a flush asks for what the
    engine refuses (an advanceTime too far ahead)."""


class JobClosedError(EngineError):
    """Intake is stopped: the job is closing or closed."""


class JobFailedError(EngineError):
    """A store write failed after the model changed; the job must be reopened (from the
    store, which holds exactly what was acknowledged)."""


class StoreWriteError(EngineError):
    """The store refused a write (disk full, locked, gone): nothing of the operation was
    acknowledged, and the in-memory model, which may have moved on, must be reopened."""
