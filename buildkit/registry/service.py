"""What the registry does, independent of HTTP: register, look up, check, delete, configure.

Every operation is one Postgres transaction through :class:`RegistryStore`;
errors are :mod:`buildkit.registry.errors` classes that carry Confluent's
status and code, so the REST layer only translates shapes.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import avro.schema

from buildkit.registry.compat import CompatibilityLevel, check_compatibility
from buildkit.registry.errors import (
    IncompatibleSchema,
    InvalidSchema,
    InvalidVersion,
    SchemaNotFound,
    SubjectConfigNotFound,
    SubjectNotFound,
    SubjectNotSoftDeleted,
    SubjectSoftDeleted,
    VersionNotFound,
    VersionNotSoftDeleted,
    VersionSoftDeleted,
)
from buildkit.registry.parsing import AVRO, ParsedSchema, fingerprint, parse_schema
from buildkit.registry.store import RegistryStore, StoredSchema, SubjectVersion, Transaction

_MAX_VERSION = 2**31 - 1
_LATEST = -1
# Confluent's "no prefix" value for GET /subjects?subjectPrefix=
_ANY_PREFIX = ":*:"


@dataclass(frozen=True)
class SchemaInput:
    """A schema as a client sends it: text, type and references."""

    text: str
    schema_type: str = AVRO
    references: Sequence[tuple[str, str, int]] = ()  # (name, subject, version)


@dataclass(frozen=True)
class Registration:
    """Where a registered schema landed."""

    schema_id: int
    subject: str
    version: int
    references: list[dict[str, object]]


def parse_version(version: str | int) -> int:
    """A version path parameter: a number in [1, 2^31-1], or ``latest`` / ``-1`` (→ -1)."""
    text = str(version).strip()
    if text.lower() == "latest":
        return _LATEST
    try:
        number = int(text)
    except ValueError:
        raise InvalidVersion(text) from None
    if number == _LATEST or 1 <= number <= _MAX_VERSION:
        return number
    raise InvalidVersion(text)


class SchemaRegistry:
    """The schema registry's operations over a :class:`RegistryStore`."""

    def __init__(self, store: RegistryStore, *, parsed_cache_size: int = 1000) -> None:
        self.store = store
        # Schemas are immutable per id, so their parsed form can be kept: the
        # compatibility check parses every earlier version of a subject.
        self._parsed: dict[int, avro.schema.Schema] = {}
        self._parsed_lock = threading.Lock()
        self._parsed_cache_size = parsed_cache_size

    # Registration and lookup ------------------------------------------------
    def register(self, subject: str, schema: SchemaInput) -> Registration:
        """Register ``schema`` under ``subject``; the same schema again changes nothing.

        Raises :class:`InvalidSchema` (422) and :class:`IncompatibleSchema` (409).
        """
        with self.store.transaction() as tx:
            # Held until commit: concurrent writers to this subject see each
            # other's versions, so the check and the version number hold.
            tx.lock_subject(subject)
            parsed, refs = self._parse_input(tx, schema)
            identity = fingerprint(parsed.normalized, AVRO, refs)
            live = tx.versions(subject)
            for existing in reversed(live):
                if existing.schema.fingerprint == identity:
                    return Registration(existing.schema.id, subject, existing.version, refs)
            level = self._level(tx, subject)
            if live and level is not CompatibilityLevel.NONE:
                problems = check_compatibility(
                    parsed.schema,
                    [self._parsed_schema(tx, v.schema) for v in live],
                    level,
                    labels=[f"version {v.version}" for v in live],
                )
                if problems:
                    raise IncompatibleSchema(
                        "Schema being registered is incompatible with an earlier schema for "
                        f'subject "{subject}" (compatibility {level}): ' + "; ".join(problems),
                        problems,
                    )
            schema_id = tx.insert_schema(identity, AVRO, schema.text, refs)
            version = tx.add_version(subject, schema_id)
            return Registration(schema_id, subject, version, refs)

    def lookup(self, subject: str, schema: SchemaInput, *, deleted: bool = False) -> SubjectVersion:
        """The newest version of ``subject`` holding ``schema``.

        Raises :class:`SubjectNotFound` (40401) or :class:`SchemaNotFound` (40403).
        """
        with self.store.transaction() as tx:
            versions = tx.versions(subject, deleted=deleted)
            if not versions:
                raise SubjectNotFound(subject)
            parsed, refs = self._parse_input(tx, schema)
            identity = fingerprint(parsed.normalized, AVRO, refs)
            for version in reversed(versions):
                if version.schema.fingerprint == identity:
                    return version
        raise SchemaNotFound(f"Schema not found under subject '{subject}'.")

    def schema(self, schema_id: int) -> StoredSchema:
        """The schema with global id ``schema_id``, or :class:`SchemaNotFound` (40403)."""
        with self.store.transaction() as tx:
            found = tx.schema(schema_id)
        if found is None:
            raise SchemaNotFound(f"Schema {schema_id} not found")
        return found

    def schema_versions(self, schema_id: int, *, deleted: bool = False) -> list[tuple[str, int]]:
        """``(subject, version)`` pairs using schema ``schema_id`` (40403 for an unknown id)."""
        with self.store.transaction() as tx:
            if tx.schema(schema_id) is None:
                raise SchemaNotFound(f"Schema {schema_id} not found")
            return tx.schema_versions(schema_id, deleted=deleted)

    # Subjects and versions --------------------------------------------------
    def subjects(
        self, *, prefix: str | None = None, deleted: bool = False, deleted_only: bool = False
    ) -> list[str]:
        """Subject names, sorted; also soft-deleted ones, or only them (``deleted_only``)."""
        if prefix in (None, _ANY_PREFIX):
            prefix = ""
        with self.store.transaction() as tx:
            return tx.subjects(prefix=prefix or "", deleted=deleted, deleted_only=deleted_only)

    def versions(
        self, subject: str, *, deleted: bool = False, deleted_only: bool = False
    ) -> list[int]:
        """The subject's version numbers, oldest first; 40401 if there are none."""
        with self.store.transaction() as tx:
            found = tx.versions(subject, deleted=deleted or deleted_only)
        if deleted_only:
            found = [v for v in found if v.deleted]
        if not found:
            raise SubjectNotFound(subject)
        return [v.version for v in found]

    def version(self, subject: str, version: str | int, *, deleted: bool = False) -> SubjectVersion:
        """One version (or ``latest``); 40401 unknown subject, 40402 unknown version."""
        number = parse_version(version)
        with self.store.transaction() as tx:
            return _pick(tx.versions(subject, deleted=deleted), subject, number)

    def referenced_by(self, subject: str, version: str | int) -> list[int]:
        """Ids of schemas that reference this subject version."""
        found = self.version(subject, version, deleted=True)
        with self.store.transaction() as tx:
            return tx.referenced_by(found.subject, found.version)

    def delete_subject(self, subject: str, *, permanent: bool = False) -> list[int]:
        """Soft-delete the subject (or remove it, once soft-deleted); the versions affected."""
        with self.store.transaction() as tx:
            tx.lock_subject(subject)
            every = tx.versions(subject, deleted=True)
            if not every:
                raise SubjectNotFound(subject)
            live = [v.version for v in every if not v.deleted]
            if permanent:
                if live:
                    raise SubjectNotSoftDeleted(subject)
                numbers = [v.version for v in every]
                tx.hard_delete(subject, numbers)
                return numbers
            if not live:
                raise SubjectSoftDeleted(subject)
            tx.soft_delete(subject, live)
            # Confluent drops a deleted subject's own compatibility level with it.
            tx.delete_compatibility(subject)
            return live

    def delete_version(self, subject: str, version: str | int, *, permanent: bool = False) -> int:
        """Soft-delete one version (or remove it, once soft-deleted); its number."""
        number = parse_version(version)
        with self.store.transaction() as tx:
            tx.lock_subject(subject)
            every = tx.versions(subject, deleted=True)
            if not every:
                raise SubjectNotFound(subject)
            if permanent:
                found = _pick(every, subject, number)
                if not found.deleted:
                    raise VersionNotSoftDeleted(subject, found.version)
                tx.hard_delete(subject, [found.version])
                return found.version
            if number != _LATEST and any(v.version == number and v.deleted for v in every):
                raise VersionSoftDeleted(subject, number)
            found = _pick([v for v in every if not v.deleted], subject, number)
            tx.soft_delete(subject, [found.version])
            return found.version

    # Compatibility ----------------------------------------------------------
    def compatibility(self, subject: str | None = None, *, default_to_global: bool = True) -> str:
        """The level in force for ``subject`` (``None``: the global level).

        Without a level of its own a subject answers the global level, as
        confluent-kafka's ``get_compatibility`` documents, unless
        ``default_to_global`` is false (then 40408, as Confluent's server).
        """
        with self.store.transaction() as tx:
            if subject is not None:
                own = tx.compatibility(subject)
                if own is not None:
                    return own
                if not default_to_global:
                    raise SubjectConfigNotFound(subject)
            return tx.compatibility(None) or CompatibilityLevel.BACKWARD.value

    def set_compatibility(self, subject: str | None, level: str | None) -> str:
        """Set the level of ``subject`` (``None``: global); 42203 for an unknown level."""
        parsed = CompatibilityLevel.parse(level or "")
        with self.store.transaction() as tx:
            tx.set_compatibility(subject, parsed.value)
        return parsed.value

    def delete_compatibility(self, subject: str | None) -> str:
        """Forget the level of ``subject`` (global: back to BACKWARD); the level it had."""
        with self.store.transaction() as tx:
            old = tx.compatibility(subject)
            if old is None and subject is not None:
                raise SubjectConfigNotFound(subject)
            tx.delete_compatibility(subject)
        return old or CompatibilityLevel.BACKWARD.value

    def test_compatibility(
        self, subject: str, schema: SchemaInput, version: str | int | None = None
    ) -> list[str]:
        """Why ``schema`` would break the subject's level ([] when it wouldn't).

        ``version=None`` tests against the versions the level covers (all
        for the transitive levels, else the latest); a version tests against
        that one only. A subject with no versions accepts anything when
        ``version`` is None, else answers 40401.
        """
        with self.store.transaction() as tx:
            parsed, _ = self._parse_input(tx, schema)
            live = tx.versions(subject)
            level = self._level(tx, subject)
            if version is None:
                targets = live
            else:
                targets = [_pick(live, subject, parse_version(version))]
                if level.transitive:  # one target: the transitive part does not apply
                    level = CompatibilityLevel(level.value.removesuffix("_TRANSITIVE"))
            existing = [self._parsed_schema(tx, v.schema) for v in targets]
        return check_compatibility(
            parsed.schema, existing, level, labels=[f"version {v.version}" for v in targets]
        )

    # Internals --------------------------------------------------------------
    def _level(self, tx: Transaction, subject: str) -> CompatibilityLevel:
        level = tx.compatibility(subject) or tx.compatibility(None)
        return CompatibilityLevel.parse(level) if level else CompatibilityLevel.BACKWARD

    def _parse_input(
        self, tx: Transaction, schema: SchemaInput
    ) -> tuple[ParsedSchema, list[dict[str, object]]]:
        if schema.schema_type.upper() != AVRO:
            raise InvalidSchema(
                f'schemaType "{schema.schema_type}" is not supported: this registry stores '
                "AVRO schemas only"
            )
        if not schema.text.strip():
            raise InvalidSchema("Empty schema")
        named: list[str] = []
        refs: list[dict[str, object]] = []
        for name, ref_subject, ref_version in schema.references:
            found = self._reference(tx, ref_subject, ref_version)
            named += self._reference_texts(tx, found.schema, set())
            refs.append({"name": name, "subject": found.subject, "version": found.version})
        return parse_schema(schema.text, named), refs

    def _reference(self, tx: Transaction, subject: str, version: int) -> SubjectVersion:
        try:
            return _pick(tx.versions(subject, deleted=True), subject, parse_version(version))
        except (SubjectNotFound, VersionNotFound, InvalidVersion) as exc:
            raise InvalidSchema(
                f'reference to subject "{subject}" version {version} cannot be resolved: '
                f"{exc.message}"
            ) from exc

    def _reference_texts(self, tx: Transaction, schema: StoredSchema, seen: set[int]) -> list[str]:
        """Texts ``schema`` depends on, dependencies first, then ``schema`` itself."""
        if schema.id in seen:
            return []
        seen.add(schema.id)
        texts: list[str] = []
        for ref in schema.references:
            found = self._reference(tx, str(ref["subject"]), int(ref["version"]))
            texts += self._reference_texts(tx, found.schema, seen)
        return [*texts, schema.text]

    def _parsed_schema(self, tx: Transaction, stored: StoredSchema) -> avro.schema.Schema:
        with self._parsed_lock:
            cached = self._parsed.get(stored.id)
        if cached is not None:
            return cached
        named: list[str] = []
        for ref in stored.references:
            found = self._reference(tx, str(ref["subject"]), int(ref["version"]))
            named += self._reference_texts(tx, found.schema, set())
        parsed = parse_schema(stored.text, named, what=f"schema {stored.id}").schema
        with self._parsed_lock:
            if len(self._parsed) >= self._parsed_cache_size:
                self._parsed.pop(next(iter(self._parsed)))  # oldest first: insertion order
            self._parsed[stored.id] = parsed
        return parsed


def _pick(versions: list[SubjectVersion], subject: str, number: int) -> SubjectVersion:
    if not versions:
        raise SubjectNotFound(subject)
    if number == _LATEST:
        return versions[-1]
    for version in versions:
        if version.version == number:
            return version
    raise VersionNotFound(subject, number)
