"""The project's schema registry: Confluent's Schema Registry REST API, schemas kept in Postgres.

Run it with ``python -m buildkit.registry`` (``BAR_SCHEMA_REGISTRY_URL`` gives
the address to bind, ``BAR_DATABASE_URL`` the database). Any Confluent client
talks to it; production may swap in Confluent SR, Karapace or Apicurio.

The compatibility checker, :func:`buildkit.registry.compat.check_compatibility`,
is usable on its own. ``create_app`` is imported lazily so that using the checker
does not import FastAPI.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from buildkit.registry.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from buildkit.registry.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
