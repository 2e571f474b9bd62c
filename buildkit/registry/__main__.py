"""``python -m buildkit.registry``: serve the schema registry from ``BAR_*`` settings.

Binds the host and port of ``BAR_SCHEMA_REGISTRY_URL``, keeps schemas in
``BAR_DATABASE_URL``, and requires basic auth when
``BAR_SCHEMA_REGISTRY_USERNAME``/``BAR_SCHEMA_REGISTRY_PASSWORD`` are set. A
problem a user can fix (Postgres down, half-set credentials) is one line on
stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import sys

from pydantic import ValidationError

from buildkit.errors import BuildKitError
from buildkit.settings import Settings, host_port

DEFAULT_PORT = 8081


def main() -> int:
    """Run the registry until interrupted; the process exit code."""
    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"BAR_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors()
        )
        print(f"schema registry: invalid settings: {problems}", file=sys.stderr)
        return 2

    # Imported here: settings errors should not wait for FastAPI and psycopg to load.
    import uvicorn

    from buildkit.registry.app import create_app
    from buildkit.registry.auth import BasicAuth
    from buildkit.registry.store import RegistryStore

    try:
        host, port = host_port(settings.schema_registry_url, DEFAULT_PORT)
        auth = BasicAuth.from_settings(settings)
        store = RegistryStore.open(settings)
    except BuildKitError as exc:
        print(f"schema registry: {exc}", file=sys.stderr)
        return exc.exit_code
    except ValueError as exc:  # a malformed port in BAR_SCHEMA_REGISTRY_URL
        print(f"schema registry: BAR_SCHEMA_REGISTRY_URL is not host:port: {exc}", file=sys.stderr)
        return 2

    print(
        f"schema registry on http://{host}:{port} "
        f"(Postgres {settings.display_database_url()}, "
        f"basic auth {'on' if auth else 'off'})",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(
        create_app(store, auth=auth),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
