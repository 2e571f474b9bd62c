"""The Confluent Schema Registry REST API over :class:`SchemaRegistry` (FastAPI).

Paths, query parameters and bodies are the ones confluent-kafka's
``SchemaRegistryClient`` sends; every error answers Confluent's shape
``{"error_code": …, "message": …}``, which that client turns into a
``SchemaRegistryError`` with the same status and code. Endpoints are plain
``def``: psycopg's pool is synchronous, so they run in the server's thread pool.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, TypeVar

import psycopg
from fastapi import APIRouter, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from psycopg_pool import PoolTimeout
from starlette.exceptions import HTTPException

from buildkit.registry.auth import BasicAuth
from buildkit.registry.errors import RegistryError, Unauthorized
from buildkit.registry.models import (
    CompatibilityResult,
    ConfigBody,
    ConfigUpdate,
    ConfigUpdated,
    RegisteredId,
    SchemaBody,
    SchemaRequest,
    SubjectVersionBody,
    SubjectVersionPair,
    references_out,
)
from buildkit.registry.parsing import AVRO
from buildkit.registry.service import SchemaInput, SchemaRegistry
from buildkit.registry.store import RegistryStore, SubjectVersion

log = logging.getLogger(__name__)

MEDIA_TYPE = "application/vnd.schemaregistry.v1+json"
T = TypeVar("T")


class RegistryJSONResponse(JSONResponse):
    """JSON with Confluent's content type."""

    media_type = MEDIA_TYPE


def create_app(store: RegistryStore, *, auth: BasicAuth | None = None) -> FastAPI:
    """The registry's ASGI app over ``store``; requires ``auth`` on every request if given.

    The app owns ``store`` from then on and closes it on shutdown.
    """

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        store.close()

    app = FastAPI(
        title="Agent BuildKit schema registry",
        description="The Confluent Schema Registry REST API, schemas kept in Postgres.",
        default_response_class=RegistryJSONResponse,
        lifespan=lifespan,
    )
    registry = SchemaRegistry(store)
    app.include_router(_routes(registry))
    _install_error_handlers(app)
    if auth is not None:
        _install_auth(app, auth)
    return app


