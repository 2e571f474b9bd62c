"""Postgres connections for the registry and the audit archive (psycopg 3)."""

from __future__ import annotations

import psycopg

from buildkit.errors import DatabaseUnavailable
from buildkit.settings import Settings


def connect(
    settings: Settings, *, autocommit: bool = True, timeout_s: int = 10
) -> psycopg.Connection:
    """A connection to ``BAR_DATABASE_URL``, or a clear error naming the (redacted) address."""
    try:
        return psycopg.connect(
            settings.database_dsn(), autocommit=autocommit, connect_timeout=timeout_s
        )
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise DatabaseUnavailable(
            f"cannot reach Postgres at {settings.display_database_url()}: {reason} — "
            "start it with `buildkit dev up` or set BAR_DATABASE_URL"
        ) from exc
