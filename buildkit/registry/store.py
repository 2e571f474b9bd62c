"""The registry's Postgres tables and every SQL statement that reads or writes them.

Schemas are immutable rows identified by a fingerprint of their normalized
form (unique), so one schema has one global id whichever subject registers it.
A subject is its list of versions, each pointing at a schema id; deletes are
soft (a flag) unless permanent. Writers to a subject serialize on a
transaction-scoped advisory lock, so the compatibility check and the new
version number are decided against a subject nobody else is changing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from buildkit import db
from buildkit.errors import DatabaseUnavailable
from buildkit.settings import Settings

# First key of the two-int advisory locks the registry takes ("SR"); the second
# is hashtext(subject). A hash collision only makes two subjects wait on each other.
_LOCK_CLASS = 0x5352
_GLOBAL = ""  # registry_config.subject of the global compatibility level

_TABLES = """
CREATE TABLE IF NOT EXISTS registry_schemas (
    id          serial PRIMARY KEY,
    fingerprint text NOT NULL UNIQUE,
    schema_type text NOT NULL DEFAULT 'AVRO',
    schema_text text NOT NULL,
    refs        jsonb NOT NULL DEFAULT '[]'::jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS registry_subject_versions (
    subject    text NOT NULL,
    version    integer NOT NULL,
    schema_id  integer NOT NULL REFERENCES registry_schemas (id),
    deleted    boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (subject, version)
);
CREATE INDEX IF NOT EXISTS registry_subject_versions_schema_id
    ON registry_subject_versions (schema_id);
CREATE TABLE IF NOT EXISTS registry_config (
    subject       text PRIMARY KEY,
    compatibility text NOT NULL
);
"""

_VERSION_COLUMNS = """
    v.subject, v.version, v.deleted, s.id, s.fingerprint, s.schema_type, s.schema_text, s.refs
"""


@dataclass(frozen=True)
class StoredSchema:
    """One registered schema: its global id and what was registered."""

    id: int
    fingerprint: str
    schema_type: str
    text: str
    references: list[dict[str, Any]]


@dataclass(frozen=True)
class SubjectVersion:
    """One version of a subject and the schema it points at."""

    subject: str
    version: int
    deleted: bool
    schema: StoredSchema


class RegistryStore:
    """Pooled access to the registry's tables; use :meth:`open` to create one."""

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool

    @classmethod
    def open(cls, settings: Settings, *, max_connections: int = 10) -> RegistryStore:
        """Connect to ``BAR_DATABASE_URL``, create the tables if missing, open a pool.

        Raises :class:`DatabaseUnavailable` with the (redacted) address when
        Postgres does not answer.
        """
        with db.connect(settings) as conn:
            create_tables(conn)
        pool: ConnectionPool = ConnectionPool(
            settings.database_dsn(),
            min_size=1,
            max_size=max_connections,
            kwargs={"autocommit": True},
            # A connection broken by a Postgres restart is replaced, not handed out.
            check=ConnectionPool.check_connection,
            timeout=10,
            name="schema-registry",
            open=False,
        )
        try:
            pool.open(wait=True, timeout=10)
        except PoolTimeout as exc:
            pool.close()
            raise DatabaseUnavailable(
                f"cannot open connections to Postgres at {settings.display_database_url()}"
            ) from exc
        return cls(pool)

    def close(self) -> None:
        """Close every pooled connection."""
        self._pool.close()

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """One Postgres transaction: committed on exit, rolled back on an exception."""
        with self._pool.connection() as conn, conn.transaction():
            yield Transaction(conn)


def create_tables(conn: psycopg.Connection) -> None:
    """Create the registry's tables if missing; safe when several servers start at once."""
    with conn.transaction():
        # CREATE ... IF NOT EXISTS still races on the catalog: serialize it.
        conn.execute("SELECT pg_advisory_xact_lock(%s, 0)", (_LOCK_CLASS,))
        conn.execute(_TABLES)


class Transaction:
    """The registry's queries, run inside one transaction."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self._conn = conn

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self._conn.execute(sql, params).fetchall()

    # Locks ------------------------------------------------------------------
    def lock_subject(self, subject: str) -> None:
        """Hold the subject's write lock until this transaction ends."""
        self._conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_LOCK_CLASS, subject))

    # Schemas ----------------------------------------------------------------
    def schema(self, schema_id: int) -> StoredSchema | None:
        """The schema with global id ``schema_id``."""
        rows = self._rows(
            "SELECT id, fingerprint, schema_type, schema_text, refs "
            "FROM registry_schemas WHERE id = %s",
            (schema_id,),
        )
        return _schema(rows[0]) if rows else None

    def insert_schema(
        self, fingerprint: str, schema_type: str, text: str, references: list[dict[str, Any]]
    ) -> int:
        """The id of the schema with ``fingerprint``, inserting it if new.

        Two transactions inserting the same fingerprint at once: the second
        waits on the unique index, does nothing, and reads the first one's id.
        """
        rows = self._rows(
            "INSERT INTO registry_schemas (fingerprint, schema_type, schema_text, refs) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (fingerprint) DO NOTHING RETURNING id",
            (fingerprint, schema_type, text, Jsonb(references)),
        )
        if not rows:
            rows = self._rows(
                "SELECT id FROM registry_schemas WHERE fingerprint = %s", (fingerprint,)
            )
        return int(rows[0][0])

    def schema_versions(self, schema_id: int, *, deleted: bool) -> list[tuple[str, int]]:
        """``(subject, version)`` pairs registered with schema ``schema_id``."""
        rows = self._rows(
            "SELECT subject, version FROM registry_subject_versions "
            "WHERE schema_id = %s AND (%s OR NOT deleted) ORDER BY subject, version",
            (schema_id, deleted),
        )
        return [(str(subject), int(version)) for subject, version in rows]

    def referenced_by(self, subject: str, version: int) -> list[int]:
        """Ids of the schemas whose references name ``subject`` ``version``."""
        needle = Jsonb([{"subject": subject, "version": version}])
        rows = self._rows("SELECT id FROM registry_schemas WHERE refs @> %s ORDER BY id", (needle,))
        return [int(row[0]) for row in rows]

    # Subjects and versions --------------------------------------------------
    def subjects(self, *, prefix: str, deleted: bool, deleted_only: bool) -> list[str]:
        """Subject names starting with ``prefix``: live ones, or also/only soft-deleted ones."""
        if deleted_only:
            having = "bool_or(deleted) AND NOT bool_or(NOT deleted)"
        elif deleted:
            having = "true"
        else:
            having = "bool_or(NOT deleted)"
        rows = self._rows(
            "SELECT subject FROM registry_subject_versions WHERE starts_with(subject, %s) "  # noqa: S608
            f"GROUP BY subject HAVING {having} ORDER BY subject",
            (prefix,),
        )
        return [str(row[0]) for row in rows]

    def versions(self, subject: str, *, deleted: bool = False) -> list[SubjectVersion]:
        """The subject's versions, oldest first; soft-deleted ones only if ``deleted``."""
        rows = self._rows(
            f"SELECT {_VERSION_COLUMNS} FROM registry_subject_versions v "  # noqa: S608
            "JOIN registry_schemas s ON s.id = v.schema_id "
            "WHERE v.subject = %s AND (%s OR NOT v.deleted) ORDER BY v.version",
            (subject, deleted),
        )
        return [_version(row) for row in rows]

    def add_version(self, subject: str, schema_id: int) -> int:
        """Append ``schema_id`` as the subject's next version (hold the subject lock)."""
        # Numbers keep growing past soft-deleted versions, as in Confluent.
        rows = self._rows(
            "INSERT INTO registry_subject_versions (subject, version, schema_id) "
            "SELECT %s, coalesce(max(version), 0) + 1, %s FROM registry_subject_versions "
            "WHERE subject = %s RETURNING version",
            (subject, schema_id, subject),
        )
        return int(rows[0][0])

    def soft_delete(self, subject: str, versions: list[int]) -> None:
        """Flag the subject's ``versions`` as deleted."""
        self._conn.execute(
            "UPDATE registry_subject_versions SET deleted = true "
            "WHERE subject = %s AND version = ANY(%s)",
            (subject, versions),
        )

    def hard_delete(self, subject: str, versions: list[int]) -> None:
        """Remove the subject's ``versions`` for good (their schemas and ids stay)."""
        self._conn.execute(
            "DELETE FROM registry_subject_versions WHERE subject = %s AND version = ANY(%s)",
            (subject, versions),
        )

    # Compatibility configuration --------------------------------------------
    def compatibility(self, subject: str | None) -> str | None:
        """The level set for ``subject`` (``None``: the global one), if any."""
        rows = self._rows(
            "SELECT compatibility FROM registry_config WHERE subject = %s",
            (_GLOBAL if subject is None else subject,),
        )
        return str(rows[0][0]) if rows else None

    def set_compatibility(self, subject: str | None, level: str) -> None:
        """Set the level of ``subject`` (``None``: the global one)."""
        self._conn.execute(
            "INSERT INTO registry_config (subject, compatibility) VALUES (%s, %s) "
            "ON CONFLICT (subject) DO UPDATE SET compatibility = excluded.compatibility",
            (_GLOBAL if subject is None else subject, level),
        )

    def delete_compatibility(self, subject: str | None) -> None:
        """Forget the level set for ``subject`` (``None``: the global one)."""
        self._conn.execute(
            "DELETE FROM registry_config WHERE subject = %s",
            (_GLOBAL if subject is None else subject,),
        )


def _schema(row: tuple[Any, ...]) -> StoredSchema:
    schema_id, fingerprint, schema_type, text, refs = row
    if isinstance(refs, str):  # jsonb arrives decoded; be lenient with a text column
        refs = json.loads(refs)
    return StoredSchema(int(schema_id), str(fingerprint), str(schema_type), str(text), list(refs))


def _version(row: tuple[Any, ...]) -> SubjectVersion:
    subject, version, deleted, *schema = row
    return SubjectVersion(str(subject), int(version), bool(deleted), _schema(tuple(schema)))
