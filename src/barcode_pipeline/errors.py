"""One exception root, so callers can catch everything the pipeline raises and still see its context."""

from __future__ import annotations


class PipelineError(Exception):
    """Root of every error this package raises on purpose."""

    def __init__(self, message: str, *, component: str | None = None, hint: str | None = None) -> None:
        super().__init__(message)
        self.component = component
        self.hint = hint

    def __str__(self) -> str:
        text = super().__str__()
        if self.component:
            text = f"{self.component}: {text}"
        if self.hint:
            text = f"{text} ({self.hint})"
        return text


class ConfigError(PipelineError):
    """A setting or argument is unusable."""


class StackError(PipelineError):
    """A local infrastructure component failed to install, start or answer."""


class MissingPrerequisite(StackError):
    """A program the local stack needs is not installed."""


class ValidationFailed(PipelineError):
    """A scan breaks a rule; `field` names it (and `index` its position in a batch)."""

    def __init__(self, message: str, *, field: str, index: int | None = None) -> None:
        super().__init__(message)
        self.field = field
        self.index = index


class DeliveryError(PipelineError):
    """A downstream system (Kafka, Redis, DB) did not confirm a write in time."""


class RetriesExhausted(DeliveryError):
    """A dependency kept failing until the retry budget (e.g. the shutdown grace period) ran out."""


class DatabaseUnavailable(DeliveryError):
    """The database could not take the statement now (down, lost connection, deadlock, schema missing).

    Transient by definition: a worker keeps its batch unacked and retries; legacy answers 503.
    """


class ConsumerFatalError(DeliveryError):
    """librdkafka declared a consumer unusable (e.g. a static member fenced); it must be replaced."""
