"""Runtime of an app built by :mod:`qits.apibuild`; copied verbatim next to it as ``_runtime.py``.

The generated ``app.py`` declares one route per operation (typed parameters, the
request model from ``models.py``) and calls the functions here, which keep each
CRUD resource in an in-memory dict and answer with bodies computed at build time.
It imports only FastAPI and the standard library so the built package runs with
``python -m uvicorn app:app --app-dir OUT`` and nothing of this repository.

Errors the spec documents are answered with the documented status and a body
synthesized from its schema: a missing item (404), missing credentials (401,
any non-empty value is accepted), an invalid request (the documented 422 or 400,
else FastAPI's 422).
"""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

Reply = tuple[int, Any]
"""A status code and a JSON body (``None``: no body)."""


class ReplyNow(Exception):
    """Raised to answer at once with a documented error (401 from a guard)."""

    def __init__(self, reply: Reply, headers: dict[str, str] | None = None) -> None:
        super().__init__(reply[0])
        self.reply = reply
        self.headers = headers or {}


@dataclass
class Store:
    """One CRUD resource: stored objects keyed by (parent path values..., id)."""

    id_field: str | None
    id_kind: str  # "int", "str" or "uuid"
    template: dict[str, Any]
    items: dict[tuple[str, ...], Any] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def new_id(self) -> Any:
        """The next id: 1, 2, ... as an int, a string or a UUID string."""
        n = next(self._ids)
        while self._taken(n):
            n = next(self._ids)
        if self.id_kind == "uuid":
            return str(uuid.UUID(int=n))
        return n if self.id_kind == "int" else str(n)

    def _taken(self, n: int) -> bool:
        key = str(uuid.UUID(int=n)) if self.id_kind == "uuid" else str(n)
        return any(k[-1] == key for k in self.items)


@dataclass
class Op:
    """How one operation answers; built from the spec by the api-builder."""

    status: int
    body: Any = None
    has_body: bool = True
    media_type: str = "application/json"
    echo: bool = True
    missing: Reply = (404, {"detail": "Not Found"})
    invalid: Reply | None = None
    unauthorized: Reply = (401, {"detail": "Not authenticated"})
    security: list[list[tuple[str, str]]] = field(default_factory=list)
    envelope: tuple[str, list[str]] | None = None
    parent: tuple[Store, int] | None = None


def answer(op: Op, body: Any) -> Response:
    """The operation's success response with ``body`` (or none when it documents none)."""
    if not op.has_body or op.status in (204, 304):
        return Response(status_code=op.status)
    if "json" not in op.media_type:
        text = body if isinstance(body, str) else ""
        return Response(text, status_code=op.status, media_type=op.media_type)
    return JSONResponse(jsonable_encoder(body), status_code=op.status)


def reply(r: Reply, headers: dict[str, str] | None = None) -> Response:
    """A documented error reply."""
    if r[1] is None:
        return Response(status_code=r[0], headers=headers)
    return JSONResponse(r[1], status_code=r[0], headers=headers)


def data_of(payload: Any) -> Any:
    """The request body as JSON data: the fields the client sent, by their wire names."""
    if payload is None:
        return {}
    if hasattr(payload, "model_dump"):
        return payload.model_dump(mode="json", by_alias=True, exclude_unset=True)
    return jsonable_encoder(payload)


def stub(
    op: Op, parents: tuple[Any, ...] = (), known: list[tuple[Any, list[str]]] | None = None
) -> Response:
    """Answer with the first documented success and its synthesized body.

    ``known`` pairs a path value with the values the spec documents for it (its
    examples): any other value is an item that does not exist, answered with 404.
    """
    _check_parent(op, parents)
    if known and any(str(value) not in values for value, values in known):
        return reply(op.missing)
    return answer(op, op.body)


def list_items(store: Store, op: Op, parents: tuple[Any, ...], limit: Any, offset: Any) -> Response:
    """200 with the stored objects under ``parents`` (paged by limit/offset when declared)."""
    _check_parent(op, parents)
    prefix = tuple(str(p) for p in parents)
    found = [obj for key, obj in store.items.items() if key[:-1] == prefix]
    start = int(offset or 0)
    page = found[start : start + int(limit)] if limit is not None else found[start:]
    if not op.echo:
        return answer(op, op.body)
    if op.envelope is None:
        return answer(op, page)
    key, count_keys = op.envelope
    return answer(op, {**op.body, key: page, **dict.fromkeys(count_keys, len(found))})