def _routes(registry: SchemaRegistry) -> APIRouter:
    router = APIRouter()

    @router.get("/")
    def root() -> dict[str, Any]:
        """Confluent's liveness answer: an empty object."""
        return {}

    @router.get("/contexts")
    def contexts() -> list[str]:
        """Only the default context exists."""
        return ["."]

    @router.get("/schemas/types")
    def schema_types() -> list[str]:
        """The schema types this registry accepts."""
        return [AVRO]

    @router.get("/mode")
    @router.get("/mode/{subject}")
    def mode(subject: str | None = None) -> dict[str, str]:
        """Always read-write: import and read-only modes are not supported."""
        return {"mode": "READWRITE"}

    @router.get("/associations/resources/{namespace}/{name}")
    def associations(namespace: str, name: str) -> Response:
        """No associations are kept: Confluent's 404, so serializers use the topic-name strategy."""
        return _error_response(
            404,
            404,
            f'No associations found for resource "{name}" in namespace "{namespace}"',
        )

    # Subjects -----------------------------------------------------------------
    @router.get("/subjects")
    def subjects(
        subject_prefix: Annotated[str | None, Query(alias="subjectPrefix")] = None,
        deleted: bool = False,
        deleted_only: bool = False,
        offset: int = 0,
        limit: int = -1,
    ) -> list[str]:
        """Subject names, sorted."""
        found = registry.subjects(prefix=subject_prefix, deleted=deleted, deleted_only=deleted_only)
        return _page(found, offset, limit)

    @router.post("/subjects/{subject}/versions", response_model_exclude_none=True)
    def register(subject: str, body: SchemaRequest, normalize: bool = False) -> RegisteredId:
        """Register a schema under ``subject`` (idempotent); its global id."""
        # Identity always uses the normalized form, so ``normalize`` changes nothing.
        done = registry.register(subject, _input(body))
        return RegisteredId(
            id=done.schema_id,
            subject=done.subject,
            version=done.version,
            schema_text=body.schema_text,
            schema_type=None if body.schema_type.upper() == AVRO else body.schema_type,
            references=references_out(done.references),
        )

    @router.post("/subjects/{subject}", response_model_exclude_none=True)
    def lookup(
        subject: str, body: SchemaRequest, normalize: bool = False, deleted: bool = False
    ) -> SubjectVersionBody:
        """The version of ``subject`` holding this schema."""
        return _version_body(registry.lookup(subject, _input(body), deleted=deleted))

    @router.delete("/subjects/{subject}")
    def delete_subject(subject: str, permanent: bool = False) -> list[int]:
        """Soft-delete (or, once soft-deleted, permanently delete) a subject."""
        return registry.delete_subject(subject, permanent=permanent)

    @router.get("/subjects/{subject}/versions")
    def versions(
        subject: str,
        deleted: bool = False,
        deleted_only: bool = False,
        offset: int = 0,
        limit: int = -1,
    ) -> list[int]:
        """The subject's version numbers."""
        found = registry.versions(subject, deleted=deleted, deleted_only=deleted_only)
        return _page(found, offset, limit)

    @router.get("/subjects/{subject}/versions/{version}", response_model_exclude_none=True)
    def version(subject: str, version: str, deleted: bool = False) -> SubjectVersionBody:
        """One version of a subject (``latest`` or a number)."""
        return _version_body(registry.version(subject, version, deleted=deleted))

    @router.get("/subjects/{subject}/versions/{version}/schema")
    def version_schema(subject: str, version: str, deleted: bool = False) -> Response:
        """Just the schema text of one version."""
        found = registry.version(subject, version, deleted=deleted)
        return Response(found.schema.text, media_type=MEDIA_TYPE)

    @router.get("/subjects/{subject}/versions/{version}/referencedby")
    def referenced_by(subject: str, version: str, offset: int = 0, limit: int = -1) -> list[int]:
        """Ids of the schemas that reference this version."""
        return _page(registry.referenced_by(subject, version), offset, limit)

    @router.delete("/subjects/{subject}/versions/{version}")
    def delete_version(subject: str, version: str, permanent: bool = False) -> int:
        """Soft-delete (or, once soft-deleted, permanently delete) one version."""
        return registry.delete_version(subject, version, permanent=permanent)

    # Schemas by id --------------------------------------------------------------
    @router.get("/schemas/ids/{schema_id}", response_model_exclude_none=True)
    def schema(schema_id: int, subject: str | None = None) -> SchemaBody:
        """The schema with a global id (``subject`` and ``format`` are accepted, not needed)."""
        found = registry.schema(schema_id)
        return SchemaBody(
            schema_text=found.text,
            schema_type=None if found.schema_type == AVRO else found.schema_type,
            references=references_out(found.references),
        )

    @router.get("/schemas/ids/{schema_id}/schema")
    def schema_text(schema_id: int) -> Response:
        """Just the schema text of a global id."""
        return Response(registry.schema(schema_id).text, media_type=MEDIA_TYPE)

    @router.get("/schemas/ids/{schema_id}/subjects")
    def schema_subjects(
        schema_id: int,
        subject: str | None = None,
        deleted: bool = False,
        offset: int = 0,
        limit: int = -1,
    ) -> list[str]:
        """Subjects registered with a global id."""
        pairs = registry.schema_versions(schema_id, deleted=deleted)
        names = list(dict.fromkeys(s for s, _ in pairs if subject is None or s == subject))
        return _page(names, offset, limit)

    @router.get("/schemas/ids/{schema_id}/versions")
    def schema_versions(
        schema_id: int,
        subject: str | None = None,
        deleted: bool = False,
        offset: int = 0,
        limit: int = -1,
    ) -> list[SubjectVersionPair]:
        """``(subject, version)`` pairs registered with a global id."""
        pairs = registry.schema_versions(schema_id, deleted=deleted)
        found = [
            SubjectVersionPair(subject=s, version=v)
            for s, v in pairs
            if subject is None or s == subject
        ]
        return _page(found, offset, limit)

    # Compatibility configuration ------------------------------------------------
    @router.get("/config")
    def global_config() -> ConfigBody:
        """The global compatibility level (BACKWARD unless set)."""
        return ConfigBody(compatibility_level=registry.compatibility(None))

    @router.put("/config")
    def set_global_config(body: ConfigUpdate) -> ConfigUpdated:
        """Set the global compatibility level."""
        return ConfigUpdated(compatibility=registry.set_compatibility(None, body.compatibility))

    @router.delete("/config")
    def delete_global_config() -> ConfigBody:
        """Reset the global level to BACKWARD; answers the level it had."""
        return ConfigBody(compatibility_level=registry.delete_compatibility(None))

    @router.get("/config/{subject}")
    def subject_config(
        subject: str,
        default_to_global: Annotated[bool, Query(alias="defaultToGlobal")] = True,
    ) -> ConfigBody:
        """The subject's level, else the global one (unless ``defaultToGlobal=false``)."""
        level = registry.compatibility(subject, default_to_global=default_to_global)
        return ConfigBody(compatibility_level=level)

    @router.put("/config/{subject}")
    def set_subject_config(subject: str, body: ConfigUpdate) -> ConfigUpdated:
        """Set the subject's own compatibility level."""
        return ConfigUpdated(compatibility=registry.set_compatibility(subject, body.compatibility))

    @router.delete("/config/{subject}")
    def delete_subject_config(subject: str) -> ConfigBody:
        """Drop the subject's own level; answers the level it had."""
        return ConfigBody(compatibility_level=registry.delete_compatibility(subject))

    # Compatibility tests --------------------------------------------------------
    @router.post(
        "/compatibility/subjects/{subject}/versions/{version}", response_model_exclude_none=True
    )
    def test_version(
        subject: str,
        version: str,
        body: SchemaRequest,
        verbose: bool = False,
        normalize: bool = False,
    ) -> CompatibilityResult:
        """Would this schema be compatible with one version under the subject's level?"""
        problems = registry.test_compatibility(subject, _input(body), version)
        return _compat_result(problems, verbose)

    @router.post("/compatibility/subjects/{subject}/versions", response_model_exclude_none=True)
    def test_all(
        subject: str, body: SchemaRequest, verbose: bool = False, normalize: bool = False
    ) -> CompatibilityResult:
        """Would this schema be compatible with the versions the subject's level covers?"""
        problems = registry.test_compatibility(subject, _input(body), None)
        return _compat_result(problems, verbose)

    return router


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RegistryError)
    async def registry_error(_: Request, exc: RegistryError) -> Response:
        return _error_response(exc.http_status, exc.error_code, exc.message)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException) -> Response:
        # Unknown paths and methods: Confluent's "HTTP 404 Not Found" style.
        message = f"HTTP {exc.status_code} {exc.detail}"
        return _error_response(exc.status_code, exc.status_code, message)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg', 'invalid')}"
            for err in exc.errors()
        )
        in_schema = any(tuple(err.get("loc", ()))[:2] == ("body", "schema") for err in exc.errors())
        return _error_response(422, 42201 if in_schema else 422, f"Invalid request: {problems}")

    @app.exception_handler(psycopg.Error)
    async def database_error(_: Request, exc: psycopg.Error) -> Response:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        log.warning("Postgres error: %s", first_line)
        return _error_response(500, 50001, "Error in the backend data store (Postgres)")

    @app.exception_handler(PoolTimeout)
    async def database_timeout(_: Request, exc: PoolTimeout) -> Response:
        return _error_response(500, 50002, "Timed out waiting for a Postgres connection")


