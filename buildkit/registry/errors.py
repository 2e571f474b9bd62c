"""Errors of the schema registry, each carrying Confluent's HTTP status and error code.

The REST layer turns any :class:`RegistryError` into Confluent's body
``{"error_code": <code>, "message": <text>}`` so that confluent-kafka's
``SchemaRegistryError`` (and any other Confluent client) sees exactly what a
Confluent Schema Registry would answer.
"""

from __future__ import annotations

from buildkit import errors


class RegistryError(errors.BuildKitError):
    """Root of the registry's errors: an HTTP status and a Confluent error code."""

    http_status = 500
    error_code = 50001

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


class SubjectNotFound(RegistryError, errors.SchemaNotFound):
    """No (live) version is registered under the subject."""

    http_status, error_code = 404, 40401

    def __init__(self, subject: str) -> None:
        self.subject = subject
        super().__init__(f"Subject '{subject}' not found.")


class VersionNotFound(RegistryError, errors.SchemaNotFound):
    """The subject exists but not that version."""

    http_status, error_code = 404, 40402

    def __init__(self, subject: str, version: int | str) -> None:
        self.subject, self.version = subject, version
        super().__init__(f"Version {version} not found for subject '{subject}'.")


class SchemaNotFound(RegistryError, errors.SchemaNotFound):
    """No schema has that id, or the schema is not registered under the subject."""

    http_status, error_code = 404, 40403


class SubjectSoftDeleted(RegistryError):
    """A soft delete of a subject that is already soft-deleted."""

    http_status, error_code = 404, 40404

    def __init__(self, subject: str) -> None:
        super().__init__(
            f"Subject '{subject}' was soft deleted. Set permanent=true to delete permanently"
        )


class SubjectNotSoftDeleted(RegistryError):
    """A permanent delete of a subject that was not soft-deleted first."""

    http_status, error_code = 404, 40405

    def __init__(self, subject: str) -> None:
        super().__init__(
            f"Subject '{subject}' was not deleted first before being permanently deleted"
        )


class VersionSoftDeleted(RegistryError):
    """A soft delete of a version that is already soft-deleted."""

    http_status, error_code = 404, 40406

    def __init__(self, subject: str, version: int) -> None:
        super().__init__(
            f"Subject '{subject}' Version {version} was soft deleted. "
            "Set permanent=true to delete permanently"
        )


class VersionNotSoftDeleted(RegistryError):
    """A permanent delete of a version that was not soft-deleted first."""

    http_status, error_code = 404, 40407

    def __init__(self, subject: str, version: int) -> None:
        super().__init__(
            f"Subject '{subject}' Version {version} was not deleted first "
            "before being permanently deleted"
        )


class SubjectConfigNotFound(RegistryError):
    """The subject has no compatibility level of its own (and no fallback was asked for)."""

    http_status, error_code = 404, 40408

    def __init__(self, subject: str) -> None:
        super().__init__(
            f"Subject '{subject}' does not have subject-level compatibility configured"
        )


class InvalidSchema(RegistryError):
    """The schema text is not a valid Avro schema (or not a supported schema type)."""

    http_status, error_code = 422, 42201


class InvalidVersion(RegistryError):
    """A version that is neither a positive integer nor ``latest``."""

    http_status, error_code = 422, 42202

    def __init__(self, version: str) -> None:
        super().__init__(
            f"The specified version '{version}' is not a valid version id. "
            'Allowed values are between [1, 2^31-1] and the string "latest"'
        )


class InvalidCompatibilityLevel(RegistryError):
    """A compatibility level outside Confluent's seven."""

    http_status, error_code = 422, 42203


class IncompatibleSchema(RegistryError, errors.SchemaCompatibilityError):
    """Registering the schema would break the subject's compatibility level.

    Confluent answers this one with ``error_code`` 409 (not a five-digit code).
    """

    http_status, error_code = 409, 409

    def __init__(self, message: str, problems: list[str]) -> None:
        self.problems = problems
        super().__init__(message)


class Unauthorized(RegistryError):
    """Basic auth is configured and the request's credentials are missing or wrong."""

    http_status, error_code = 401, 401

    def __init__(self) -> None:
        super().__init__("Unauthorized")
