"""SWARM's Kubernetes backend: one Deployment per agent type, scaled through its scale subresource.

Each agent type runs as the Deployment ``bar-agent-<name>`` (rendered by
:mod:`streams.swarm.keda`) in one namespace. The backend only asks Kubernetes for
a replica count; the Deployment controller starts and stops the pods.

Kubernetes calls, with the RBAC each needs in the namespace:

=====================================  =================================================
``replicas``                           ``get`` ``deployments/scale``
``scale``                              ``patch`` ``deployments/scale`` (a JSON merge
                                       patch ``{"spec": {"replicas": n}}``, as
                                       ``kubectl scale`` sends)
``replace``                            ``get``, ``delete`` ``pods`` (only a pod of
                                       that agent's Deployment, by its labels)
``deploy``                             ``get``, ``create`` ``deployments``; ``create``,
                                       ``update`` ``configmaps``
``deployed``                           ``list`` ``deployments``
=====================================  =================================================

Don't point this backend and a KEDA ``ScaledObject`` (``strimzi/agents``) at the
same Deployment: both would set its replica count. Use one or the other.

Every API failure becomes a :class:`KubernetesError` naming the resource, the
namespace, the HTTP status and the API's own message.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import urllib3
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from pydantic import SecretStr

from agents.runtime.manifest import AgentManifest
from buildkit.errors import BuildKitError
from streams.swarm.keda import (
    NAME_LABEL,
    PART_OF,
    PART_OF_LABEL,
    DeploymentOptions,
    config_map_name,
    deployment_name,
    render_config_map,
    render_deployment,
)

__all__ = [
    "DeploymentNotFound",
    "KubernetesApiError",
    "KubernetesBackend",
    "KubernetesError",
    "KubernetesUnauthorized",
    "KubernetesUnavailable",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

# kubectl scale sends this; the scale subresource accepts it for every workload kind.
MERGE_PATCH = "application/merge-patch+json"
# A 404 from these calls means the Deployment is missing; from others (create), it can
# mean the namespace is.
_READS_DEPLOYMENT = frozenset({"read", "read the scale of", "scale"})
_SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class KubernetesError(BuildKitError):
    """Kubernetes did not do what SWARM asked."""


class KubernetesUnavailable(KubernetesError):
    """The Kubernetes API server did not answer."""

    exit_code = 3


class KubernetesApiError(KubernetesError, ApiException):
    """The API server answered with an error; also a kubernetes ``ApiException``.

    ``status`` is the HTTP status, ``reason`` the Status reason (``NotFound``,
    ``Forbidden``), ``api_message`` the API's message, ``resource`` e.g.
    ``deployment "bar-agent-x"``.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None,
        reason: str | None,
        api_message: str,
        namespace: str,
        resource: str,
        body: str | None = None,
    ) -> None:
        ApiException.__init__(self, status=status, reason=reason)
        self.body = body
        self.api_message = api_message
        self.namespace = namespace
        self.resource = resource
        self.message = message
        Exception.__init__(self, message)

    def __str__(self) -> str:
        return self.message


class DeploymentNotFound(KubernetesApiError):
    """The agent type's Deployment does not exist in the namespace (HTTP 404)."""


class KubernetesUnauthorized(KubernetesApiError):
    """The API server rejected the credentials (401) or the permissions (403)."""