def create(store: Store, op: Op, parents: tuple[Any, ...], payload: Any) -> Response:
    """Store the body (plus template fields and a new id); answer the documented 2xx."""
    _check_parent(op, parents)
    data = data_of(payload)
    obj = {**store.template, **data} if isinstance(data, dict) else data
    ident: Any = None
    if isinstance(obj, dict) and store.id_field:
        ident = obj.get(store.id_field)
        if ident is None or store.id_field not in data:
            ident = store.new_id()
        obj[store.id_field] = ident
    if ident is None:
        ident = store.new_id()
    store.items[(*(str(p) for p in parents), str(ident))] = obj
    return answer(op, obj if op.echo else op.body)


def read(store: Store, op: Op, parents: tuple[Any, ...], ident: Any) -> Response:
    """The stored object, or the documented 404."""
    obj = store.items.get(_key(store, op, parents, ident))
    if obj is None:
        return reply(op.missing)
    return answer(op, obj if op.echo else op.body)


def replace(store: Store, op: Op, parents: tuple[Any, ...], ident: Any, payload: Any) -> Response:
    """Replace the stored object (keeping its id), or the documented 404."""
    key = _key(store, op, parents, ident)
    old = store.items.get(key)
    if old is None:
        return reply(op.missing)
    data = data_of(payload)
    obj = {**store.template, **data} if isinstance(data, dict) else data
    if isinstance(obj, dict) and isinstance(old, dict) and store.id_field in old:
        obj[store.id_field] = old[store.id_field]
    store.items[key] = obj
    return answer(op, obj if op.echo else op.body)


def update(store: Store, op: Op, parents: tuple[Any, ...], ident: Any, payload: Any) -> Response:
    """Merge the sent fields into the stored object, or the documented 404."""
    key = _key(store, op, parents, ident)
    old = store.items.get(key)
    if old is None:
        return reply(op.missing)
    data = data_of(payload)
    obj = {**old, **data} if isinstance(old, dict) and isinstance(data, dict) else data
    if isinstance(obj, dict) and isinstance(old, dict) and store.id_field in old:
        obj[store.id_field] = old[store.id_field]
    store.items[key] = obj
    return answer(op, obj if op.echo else op.body)


def delete(store: Store, op: Op, parents: tuple[Any, ...], ident: Any) -> Response:
    """Remove the stored object and answer the documented 2xx, or the documented 404."""
    obj = store.items.pop(_key(store, op, parents, ident), None)
    if obj is None:
        return reply(op.missing)
    return answer(op, obj if op.echo else op.body)


def _key(store: Store, op: Op, parents: tuple[Any, ...], ident: Any) -> tuple[str, ...]:
    return (*(str(p) for p in parents), str(ident))


def _check_parent(op: Op, parents: tuple[Any, ...]) -> None:
    """404 when the operation hangs under a stored item that does not exist."""
    if op.parent is None:
        return
    store, depth = op.parent
    if tuple(str(p) for p in parents[:depth]) not in store.items:
        raise ReplyNow(op.missing)


def guard(op: Op) -> list[Any]:
    """Route dependencies enforcing the operation's security: any non-empty credential passes.

    Alternatives are OR-ed, the schemes inside one are AND-ed (OpenAPI semantics).
    A guard runs before FastAPI validates the request, so a request without
    credentials gets 401 even when its body is also invalid.
    """
    if not op.security:
        return []

    def check(request: Request) -> None:
        if not any(all(_present(request, kind, name) for kind, name in alt) for alt in op.security):
            raise ReplyNow(op.unauthorized, {"WWW-Authenticate": _challenge(op)})

    return [Depends(check)]


def _present(request: Request, kind: str, name: str) -> bool:
    if kind == "header":
        return bool(request.headers.get(name, "").strip())
    if kind == "query":
        return bool(request.query_params.get(name, "").strip())
    if kind == "cookie":
        return bool(request.cookies.get(name, "").strip())
    scheme, _, credential = request.headers.get("authorization", "").strip().partition(" ")
    return scheme.lower() == kind and bool(credential.strip())


def _challenge(op: Op) -> str:
    kinds = [kind for alt in op.security for kind, _ in alt]
    if "basic" in kinds and "bearer" not in kinds:
        return "Basic"
    return "Bearer"


def install(app: FastAPI, ops: dict[str, Op]) -> None:
    """Register the handlers that turn errors into the replies the spec documents."""

    async def on_reply(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ReplyNow)
        return reply(exc.reply, exc.headers or None)

    async def on_invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        route = request.scope.get("route")
        op = ops.get(getattr(route, "name", ""))
        if op is not None and op.invalid is not None:
            return reply(op.invalid)
        return await request_validation_exception_handler(request, exc)

    app.add_exception_handler(ReplyNow, on_reply)
    app.add_exception_handler(RequestValidationError, on_invalid)