def _install_auth(app: FastAPI, auth: BasicAuth) -> None:
    @app.middleware("http")
    async def require_basic_auth(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if not auth.accepts(request.headers.get("authorization")):
            denied = Unauthorized()
            response = _error_response(denied.http_status, denied.error_code, denied.message)
            response.headers["WWW-Authenticate"] = 'Basic realm="SchemaRegistry"'
            return response
        return await call_next(request)


def _error_response(status: int, code: int, message: str) -> Response:
    return RegistryJSONResponse({"error_code": code, "message": message}, status_code=status)


def _input(body: SchemaRequest) -> SchemaInput:
    return SchemaInput(
        text=body.schema_text,
        schema_type=body.schema_type,
        references=[(r.name, r.subject, r.version) for r in body.references],
    )


def _version_body(found: SubjectVersion) -> SubjectVersionBody:
    schema = found.schema
    return SubjectVersionBody(
        subject=found.subject,
        version=found.version,
        id=schema.id,
        schema_text=schema.text,
        schema_type=None if schema.schema_type == AVRO else schema.schema_type,
        references=references_out(schema.references),
        deleted=True if found.deleted else None,
    )


def _compat_result(problems: list[str], verbose: bool) -> CompatibilityResult:
    return CompatibilityResult(is_compatible=not problems, messages=problems if verbose else None)


def _page(items: list[T], offset: int, limit: int) -> list[T]:
    items = items[max(offset, 0) :]
    return items[:limit] if limit >= 0 else items