class KubernetesBackend:
    """Runs each agent type as the Deployment ``bar-agent-<name>`` in ``namespace``.

    Give it an ``api_client`` (a configured :class:`kubernetes.client.ApiClient`), or
    a ``host`` URL and bearer ``token``; :meth:`from_kubeconfig` and
    :meth:`in_cluster` build one the usual ways. ``options`` parameterize the
    Deployments :meth:`deploy` creates; ``request_timeout_s`` bounds each call.
    """

    name = "kubernetes"

    def __init__(
        self,
        namespace: str,
        api_client: k8s.ApiClient | None = None,
        *,
        host: str | None = None,
        token: str | SecretStr | None = None,
        verify_ssl: bool = True,
        ca_cert: str | os.PathLike[str] | None = None,
        options: DeploymentOptions | None = None,
        request_timeout_s: float = 10.0,
    ) -> None:
        if api_client is None:
            if host is None:
                raise ValueError("KubernetesBackend needs an api_client or a host URL")
            api_client = k8s.ApiClient(_configuration(host, token, verify_ssl, ca_cert))
            self._owns_client = True
        else:
            if host is not None or token is not None:
                raise ValueError("give KubernetesBackend an api_client or host/token, not both")
            self._owns_client = False
        self.namespace = namespace
        self.options = options or DeploymentOptions()
        self.request_timeout_s = request_timeout_s
        self._client = api_client
        self._apps = k8s.AppsV1Api(api_client)
        self._core = k8s.CoreV1Api(api_client)

    @classmethod
    def from_kubeconfig(
        cls,
        namespace: str | None = None,
        *,
        path: str | os.PathLike[str] | None = None,
        context: str | None = None,
        **kwargs: Any,
    ) -> KubernetesBackend:
        """A backend for a kubeconfig context (default: ``$KUBECONFIG`` or
        ``~/.kube/config``, its current context); ``namespace`` defaults to the
        context's namespace, else ``default``."""
        config_file = os.fspath(path) if path is not None else None
        configuration = k8s.Configuration()
        try:
            k8s_config.load_kube_config(
                config_file=config_file,
                context=context,
                client_configuration=configuration,
                persist_config=False,
            )
            if namespace is None:
                contexts, active = k8s_config.list_kube_config_contexts(config_file)
                chosen = next((c for c in contexts if c["name"] == context), active)
                namespace = (chosen or {}).get("context", {}).get("namespace") or "default"
        except (k8s_config.ConfigException, OSError) as e:
            where = config_file or "$KUBECONFIG or ~/.kube/config"
            raise KubernetesError(
                f"cannot use the kubeconfig {where}"
                + (f' (context "{context}")' if context else "")
                + f": {e} — check the file and the context name"
            ) from e
        return cls(namespace, k8s.ApiClient(configuration), **kwargs)._owning()

    @classmethod
    def in_cluster(cls, namespace: str | None = None, **kwargs: Any) -> KubernetesBackend:
        """A backend for the pod's service account; ``namespace`` defaults to the pod's."""
        configuration = k8s.Configuration()
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)
            if namespace is None:
                namespace = _SERVICE_ACCOUNT_NAMESPACE.read_text(encoding="utf-8").strip()
        except (k8s_config.ConfigException, OSError) as e:
            raise KubernetesError(
                f"cannot use the pod's service account: {e} — in_cluster() works inside a "
                "Kubernetes pod; elsewhere use from_kubeconfig() or a host and token"
            ) from e
        return cls(namespace, k8s.ApiClient(configuration), **kwargs)._owning()

    def _owning(self) -> KubernetesBackend:
        self._owns_client = True
        return self

    @property
    def host(self) -> str:
        """The API server's URL."""
        return str(self._client.configuration.host)

    # -- ScalingBackend -------------------------------------------------------------

    def replicas(self, agent_type: str) -> int:
        """The replica count the Deployment is asked to run (its scale ``spec.replicas``)."""
        name = deployment_name(agent_type)
        scale = self._call(
            "read the scale of",
            f'deployment "{name}"',
            agent_type,
            self._apps.read_namespaced_deployment_scale,
            name,
            self.namespace,
        )
        # Scale.spec.replicas is omitted when 0 (omitempty in the API).
        spec = getattr(scale, "spec", None)
        return int(getattr(spec, "replicas", None) or 0)

    def scale(self, agent_type: str, replicas: int) -> None:
        """Set the Deployment's replica count (a merge patch of the scale subresource)."""
        if replicas < 0:
            raise ValueError(f"replicas must be 0 or more, got {replicas}")
        name = deployment_name(agent_type)
        self._call(
            "scale",
            f'deployment "{name}"',
            agent_type,
            self._apps.patch_namespaced_deployment_scale,
            name,
            self.namespace,
            {"spec": {"replicas": replicas}},
            _content_type=MERGE_PATCH,
        )
        log.info("scaled %s in %s to %d", name, self.namespace, replicas)

    def replace(self, agent_type: str, replica_id: str, reason: str) -> bool:
        """Delete pod ``replica_id`` of ``agent_type``'s Deployment, which starts a new one.

        False when no such pod exists, or it is not a replica of that agent type (its
        labels say so): the backend never deletes a pod it does not manage. The
        delete is conditional on the pod's uid, so it removes exactly the pod checked.
        """
        resource = f'pod "{replica_id}"'
        try:
            pod = self._call(
                "read",
                resource,
                agent_type,
                self._core.read_namespaced_pod,
                replica_id,
                self.namespace,
            )
        except KubernetesApiError as e:
            if e.status == 404:
                return False
            raise
        meta = pod.metadata
        labels = dict((meta.labels if meta is not None else None) or {})
        if labels.get(NAME_LABEL) != agent_type or labels.get(PART_OF_LABEL) != PART_OF:
            log.warning(
                "pod %s in %s is not a replica of agent %s (labels %s); not deleted",
                replica_id,
                self.namespace,
                agent_type,
                labels,
            )
            return False
        try:
            self._call(
                "delete",
                resource,
                agent_type,
                self._core.delete_namespaced_pod,
                replica_id,
                self.namespace,
                body={"preconditions": {"uid": meta.uid if meta is not None else None}},
            )
        except KubernetesApiError as e:
            if e.status in (404, 409):  # gone meanwhile, or a new pod took the name
                return False
            raise
        log.info("deleted pod %s of %s in %s: %s", replica_id, agent_type, self.namespace, reason)
        return True

    def deploy(self, manifest: AgentManifest, replicas: int) -> None:
        """Create the agent's ConfigMap and Deployment with ``replicas``, or, when the
        Deployment exists, scale it to ``replicas`` (its spec is left as it is)."""
        if replicas < 0:
            raise ValueError(f"replicas must be 0 or more, got {replicas}")
        name = deployment_name(manifest.name)
        try:
            self._call(
                "read",
                f'deployment "{name}"',
                manifest.name,
                self._apps.read_namespaced_deployment,
                name,
                self.namespace,
            )
        except DeploymentNotFound:
            pass
        else:
            self.scale(manifest.name, replicas)
            return
        self._apply_config_map(manifest)
        body: Any = render_deployment(manifest, self.options, replicas)
        try:
            self._call(
                "create",
                f'deployment "{name}"',
                manifest.name,
                self._apps.create_namespaced_deployment,
                self.namespace,
                body,
                field_validation="Strict",
            )
        except KubernetesApiError as e:
            if e.status != 409:  # 409: created meanwhile by someone else
                raise
            self.scale(manifest.name, replicas)
            return
        log.info("created %s in %s with %d replicas", name, self.namespace, replicas)

    def close(self) -> None:
        """Close the API client's connections if this backend created the client."""
        if self._owns_client:
            self._client.close()

    # -- beyond the protocol --------------------------------------------------------

    def deployed(self) -> dict[str, int]:
        """Agent types with a Deployment in the namespace, and each one's ``spec.replicas``."""
        found = self._call(
            "list",
            "deployments",
            None,
            self._apps.list_namespaced_deployment,
            self.namespace,
            label_selector=f"{PART_OF_LABEL}={PART_OF},{NAME_LABEL}",
        )
        out: dict[str, int] = {}
        for item in found.items or []:
            meta, spec = item.metadata, item.spec
            if meta is None or spec is None:
                continue
            agent = (meta.labels or {}).get(NAME_LABEL)
            if agent and meta.name == deployment_name(agent):
                # The API defaults spec.replicas to 1 when a Deployment leaves it out.
                out[agent] = spec.replicas if spec.replicas is not None else 1
        return dict(sorted(out.items()))

    # -- internals ------------------------------------------------------------------

    def _apply_config_map(self, manifest: AgentManifest) -> None:
        name = config_map_name(manifest.name)
        body: Any = render_config_map(manifest)
        resource = f'configmap "{name}"'
        try:
            self._call(
                "create",
                resource,
                manifest.name,
                self._core.create_namespaced_config_map,
                self.namespace,
                body,
                field_validation="Strict",
            )
        except KubernetesApiError as e:
            if e.status != 409:
                raise
            self._call(
                "replace",
                resource,
                manifest.name,
                self._core.replace_namespaced_config_map,
                name,
                self.namespace,
                body,
                field_validation="Strict",
            )

    def _call(
        self,
        action: str,
        resource: str,
        agent_type: str | None,
        method: Callable[..., T],
        *args: Any,
        **kwargs: Any,
    ) -> T:
        try:
            return method(*args, _request_timeout=self.request_timeout_s, **kwargs)
        except ApiException as e:
            raise self._error(e, action, resource, agent_type) from e
        except urllib3.exceptions.HTTPError as e:
            raise KubernetesUnavailable(
                f"the Kubernetes API at {self.host} did not answer when asked to {action} "
                f'{resource} in namespace "{self.namespace}": {e} — check the API server '
                "address (kubeconfig, or the host given to KubernetesBackend) and the network"
            ) from e

    def _error(
        self, e: ApiException, action: str, resource: str, agent_type: str | None
    ) -> KubernetesApiError:
        status, reason = e.status, e.reason
        api_message = _api_message(e)
        where = f'{resource} in namespace "{self.namespace}" on {self.host}'
        said = f"HTTP {status} {reason}: {api_message}"
        cls: type[KubernetesApiError] = KubernetesApiError
        if (
            status == 404
            and action in _READS_DEPLOYMENT
            and resource.startswith("deployment ")
            and agent_type is not None
        ):
            cls = DeploymentNotFound
            message = (
                f'{resource} not found in namespace "{self.namespace}" on {self.host} '
                f"({said}) — deploy agent {agent_type} first: "
                f"kubectl apply -k strimzi/agents/{agent_type} (with KEDA), or "
                "KubernetesBackend.deploy(manifest, replicas)"
            )
        elif status == 401:
            cls = KubernetesUnauthorized
            message = (
                f"the Kubernetes API rejected the credentials when asked to {action} {where} "
                f"({said}) — check the bearer token or the kubeconfig user"
            )
        elif status == 403:
            cls = KubernetesUnauthorized
            message = (
                f"not allowed to {action} {where} ({said}) — grant the service account "
                "that permission in the namespace (see streams.swarm.kubernetes for the "
                "RBAC each call needs)"
            )
        else:
            message = f"cannot {action} {where} ({said})"
        return cls(
            message,
            status=status,
            reason=reason,
            api_message=api_message,
            namespace=self.namespace,
            resource=resource,
            body=e.body,
        )


def _configuration(
    host: str,
    token: str | SecretStr | None,
    verify_ssl: bool,
    ca_cert: str | os.PathLike[str] | None,
) -> k8s.Configuration:
    configuration = k8s.Configuration(host=host.rstrip("/"))
    if token is not None:
        secret = token.get_secret_value() if isinstance(token, SecretStr) else token
        configuration.api_key = {"authorization": secret}
        configuration.api_key_prefix = {"authorization": "Bearer"}
    configuration.verify_ssl = verify_ssl
    if ca_cert is not None:
        configuration.ssl_ca_cert = os.fspath(ca_cert)
    return configuration


def _api_message(e: ApiException) -> str:
    """The ``message`` of the API's ``Status`` body, else the body or reason as given."""
    body = e.body
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if body:
        try:
            status = json.loads(body)
        except ValueError:
            return str(body)[:500]
        if isinstance(status, dict) and status.get("message"):
            return str(status["message"])
        return str(body)[:500]
    return str(e.reason or "no message")
