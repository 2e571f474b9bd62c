"""Register the event contracts with a schema registry (any Confluent-compatible one).

Kept apart from the models: it needs the registry client (confluent-kafka),
which ``import buildkit.contracts`` must not pull in.
"""

from __future__ import annotations

from collections.abc import Mapping

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from buildkit.contracts.base import Event
from buildkit.errors import BuildKitError, SchemaCompatibilityError
from buildkit.serde import call_registry

_UNNAMED = "the schema registry"


def default_subjects() -> dict[str, type[Event]]:
    """The value subject (``<topic>-value``, TopicNameStrategy) of every catalog topic
    that carries events, with its contract."""
    from buildkit.catalog import default_catalog

    return {
        spec.value_subject: spec.value_type
        for spec in default_catalog()
        if spec.value_type is not None
    }


def register_contracts(
    client: SchemaRegistryClient,
    subjects: Mapping[str, type[Event]],
    *,
    registry_url: str = _UNNAMED,
) -> dict[str, int]:
    """Register each model's ``.avsc`` under its subject; the schema id per subject.

    Idempotent: registering an unchanged schema answers its existing id. A
    change the subject's compatibility level refuses raises
    :class:`SchemaCompatibilityError` naming the subject.
    """
    return {
        subject: register_schema(
            client, subject, model.avro_schema_str(), registry_url=registry_url
        )
        for subject, model in subjects.items()
    }


def register_schema(
    client: SchemaRegistryClient, subject: str, schema_str: str, *, registry_url: str = _UNNAMED
) -> int:
    """Register Avro ``schema_str`` under ``subject``; its global schema id."""
    schema = Schema(schema_str, "AVRO")
    try:
        return int(call_registry(registry_url, lambda: client.register_schema(subject, schema)))
    except SchemaRegistryError as exc:
        if exc.http_status_code == 409:
            raise SchemaCompatibilityError(
                f'{registry_url} refused the schema for subject "{subject}" as incompatible: '
                f"{exc.error_message} — check it first: buildkit schemas check"
            ) from exc
        raise BuildKitError(
            f'{registry_url} refused the schema for subject "{subject}": {exc.error_message} '
            f"(HTTP {exc.http_status_code}, error code {exc.error_code})"
        ) from exc


def lookup_ids(
    client: SchemaRegistryClient, schemas: Mapping[str, str], *, registry_url: str = _UNNAMED
) -> dict[str, int | None]:
    """The id of each Avro schema text under its subject, or None when not registered there."""
    found: dict[str, int | None] = {}
    for subject, schema_str in schemas.items():
        schema = Schema(schema_str, "AVRO")
        try:
            # The lambda runs at once, inside this iteration: B023 does not apply.
            registered = call_registry(registry_url, lambda: client.lookup_schema(subject, schema))  # noqa: B023
        except SchemaRegistryError as exc:
            if exc.http_status_code != 404:
                raise BuildKitError(
                    f'{registry_url} failed to look up subject "{subject}": {exc.error_message} '
                    f"(HTTP {exc.http_status_code})"
                ) from exc
            found[subject] = None
        else:
            found[subject] = registered.schema_id
    return found
