"""The audit archive's table, created idempotently, and the SQL every part of the archive shares.

``audit_records`` is append-only: a statement trigger refuses UPDATE, DELETE
and TRUNCATE. A superuser can still get around it (``ALTER TABLE ... DISABLE
TRIGGER``, ``SET session_replication_role = replica``); the hash chain is what
shows that they did (``buildkit audit verify``).

Columns: the record as stored (topic, partition, offset, timestamp, key and
value bytes, headers in the chain's canonical encoding — order, duplicate names
and null values kept), the broker ``generation`` it came from (see
:mod:`buildkit.audit.archiver`), and its link in the chain (``prev_hash``,
``hash``). ``seq`` is the order rows were appended: the order of each chain.
"""

from __future__ import annotations

import psycopg

from buildkit.errors import BuildKitError
from buildkit.settings import Settings

TABLE = "audit_records"
TRIGGER = "audit_records_append_only"

# One process creates the schema at a time: concurrent CREATE ... IF NOT EXISTS
# can still collide in the catalogs. A single-bigint advisory key ("AUDITDDL").
_DDL_LOCK = 0x4155_4449_5444_444C

_DDL = """
CREATE TABLE IF NOT EXISTS audit_records (
    seq          bigserial PRIMARY KEY,
    topic        text NOT NULL,
    partition    integer NOT NULL,
    generation   integer NOT NULL DEFAULT 0,
    "offset"     bigint NOT NULL,
    timestamp_ms bigint NOT NULL,
    key          bytea,
    value        bytea,
    headers      bytea NOT NULL,
    prev_hash    bytea NOT NULL,
    hash         bytea NOT NULL,
    archived_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT audit_records_position UNIQUE (topic, partition, generation, "offset")
);
CREATE INDEX IF NOT EXISTS audit_records_topic_time ON audit_records (topic, timestamp_ms);
CREATE INDEX IF NOT EXISTS audit_records_chain ON audit_records (topic, partition, seq);

CREATE OR REPLACE FUNCTION audit_records_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_records is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'the audit archive keeps every record as it was archived';
END
$$;

DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_trigger
        WHERE tgname = 'audit_records_append_only' AND tgrelid = 'audit_records'::regclass
    ) THEN
        CREATE TRIGGER audit_records_append_only
            BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_records
            FOR EACH STATEMENT EXECUTE FUNCTION audit_records_refuse_change();
    END IF;
END
$$;
"""

#: Every column of a chain row, in :class:`buildkit.audit.chain.ChainRow` order.
COLUMNS = (
    'seq, topic, partition, generation, "offset", timestamp_ms, '
    "key, value, headers, prev_hash, hash"
)


def ensure_schema(conn: psycopg.Connection) -> None:
    """Create the table, its indexes and its append-only trigger if missing (idempotent)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK,))
        conn.execute(_DDL)


def require_schema(conn: psycopg.Connection, settings: Settings) -> None:
    """Fail clearly when the archive has never been created in this database."""
    row = conn.execute("SELECT to_regclass(%s)", (TABLE,)).fetchone()
    if row is None or row[0] is None:
        raise BuildKitError(
            f"there is no audit archive in {settings.display_database_url()} "
            f"(no table {TABLE}) — start the archiver: buildkit audit archive (or buildkit dev up)"
        )
