"""A Kubernetes API server double: the REST calls SWARM's Kubernetes backend makes, over HTTP.

A real server (FastAPI + uvicorn in a background thread on a free port) answering,
as the Kubernetes API reference documents them:

======  ==========================================================  ======================
GET     ``/apis/apps/v1/namespaces/{ns}/deployments``               DeploymentList
                                                                    (``labelSelector``:
                                                                    ``k=v``, ``k!=v``,
                                                                    ``k``, ``!k``)
POST    ``/apis/apps/v1/namespaces/{ns}/deployments``               201 Deployment
GET     ``/apis/apps/v1/namespaces/{ns}/deployments/{name}``        Deployment
GET     ``/apis/apps/v1/namespaces/{ns}/deployments/{name}/scale``  autoscaling/v1 Scale
PATCH   ``/apis/apps/v1/namespaces/{ns}/deployments/{name}/scale``  Scale (merge-patch or
                                                                    strategic-merge-patch
                                                                    JSON; others 415)
GET     ``/api/v1/namespaces/{ns}/pods/{name}``                     Pod
DELETE  ``/api/v1/namespaces/{ns}/pods/{name}``                     Pod being deleted
                                                                    (``preconditions.uid``
                                                                    honoured: 409)
POST    ``/api/v1/namespaces/{ns}/configmaps``                      201 ConfigMap
PUT     ``/api/v1/namespaces/{ns}/configmaps/{name}``               ConfigMap
======  ==========================================================  ======================

Errors are ``Status`` objects (``kind: Status``, ``status: Failure``, ``reason``,
``code``, ``message``, ``details``) with the API's messages: 404 NotFound
(``deployments.apps "x" not found``), 409 AlreadyExists / Conflict, 422 Invalid,
400 BadRequest, 415 UnsupportedMediaType, and 401 Unauthorized when a bearer token
is configured and the request lacks it. ``fieldValidation=Strict`` rejects fields
the Kubernetes OpenAPI schema (the official client's models) does not declare;
otherwise they earn a ``Warning`` header, as the API does.

It plays the Deployment controller too, instantly: a Deployment of N replicas
has N Running pods ``<name>-<hash>-<5 chars>`` with the template's labels, a
scale change adds or removes pods, and a deleted pod is replaced by a new one.
Every request is recorded (:attr:`KubernetesApiDouble.requests`).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import random
import re
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from kubernetes.client import models
from starlette.exceptions import HTTPException as StarletteHTTPException

from tests.helpers.http_double import HttpDouble

_LIST_TYPE = re.compile(r"^(?:List\[(.+)\]|list\[(.+)\])$")
_DICT_TYPE = re.compile(r"^(?:Dict\[str, (.+)\]|dict\(str, (.+)\))$")
# The alphabet Kubernetes uses for generated name suffixes (no vowels, no 0/1/3).
_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
JSON = "application/json"
_JSON_PATCHES = {"application/merge-patch+json", "application/strategic-merge-patch+json"}


def unknown_fields(value: Any, type_name: str, path: str = "") -> list[str]:
    """Paths in ``value`` that the Kubernetes OpenAPI type ``type_name`` does not declare.

    The schema is the official client's generated models (``openapi_types`` and
    ``attribute_map``), e.g. ``unknown_fields(body, "V1Deployment")``.
    """
    if m := _LIST_TYPE.match(type_name):
        inner = m.group(1) or m.group(2)
        if not isinstance(value, list):
            return []
        return [
            f for i, item in enumerate(value) for f in unknown_fields(item, inner, f"{path}[{i}]")
        ]
    if m := _DICT_TYPE.match(type_name):
        inner = m.group(1) or m.group(2)
        if not isinstance(value, dict):
            return []
        return [f for k, item in value.items() for f in unknown_fields(item, inner, f"{path}[{k}]")]
    model = getattr(models, type_name, None)
    if model is None or not isinstance(value, dict):
        return []  # a primitive, or ``object``
    declared = {key: model.openapi_types[attr] for attr, key in model.attribute_map.items()}
    found: list[str] = []
    for key, item in value.items():
        where = f"{path}.{key}" if path else key
        if key not in declared:
            found.append(where)
        else:
            found.extend(unknown_fields(item, declared[key], where))
    return found


@dataclass(frozen=True)
class RecordedRequest:
    """One request the double received; ``body`` is parsed JSON, else text, else None."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str | None
    authorization: str | None
    body: Any


