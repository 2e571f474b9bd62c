"""The project's exceptions: one root, one class per thing a user can get wrong.

Every message says what was wrong, where (address, topic, file:line, field) and
what to do, so the CLI can print it as is and exit non-zero without a traceback.
"""

from __future__ import annotations

from confluent_kafka.serialization import SerializationError as _KafkaSerializationError


class BuildKitError(Exception):
    """Root of every error Agent BuildKit raises on purpose."""

    exit_code = 1


class ConfigError(BuildKitError):
    """A setting is missing or malformed."""


class BrokerUnavailable(BuildKitError):
    """The Kafka bootstrap servers did not answer in time."""

    exit_code = 3


class RegistryUnavailable(BuildKitError):
    """The schema registry did not answer in time."""

    exit_code = 3


class DatabaseUnavailable(BuildKitError):
    """Postgres did not answer in time."""

    exit_code = 3


class UnknownTopic(BuildKitError):
    """A topic is neither in the catalog nor on the broker."""


class SchemaNotFound(BuildKitError):
    """No schema is known for a topic or subject."""


class InvalidRecords(BuildKitError):
    """One or more input records failed validation; nothing was sent."""

    def __init__(self, source: str, problems: list[tuple[int, str]]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {source}:{line}: {msg}" for line, msg in problems)
        super().__init__(
            f"{len(problems)} invalid record(s) in {source}; nothing was sent:\n{lines}"
        )


class SerializationError(BuildKitError, _KafkaSerializationError):
    """A value could not be encoded or decoded; also a confluent-kafka SerializationError."""


class DeliveryError(BuildKitError):
    """The broker did not acknowledge one or more records."""


class StackError(BuildKitError):
    """The embedded dev stack could not be started, stopped or inspected."""


class PortInUse(StackError):
    """A port the embedded stack needs is already taken by another process."""

    def __init__(self, host: str, port: int, setting: str, example: str) -> None:
        self.host, self.port, self.setting = host, port, setting
        super().__init__(
            f"port {port} on {host} is already in use by another process — "
            f"set {setting} to a free address, e.g. {setting}={example}"
        )


class SchemaCompatibilityError(BuildKitError):
    """A schema change breaks compatibility with an earlier version."""


class AuditChainBroken(BuildKitError):
    """The audit archive's hash chain does not verify."""
