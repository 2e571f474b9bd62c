"""SWARM's Kubernetes backend against a Kubernetes API double speaking the documented REST API."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from kubernetes.client.exceptions import ApiException
from kubernetes.config import incluster_config

import streams.swarm.kubernetes as swarm_kubernetes
from agents.runtime.manifest import AgentManifest, load_manifests, parse_manifest
from buildkit.dev.procs import free_port
from buildkit.errors import BuildKitError
from streams.swarm.backend import ScalingBackend
from streams.swarm.keda import DeploymentOptions, render_config_map, render_deployment
from streams.swarm.kubernetes import (
    DeploymentNotFound,
    KubernetesBackend,
    KubernetesError,
    KubernetesUnauthorized,
    KubernetesUnavailable,
)
from tests.swarm.k8s_api import KubernetesApiDouble

TOKEN = "swarm-test-token"
MANIFESTS = {m.name: m for m in load_manifests()}
WORKER = MANIFESTS["test-generator"]
CRITIC = MANIFESTS["performance-monitor"]
DEPLOYMENTS = "/apis/apps/v1/namespaces/{ns}/deployments"


@pytest.fixture(scope="module")
def api() -> Iterator[KubernetesApiDouble]:
    with KubernetesApiDouble(token=TOKEN) as double:
        yield double


@pytest.fixture
def namespace() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def backend(api: KubernetesApiDouble, namespace: str) -> Iterator[KubernetesBackend]:
    backend = KubernetesBackend(namespace, host=api.url, token=TOKEN)
    yield backend
    backend.close()


def scale_path(namespace: str, manifest: AgentManifest) -> str:
    return DEPLOYMENTS.format(ns=namespace) + f"/bar-agent-{manifest.name}/scale"


def test_backend_is_a_scaling_backend_named_kubernetes(backend: KubernetesBackend):
    assert isinstance(backend, ScalingBackend)
    assert backend.name == "kubernetes"


def test_deploy_creates_the_rendered_deployment_then_scales_it(
    api: KubernetesApiDouble, backend: KubernetesBackend, namespace: str
):
    backend.deploy(WORKER, 2)

    posts = [r for r in api.requests_in(namespace) if r.method == "POST"]
    assert [r.path for r in posts] == [
        f"/api/v1/namespaces/{namespace}/configmaps",
        DEPLOYMENTS.format(ns=namespace),
    ]
    assert posts[1].body == render_deployment(WORKER, DeploymentOptions(), replicas=2)
    assert posts[0].body == render_config_map(WORKER)
    assert all(r.query == {"fieldValidation": "Strict"} for r in posts)
    # The client sends JSON bodies without a Content-Type; the API reads them as JSON.
    assert all(r.content_type in (None, "application/json") for r in posts)
    stored = api.get("deployments", namespace, "bar-agent-test-generator")
    assert stored is not None and stored["spec"]["replicas"] == 2
    assert backend.replicas("test-generator") == 2
    assert len(api.pods(namespace, "bar-agent-test-generator")) == 2
    config_map = api.get("configmaps", namespace, "bar-agent-test-generator-manifest")
    assert config_map is not None
    assert parse_manifest(config_map["data"]["test-generator.yaml"]) == WORKER

    backend.deploy(WORKER, 5)

    assert len([r for r in api.requests_in(namespace) if r.method == "POST"]) == 2
    assert api.requests_in(namespace)[-1].method == "PATCH"
    assert backend.replicas("test-generator") == 5
    assert len(api.pods(namespace, "bar-agent-test-generator")) == 5


def test_scale_up_and_down_reads_back_through_the_scale_subresource(
    api: KubernetesApiDouble, backend: KubernetesBackend, namespace: str
):
    backend.deploy(WORKER, 1)
    for replicas in (4, 7, 2, 0, 1):
        backend.scale("test-generator", replicas)
        assert backend.replicas("test-generator") == replicas
        assert len(api.pods(namespace, "bar-agent-test-generator")) == replicas
    reads = [
        r for r in api.requests_in(namespace) if r.method == "GET" and r.path.endswith("/scale")
    ]
    assert {r.path for r in reads} == {scale_path(namespace, WORKER)}


def test_scale_sends_a_json_merge_patch_of_spec_replicas_to_the_scale_subresource(
    api: KubernetesApiDouble, backend: KubernetesBackend, namespace: str
):
    backend.deploy(WORKER, 1)
    backend.scale("test-generator", 3)

    patch = api.requests_in(namespace)[-1]
    assert patch.method == "PATCH"
    assert patch.path == scale_path(namespace, WORKER)
    # What kubectl scale sends: a JSON merge patch (RFC 7386) of the autoscaling/v1 Scale.
    assert patch.content_type == "application/merge-patch+json"
    assert patch.body == {"spec": {"replicas": 3}}
    assert patch.authorization == f"Bearer {TOKEN}"


def test_replace_deletes_the_pod_and_the_deployment_starts_a_new_one(
    api: KubernetesApiDouble, backend: KubernetesBackend, namespace: str
):
    backend.deploy(WORKER, 3)
    before = api.pods(namespace, "bar-agent-test-generator")
    victim = api.get("pods", namespace, before[0])
    assert victim is not None

    assert backend.replace("test-generator", before[0], "no heartbeat for 30 s") is True

    delete = api.requests_in(namespace)[-1]
    assert (delete.method, delete.path) == (
        "DELETE",
        f"/api/v1/namespaces/{namespace}/pods/{before[0]}",
    )
    assert delete.body == {"preconditions": {"uid": victim["metadata"]["uid"]}}
    after = api.pods(namespace, "bar-agent-test-generator")
    assert len(after) == 3 and before[0] not in after
    assert backend.replicas("test-generator") == 3


def test_replace_of_an_unknown_pod_is_false_and_deletes_nothing(
    api: KubernetesApiDouble, backend: KubernetesBackend, namespace: str
):
    backend.deploy(WORKER, 1)
    assert (
        backend.replace("test-generator", "bar-agent-test-generator-gone-abcde", "stuck") is False
    )
    assert not [r for r in api.requests_in(namespace) if r.method == "DELETE"]


def test_replace_never_deletes_a_pod_of_another_agent_type(
    api: KubernetesApiDouble, backend: KubernetesBackend, namespace: str
):
    backend.deploy(WORKER, 1)
    backend.deploy(CRITIC, 1)
    [other] = api.pods(namespace, "bar-agent-performance-monitor")

    assert backend.replace("test-generator", other, "stuck") is False

    assert api.pods(namespace, "bar-agent-performance-monitor") == [other]
    assert not [r for r in api.requests_in(namespace) if r.method == "DELETE"]


@pytest.mark.parametrize("call", ["scale", "replicas"])
def test_a_missing_deployment_is_named_with_how_to_deploy_it(
    backend: KubernetesBackend, namespace: str, call: str
):
    with pytest.raises(DeploymentNotFound) as caught:
        if call == "scale":
            backend.scale("doc-sync", 2)
        else:
            backend.replicas("doc-sync")

    error = caught.value
    message = str(error)
    assert 'deployment "bar-agent-doc-sync"' in message
    assert f'namespace "{namespace}"' in message
    assert "HTTP 404" in message
    assert 'deployments.apps "bar-agent-doc-sync" not found' in message  # the API's message
    assert "kubectl apply -k strimzi/agents/doc-sync" in message
    assert isinstance(error, BuildKitError) and isinstance(error, ApiException)
    assert (error.status, error.reason, error.namespace) == (404, "Not Found", namespace)


def test_a_rejected_token_is_a_clear_unauthorized_error(api: KubernetesApiDouble, namespace: str):
    backend = KubernetesBackend(namespace, host=api.url, token="not-the-token")
    with pytest.raises(KubernetesUnauthorized) as caught:
        backend.scale("test-generator", 2)
    message = str(caught.value)
    assert "HTTP 401" in message and "Unauthorized" in message
    assert api.url in message and f'namespace "{namespace}"' in message
    assert 'deployment "bar-agent-test-generator"' in message
    assert "check the bearer token" in message
    assert caught.value.status == 401
    backend.close()


def test_an_api_server_that_does_not_answer_is_kubernetes_unavailable(namespace: str):
    host = f"http://127.0.0.1:{free_port()}"
    backend = KubernetesBackend(namespace, host=host, token=TOKEN, request_timeout_s=2)
    with pytest.raises(
        KubernetesUnavailable, match=rf"{re.escape(host)} did not answer .*bar-agent-doc-sync"
    ):
        backend.replicas("doc-sync")
    backend.close()


def test_deploy_replaces_a_config_map_left_from_before(
    api: KubernetesApiDouble, backend: KubernetesBackend, namespace: str
):
    stale = render_config_map(WORKER)
    stale["data"] = {"test-generator.yaml": "manifest: {name: test-generator, type: critic}\n"}
    created = httpx.post(
        f"{api.url}/api/v1/namespaces/{namespace}/configmaps",
        json=stale,
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert created.status_code == 201

    backend.deploy(WORKER, 1)

    put = [r for r in api.requests_in(namespace) if r.method == "PUT"]
    assert [r.path for r in put] == [
        f"/api/v1/namespaces/{namespace}/configmaps/bar-agent-test-generator-manifest"
    ]
    config_map = api.get("configmaps", namespace, "bar-agent-test-generator-manifest")
    assert config_map is not None
    assert parse_manifest(config_map["data"]["test-generator.yaml"]) == WORKER
    assert backend.replicas("test-generator") == 1


def test_negative_replicas_are_refused_before_any_request(
    api: KubernetesApiDouble, backend: KubernetesBackend, namespace: str
):
    with pytest.raises(ValueError, match="0 or more"):
        backend.scale("test-generator", -1)
    with pytest.raises(ValueError, match="0 or more"):
        backend.deploy(WORKER, -2)
    assert api.requests_in(namespace) == []


def test_deployed_lists_agent_deployments_and_their_replicas(
    api: KubernetesApiDouble, backend: KubernetesBackend, namespace: str
):
    assert backend.deployed() == {}
    backend.deploy(WORKER, 1)
    backend.deploy(CRITIC, 3)
    assert backend.deployed() == {"performance-monitor": 3, "test-generator": 1}
    listing = api.requests_in(namespace)[-1]
    assert listing.query["labelSelector"] == (
        "app.kubernetes.io/part-of=agent-buildkit,app.kubernetes.io/name"
    )


def test_from_kubeconfig_uses_the_contexts_server_token_and_namespace(
    api: KubernetesApiDouble, namespace: str, tmp_path: Path
):
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "double", "cluster": {"server": api.url}}],
                "users": [{"name": "swarm", "user": {"token": TOKEN}}],
                "contexts": [
                    {
                        "name": "test",
                        "context": {"cluster": "double", "user": "swarm", "namespace": namespace},
                    }
                ],
                "current-context": "test",
            }
        )
    )
    backend = KubernetesBackend.from_kubeconfig(path=kubeconfig)
    assert backend.namespace == namespace
    backend.deploy(WORKER, 2)
    assert backend.replicas("test-generator") == 2
    assert api.requests_in(namespace)[-1].authorization == f"Bearer {TOKEN}"
    backend.close()


# -- the double answers as the Kubernetes API documents --------------------------------


def test_double_answers_a_missing_object_with_a_not_found_status(api: KubernetesApiDouble):
    answer = httpx.get(
        f"{api.url}/apis/apps/v1/namespaces/x/deployments/missing/scale",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert answer.status_code == 404
    assert answer.json() == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'deployments.apps "missing" not found',
        "reason": "NotFound",
        "details": {"name": "missing", "group": "apps", "kind": "deployments"},
        "code": 404,
    }


def test_double_answers_401_without_the_bearer_token(api: KubernetesApiDouble):
    answer = httpx.get(f"{api.url}/apis/apps/v1/namespaces/x/deployments")
    assert answer.status_code == 401
    assert answer.json()["kind"] == "Status" and answer.json()["reason"] == "Unauthorized"


def test_double_rejects_undeclared_fields_under_strict_field_validation(
    api: KubernetesApiDouble, namespace: str
):
    body = render_deployment(WORKER, replicas=1)
    body["spec"]["template"]["spec"]["containers"][0]["cpu"] = "1"
    answer = httpx.post(
        f"{api.url}{DEPLOYMENTS.format(ns=namespace)}?fieldValidation=Strict",
        json=body,
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert answer.status_code == 400 and answer.json()["reason"] == "BadRequest"
    assert 'unknown field "spec.template.spec.containers[0].cpu"' in answer.json()["message"]


def test_double_scales_with_a_strategic_merge_patch_too(
    api: KubernetesApiDouble, backend: KubernetesBackend, namespace: str
):
    backend.deploy(WORKER, 1)
    answer = httpx.patch(
        f"{api.url}{scale_path(namespace, WORKER)}",
        content=b'{"spec": {"replicas": 4}}',
        headers={
            "Authorization": f"Bearer {TOKEN}",
            "Content-Type": "application/strategic-merge-patch+json",
        },
    )
    assert answer.status_code == 200
    scale = answer.json()
    assert (scale["kind"], scale["apiVersion"]) == ("Scale", "autoscaling/v1")
    assert scale["spec"] == {"replicas": 4} and scale["status"]["replicas"] == 4
    assert backend.replicas("test-generator") == 4


def test_in_cluster_uses_the_service_account_token_host_and_namespace(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("pod-token")
    (account / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    (account / "namespace").write_text("agents\n")
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(account / "token"))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(account / "ca.crt"))
    monkeypatch.setattr(swarm_kubernetes, "_SERVICE_ACCOUNT_NAMESPACE", account / "namespace")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")

    backend = KubernetesBackend.in_cluster()

    assert (backend.namespace, backend.host) == ("agents", "https://10.96.0.1:443")
    auth = backend._client.configuration.auth_settings()["BearerToken"]
    assert auth["value"].lower() == "bearer pod-token"
    backend.close()


def test_a_missing_kubeconfig_or_service_account_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)  # as outside a pod
    with pytest.raises(KubernetesError, match=r"cannot use the kubeconfig .*missing"):
        KubernetesBackend.from_kubeconfig(path=tmp_path / "missing")
    with pytest.raises(KubernetesError, match=r"in_cluster\(\) works inside a Kubernetes pod"):
        KubernetesBackend.in_cluster()