class _StatusError(Exception):
    def __init__(
        self, code: int, reason: str, message: str, details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details


def status_object(
    code: int, reason: str, message: str, details: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A ``Status`` (``v1``) as the API returns for a failed request."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return body


def _not_found(kind: str, group: str, name: str) -> _StatusError:
    qualified = f"{kind}.{group}" if group else kind
    details = {"name": name, "kind": kind, **({"group": group} if group else {})}
    return _StatusError(404, "NotFound", f'{qualified} "{name}" not found', details)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _merge(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(out.get(key), value)
    return out


def _matches(labels: dict[str, str], selector: str) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = (s.strip() for s in term.split("!=", 1))
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = (s.strip() for s in term.replace("==", "=").split("=", 1))
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:].strip() in labels:
                return False
        elif term not in labels:
            return False
    return True


class KubernetesApiDouble(HttpDouble):
    """The double; ``with KubernetesApiDouble(token="t") as api:`` serves at ``api.url``."""

    service = "Kubernetes API double"

    def __init__(self, token: str | None = None) -> None:
        super().__init__()
        self.token = token
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        # (resource, namespace, name) -> object; resource: deployments, pods, configmaps
        self._objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        # (namespace, pod) -> its Deployment (real pods point at a ReplicaSet)
        self._owner: dict[tuple[str, str], str] = {}
        self._versions = itertools.count(1)
        self._random = random.Random()

    # -- lifecycle ------------------------------------------------------------------

    # -- what tests look at ---------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def requests_in(self, namespace: str) -> list[RecordedRequest]:
        """The requests whose path is inside ``namespace``."""
        return [r for r in self.requests if f"/namespaces/{namespace}/" in r.path + "/"]

    def get(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        """A stored object (``deployments``, ``pods``, ``configmaps``), or None."""
        with self._lock:
            found = self._objects.get((resource, namespace, name))
            return copy.deepcopy(found)

    def pods(self, namespace: str, deployment: str | None = None) -> list[str]:
        """Names of the pods in ``namespace`` (of ``deployment`` only, if given)."""
        with self._lock:
            return sorted(
                name
                for (res, ns, name) in self._objects
                if res == "pods"
                and ns == namespace
                and (deployment is None or self._owner[(ns, name)] == deployment)
            )

    # -- the API --------------------------------------------------------------------

    def _app(self) -> FastAPI:
        app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

        @app.exception_handler(_StatusError)
        async def status_error(request: Request, exc: _StatusError) -> JSONResponse:
            return JSONResponse(
                status_object(exc.code, exc.reason, exc.message, exc.details), exc.code
            )

        @app.exception_handler(StarletteHTTPException)
        async def unrouted(request: Request, exc: StarletteHTTPException) -> JSONResponse:
            await self._receive(request)
            if exc.status_code == 405:
                body = status_object(
                    405, "MethodNotAllowed", "the server does not allow this method"
                )
            else:
                body = status_object(
                    404, "NotFound", "the server could not find the requested resource"
                )
            return JSONResponse(body, body["code"])

        deployments = "/apis/apps/v1/namespaces/{ns}/deployments"

        @app.get(deployments)
        async def list_deployments(request: Request, ns: str) -> JSONResponse:
            await self._receive(request)
            selector = request.query_params.get("labelSelector", "")
            with self._lock:
                items = [
                    {k: v for k, v in copy.deepcopy(obj).items() if k not in ("apiVersion", "kind")}
                    for (res, n, _), obj in sorted(self._objects.items())
                    if res == "deployments"
                    and n == ns
                    and _matches(obj["metadata"].get("labels") or {}, selector)
                ]
                version = str(next(self._versions))
            return JSONResponse(
                {
                    "kind": "DeploymentList",
                    "apiVersion": "apps/v1",
                    "metadata": {"resourceVersion": version},
                    "items": items,
                }
            )

        @app.post(deployments)
        async def create_deployment(request: Request, ns: str) -> JSONResponse:
            body = await self._receive(request)
            warnings = self._check_body(request, body, "Deployment", "apps/v1", "V1Deployment", ns)
            name = body["metadata"]["name"]
            self._validate_deployment(name, body)
            with self._lock:
                if ("deployments", ns, name) in self._objects:
                    raise _StatusError(
                        409,
                        "AlreadyExists",
                        f'deployments.apps "{name}" already exists',
                        {"name": name, "group": "apps", "kind": "deployments"},
                    )
                obj = copy.deepcopy(body)
                obj["spec"].setdefault("replicas", 1)
                self._stamp(obj, ns, generation=True)
                self._objects[("deployments", ns, name)] = obj
                self._reconcile(ns, name)
                out = copy.deepcopy(obj)
            return JSONResponse(out, 201, headers=warnings)

        @app.get(deployments + "/{name}")
        async def read_deployment(request: Request, ns: str, name: str) -> JSONResponse:
            await self._receive(request)
            return JSONResponse(self._deployment(ns, name))

        @app.get(deployments + "/{name}/scale")
        async def read_scale(request: Request, ns: str, name: str) -> JSONResponse:
            await self._receive(request)
            return JSONResponse(self._scale(self._deployment(ns, name)))

        @app.patch(deployments + "/{name}/scale")
        async def patch_scale(request: Request, ns: str, name: str) -> JSONResponse:
            patch = await self._receive(request)
            kind = (request.headers.get("content-type") or "").split(";")[0].strip()
            if kind not in _JSON_PATCHES:
                raise _StatusError(
                    415,
                    "UnsupportedMediaType",
                    f"the body of the request was in an unknown format - the double accepts "
                    f"{', '.join(sorted(_JSON_PATCHES))} (got {kind or 'none'})",
                )
            if not isinstance(patch, dict):
                raise _StatusError(400, "BadRequest", "the patch must be a JSON object")
            with self._lock:
                obj = self._stored("deployments", ns, name)
                merged = _merge(self._scale(obj), patch)
                replicas = (merged.get("spec") or {}).get("replicas", 0)
                if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
                    raise _StatusError(
                        422,
                        "Invalid",
                        f'Scale.autoscaling "{name}" is invalid: spec.replicas: Invalid value: '
                        f"{json.dumps(replicas)}: must be greater than or equal to 0",
                        {"name": name, "group": "autoscaling", "kind": "Scale"},
                    )
                obj["spec"]["replicas"] = replicas
                self._stamp(obj, ns, generation=True)
                self._reconcile(ns, name)
                out = self._scale(obj)
            return JSONResponse(out)

        pods = "/api/v1/namespaces/{ns}/pods/{name}"

        @app.get(pods)
        async def read_pod(request: Request, ns: str, name: str) -> JSONResponse:
            await self._receive(request)
            with self._lock:
                return JSONResponse(copy.deepcopy(self._stored("pods", ns, name)))

        @app.delete(pods)
        async def delete_pod(request: Request, ns: str, name: str) -> JSONResponse:
            options = await self._receive(request) or {}
            with self._lock:
                pod = self._stored("pods", ns, name)
                wanted = (options.get("preconditions") or {}).get("uid")
                if wanted is not None and wanted != pod["metadata"]["uid"]:
                    raise _StatusError(
                        409,
                        "Conflict",
                        f"Precondition failed: UID in precondition: {wanted}, "
                        f"UID in object meta: {pod['metadata']['uid']}",
                        {"name": name, "kind": "pods"},
                    )
                del self._objects[("pods", ns, name)]
                owner = self._owner.pop((ns, name))
                grace = options.get("gracePeriodSeconds", 30)
                pod["metadata"]["deletionTimestamp"] = _now()
                pod["metadata"]["deletionGracePeriodSeconds"] = grace
                self._reconcile(ns, owner)
            return JSONResponse(pod)

        configmaps = "/api/v1/namespaces/{ns}/configmaps"

        @app.post(configmaps)
        async def create_config_map(request: Request, ns: str) -> JSONResponse:
            body = await self._receive(request)
            warnings = self._check_body(request, body, "ConfigMap", "v1", "V1ConfigMap", ns)
            name = body["metadata"]["name"]
            with self._lock:
                if ("configmaps", ns, name) in self._objects:
                    raise _StatusError(
                        409,
                        "AlreadyExists",
                        f'configmaps "{name}" already exists',
                        {"name": name, "kind": "configmaps"},
                    )
                obj = copy.deepcopy(body)
                self._stamp(obj, ns)
                self._objects[("configmaps", ns, name)] = obj
            return JSONResponse(copy.deepcopy(obj), 201, headers=warnings)

        @app.put(configmaps + "/{name}")
        async def replace_config_map(request: Request, ns: str, name: str) -> JSONResponse:
            body = await self._receive(request)
            warnings = self._check_body(request, body, "ConfigMap", "v1", "V1ConfigMap", ns)
            if body["metadata"]["name"] != name:
                raise _StatusError(
                    400,
                    "BadRequest",
                    f"the name of the object ({body['metadata']['name']}) does not match "
                    f"the name on the URL ({name})",
                )
            with self._lock:
                old = self._stored("configmaps", ns, name)
                obj = copy.deepcopy(body)
                obj["metadata"]["uid"] = old["metadata"]["uid"]
                obj["metadata"]["creationTimestamp"] = old["metadata"]["creationTimestamp"]
                self._stamp(obj, ns)
                self._objects[("configmaps", ns, name)] = obj
            return JSONResponse(copy.deepcopy(obj), 200, headers=warnings)

        return app

    # -- request handling -------------------------------------------------------------

    async def _receive(self, request: Request) -> Any:
        """Record ``request``, check its bearer token, and return its parsed body."""
        raw = await request.body()
        content_type = request.headers.get("content-type")
        body: Any = None
        parse_error = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError as e:
                body, parse_error = raw.decode("utf-8", "replace"), str(e)
        authorization = request.headers.get("authorization")
        with self._lock:
            self._requests.append(
                RecordedRequest(
                    method=request.method,
                    path=request.url.path,
                    query=dict(request.query_params),
                    content_type=content_type,
                    authorization=authorization,
                    body=body,
                )
            )
        if self.token is not None and authorization != f"Bearer {self.token}":
            raise _StatusError(401, "Unauthorized", "Unauthorized")
        if parse_error is not None:
            raise _StatusError(400, "BadRequest", f"the request body is not JSON: {parse_error}")
        return body

    def _check_body(
        self, request: Request, body: Any, kind: str, api_version: str, schema: str, ns: str
    ) -> dict[str, str]:
        """Validate a create/replace body; return the ``Warning`` headers to send."""
        # The API server reads a body without Content-Type as its first media type, JSON.
        media = (request.headers.get("content-type") or JSON).split(";")[0].strip()
        if media != JSON:
            raise _StatusError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - the double accepts {JSON} "
                f"(got {media})",
            )
        if not isinstance(body, dict):
            raise _StatusError(400, "BadRequest", f"the request body must be a {kind} object")
        if body.get("apiVersion", api_version) != api_version:
            raise _StatusError(
                400,
                "BadRequest",
                f"the API version in the data ({body['apiVersion']}) does not match the "
                f"expected API version ({api_version})",
            )
        if body.get("kind", kind) != kind:
            raise _StatusError(
                400,
                "BadRequest",
                f"the kind in the data ({body['kind']}) does not match the expected kind ({kind})",
            )
        metadata = body.get("metadata") or {}
        if metadata.get("namespace", ns) != ns:
            raise _StatusError(
                400,
                "BadRequest",
                "the namespace of the provided object does not match the namespace sent "
                "on the request",
            )
        if not metadata.get("name"):
            raise _StatusError(
                422,
                "Invalid",
                f'{kind} "" is invalid: metadata.name: Required value: name or generateName '
                "is required (the double does not generate names)",
            )
        unknown = unknown_fields(body, schema)
        validation = request.query_params.get("fieldValidation", "Warn")
        if unknown and validation == "Strict":
            listed = ", ".join(f'unknown field "{f}"' for f in unknown)
            raise _StatusError(
                400,
                "BadRequest",
                f"{kind} in version {api_version} cannot be "
                f"handled as a {kind}: strict decoding error: {listed}",
            )
        if unknown and validation == "Warn":
            return {"Warning": ", ".join(f'299 - "unknown field \\"{f}\\""' for f in unknown)}
        return {}

    @staticmethod
    def _validate_deployment(name: str, body: dict[str, Any]) -> None:
        spec = body.get("spec") or {}
        selector = (spec.get("selector") or {}).get("matchLabels") or {}
        template = spec.get("template") or {}
        labels = (template.get("metadata") or {}).get("labels") or {}
        containers = (template.get("spec") or {}).get("containers") or []
        problems = []
        if not selector:
            problems.append("spec.selector: Required value")
        elif any(labels.get(k) != v for k, v in selector.items()):
            problems.append(
                f"spec.template.metadata.labels: Invalid value: {json.dumps(labels)}: "
                "`selector` does not match template `labels`"
            )
        if not containers:
            problems.append("spec.template.spec.containers: Required value")
        for i, container in enumerate(containers):
            for key in ("name", "image"):
                if not container.get(key):
                    problems.append(f"spec.template.spec.containers[{i}].{key}: Required value")
        replicas = spec.get("replicas", 1)
        if not isinstance(replicas, int) or replicas < 0:
            problems.append(
                f"spec.replicas: Invalid value: {replicas}: must be greater than or equal to 0"
            )
        if problems:
            raise _StatusError(
                422,
                "Invalid",
                f'Deployment.apps "{name}" is invalid: {", ".join(problems)}',
                {"name": name, "group": "apps", "kind": "Deployment"},
            )

    # -- the store (call with the lock held) -----------------------------------------

    def _stored(self, resource: str, ns: str, name: str) -> dict[str, Any]:
        found = self._objects.get((resource, ns, name))
        if found is None:
            raise _not_found(resource, "apps" if resource == "deployments" else "", name)
        return found

    def _deployment(self, ns: str, name: str) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._stored("deployments", ns, name))

    def _stamp(self, obj: dict[str, Any], ns: str, generation: bool = False) -> None:
        meta = obj.setdefault("metadata", {})
        meta["namespace"] = ns
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", _now())
        meta["resourceVersion"] = str(next(self._versions))
        if generation:
            meta["generation"] = meta.get("generation", 0) + 1

    @staticmethod
    def _scale(deployment: dict[str, Any]) -> dict[str, Any]:
        meta = deployment["metadata"]
        replicas = deployment["spec"]["replicas"]
        selector = deployment["spec"]["selector"]["matchLabels"]
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                k: meta[k]
                for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            },
            # ScaleSpec.replicas is omitempty: 0 replicas is an empty spec.
            "spec": {"replicas": replicas} if replicas else {},
            "status": {
                "replicas": deployment["status"].get("replicas", 0),
                "selector": ",".join(f"{k}={v}" for k, v in sorted(selector.items())),
            },
        }

    def _reconcile(self, ns: str, name: str) -> None:
        """The Deployment controller, instantly: run exactly ``spec.replicas`` pods."""
        deployment = self._objects.get(("deployments", ns, name))
        if deployment is None:
            return
        template = deployment["spec"]["template"]
        digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()
        pod_hash = "".join(_ALPHABET[b % len(_ALPHABET)] for b in digest[:10])
        owned = sorted(pod for (n, pod), owner in self._owner.items() if n == ns and owner == name)
        wanted = deployment["spec"]["replicas"]
        for pod_name in owned[wanted:]:
            del self._objects[("pods", ns, pod_name)]
            del self._owner[(ns, pod_name)]
        for _ in range(wanted - len(owned)):
            suffix = "".join(self._random.choices(_ALPHABET, k=5))
            pod_name = f"{name}-{pod_hash}-{suffix}"
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": pod_name,
                    "generateName": f"{name}-{pod_hash}-",
                    "labels": {**template["metadata"]["labels"], "pod-template-hash": pod_hash},
                    "ownerReferences": [
                        {
                            "apiVersion": "apps/v1",
                            "kind": "ReplicaSet",
                            "name": f"{name}-{pod_hash}",
                            "uid": deployment["metadata"]["uid"],
                            "controller": True,
                        }
                    ],
                },
                "spec": copy.deepcopy(template["spec"]),
                "status": {"phase": "Running"},
            }
            self._stamp(pod, ns)
            self._objects[("pods", ns, pod_name)] = pod
            self._owner[(ns, pod_name)] = name
        deployment["status"] = {
            "observedGeneration": deployment["metadata"]["generation"],
            "replicas": wanted,
            "updatedReplicas": wanted,
            "readyReplicas": wanted,
            "availableReplicas": wanted,
        }
        if not wanted:
            # omitempty fields of DeploymentStatus
            for key in ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas"):
                deployment["status"].pop(key)
