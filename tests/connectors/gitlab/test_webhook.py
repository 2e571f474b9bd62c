"""The GitLab webhook over real HTTP (uvicorn on a free port) against the real broker
and registry: what is accepted, what is refused, and that every accepted delivery is
exactly one event on the topic — across retries, concurrent repeats and restarts."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from buildkit.catalog import Catalog, default_catalog
from buildkit.dev.procs import free_port, wait_until
from buildkit.dev.stack import StackPaths
from buildkit.errors import ConfigError
from buildkit.kafka import admin_client
from buildkit.settings import Settings
from buildkit.topics import apply_topics
from connectors.gitlab.auth import TokenChecker, dev_secret_path
from connectors.gitlab.webhook import create_app
from tests.conftest import settings_env
from tests.connectors.gitlab.test_normalize import CASES
from tests.connectors.gitlab.webhook_helpers import (
    events_topic,
    fixture_body,
    read_events,
    serving,
    start_webhook,
    wait_healthy,
)

SECRET = "global-s3cret"
HOOK = "/webhooks/gitlab"


def headers(
    event: str = "Push Hook",
    *,
    token: str | None = SECRET,
    key: str | None = None,
    event_uuid: str | None = None,
) -> dict[str, str]:
    found = {"X-Gitlab-Event": event, "Content-Type": "application/json"}
    if token is not None:
        found["X-Gitlab-Token"] = token
    if key is not None:
        found["Idempotency-Key"] = key
    if event_uuid is not None:
        found["X-Gitlab-Event-UUID"] = event_uuid
    return found


def new_key() -> str:
    return str(uuid.uuid4())


@pytest.fixture(scope="module")
def hook_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "gitlab_webhook_secret": SecretStr(SECRET),
            "gitlab_max_body_bytes": 64 * 1024,
        }
    )


@pytest.fixture(scope="module")
def topic(hook_settings: Settings) -> tuple[str, Catalog]:
    name = f"t-{uuid.uuid4().hex[:8]}.gitlab.events"
    return name, events_topic(hook_settings, name)


@pytest.fixture(scope="module")
def url(hook_settings: Settings, topic: tuple[str, Catalog]) -> Iterator[str]:
    """One webhook app on its own topic, shared by the tests that filter by their keys."""
    name, catalog = topic
    with serving(create_app(hook_settings, topic=name, catalog=catalog)) as base:
        yield base


def published(settings: Settings, topic: tuple[str, Catalog], *keys: str) -> list[Any]:
    return [p for p in read_events(settings, topic[1], topic[0]) if p.event.event_id in keys]


# -- accepted ------------------------------------------------------------------------


def test_every_documented_kind_becomes_one_event_with_its_kind_key_and_raw_body(
    hook_settings, topic, url
):
    sent: dict[str, tuple[str, dict[str, Any]]] = {}
    with httpx.Client(base_url=url) as client:
        for name, case in CASES.items():
            key = new_key()
            body = fixture_body(name)
            answer = client.post(HOOK, json=body, headers=headers(case.header, key=key))
            assert answer.status_code == 200, answer.text
            assert answer.json() == {
                "event_id": key,
                "kind": case.kind,
                "duplicate": False,
                "topic": topic[0],
            }
            sent[key] = (name, body)
    found = published(hook_settings, topic, *sent)
    assert sorted(p.event.event_id for p in found) == sorted(sent)
    for record in found:
        name, body = sent[record.event.event_id]
        case = CASES[name]
        assert record.event.kind == case.kind
        assert record.event.action == case.action
        assert json.loads(record.event.raw_json) == body
        assert record.key == (None if case.project_id is None else str(case.project_id))
        assert record.headers["ce_id"].decode() == record.event.event_id


def test_unknown_kind_is_kept_not_dropped(hook_settings, topic, url):
    key = new_key()
    body = {"event_name": "brand_new_thing", "project": {"id": 77, "path_with_namespace": "a/b"}}
    answer = httpx.post(url + HOOK, json=body, headers=headers("Brand New Hook", key=key))
    assert answer.status_code == 200, answer.text
    (record,) = published(hook_settings, topic, key)
    assert record.event.kind == "brand_new_thing"
    assert record.key == "77"
    assert json.loads(record.event.raw_json) == body


def test_healthz_answers_once_ready(url, topic):
    answer = httpx.get(url + "/healthz")
    assert answer.status_code == 200
    assert answer.json()["status"] == "ok" and answer.json()["topic"] == topic[0]


# -- refused -------------------------------------------------------------------------


@pytest.mark.parametrize("token", [None, "", "wrong", SECRET + "x"])
def test_missing_or_wrong_token_is_401_without_detail_and_publishes_nothing(
    hook_settings, topic, url, token
):
    key = new_key()
    answer = httpx.post(
        url + HOOK, json=fixture_body("push"), headers=headers(token=token, key=key)
    )
    assert answer.status_code == 401
    assert answer.content == b""
    assert published(hook_settings, topic, key) == []


def test_a_project_secret_replaces_the_global_one_for_that_project(hook_settings, topic):
    name, catalog = topic
    tokens = TokenChecker(
        SecretStr(SECRET), {"15": SecretStr("p15"), "gitlabhq/gitlab-test": SecretStr("by-path")}
    )
    app = create_app(hook_settings, topic=name, catalog=catalog, tokens=tokens)
    expected = {
        # (fixture, token): status — push is project 15, issue is gitlabhq/gitlab-test (id 1),
        # release is project 2 (no secret of its own: the global one).
        ("push", "p15"): 200,
        ("push", SECRET): 401,
        ("issue", "by-path"): 200,
        ("issue", SECRET): 401,
        ("issue", "p15"): 401,
        ("release", SECRET): 200,
        ("release", "p15"): 401,
    }
    accepted = []
    with serving(app) as base, httpx.Client(base_url=base) as client:
        for (fixture, token), status in expected.items():
            key = new_key()
            answer = client.post(
                HOOK,
                json=fixture_body(fixture),
                headers=headers(CASES[fixture].header, token=token, key=key),
            )
            assert answer.status_code == status, (fixture, token, answer.text)
            if status == 200:
                accepted.append(key)
    assert sorted(p.event.event_id for p in published(hook_settings, topic, *accepted)) == sorted(
        accepted
    )


@pytest.mark.parametrize(
    ("content", "header", "problem"),
    [
        (b'{"object_kind": "push",', "Push Hook", "body is not valid JSON"),
        (b"\xff\xfe\x00", "Push Hook", "body is not valid JSON"),
        (b'{"x": NaN}', "Push Hook", "NaN is not a JSON value"),
        (b"[1, 2]", "Push Hook", "body must be a JSON object, got a JSON array"),
        (b'"push"', "Push Hook", "body must be a JSON object, got a JSON string"),
        (b'{"object_kind": "push"}', None, "missing X-Gitlab-Event header"),
        (b'{"object_kind": "push"}', "", "missing X-Gitlab-Event header"),
    ],
)
def test_malformed_delivery_is_400_naming_the_problem(
    hook_settings, topic, url, content, header, problem
):
    key = new_key()
    sent = headers(key=key)
    if header is None:
        del sent["X-Gitlab-Event"]
    else:
        sent["X-Gitlab-Event"] = header
    answer = httpx.post(url + HOOK, content=content, headers=sent)
    assert answer.status_code == 400
    assert problem in answer.json()["detail"]
    assert published(hook_settings, topic, key) == []


def test_body_over_the_limit_is_413_by_declared_length_and_by_streamed_bytes(
    hook_settings, topic, url
):
    limit = hook_settings.gitlab_max_body_bytes
    big = json.dumps({"object_kind": "push", "pad": "x" * (limit + 10)}).encode()
    declared, streamed = new_key(), new_key()
    answer = httpx.post(url + HOOK, content=big, headers=headers(key=declared))
    assert answer.status_code == 413
    assert f"{len(big)} bytes is over the {limit}-byte limit" in answer.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: chunked transfer encoding
        for start in range(0, len(big), 4096):
            yield big[start : start + 4096]

    answer = httpx.post(url + HOOK, content=chunks(), headers=headers(key=streamed))
    assert answer.status_code == 413
    assert f"over the {limit}-byte limit" in answer.json()["detail"]
    assert published(hook_settings, topic, declared, streamed) == []


# -- exactly one event per delivery ----------------------------------------------------


def test_repeated_delivery_answers_2xx_and_publishes_once(hook_settings, topic, url):
    key, event_uuid = new_key(), new_key()
    with httpx.Client(base_url=url) as client:
        first = client.post(
            HOOK, json=fixture_body("issue"), headers=headers("Issue Hook", key=key)
        )
        again = client.post(
            HOOK, json=fixture_body("issue"), headers=headers("Issue Hook", key=key)
        )
        # No Idempotency-Key: X-Gitlab-Event-UUID is the key.
        by_uuid = [
            client.post(HOOK, json=fixture_body("note_issue"), headers=headers(
                "Note Hook", event_uuid=event_uuid
            ))
            for _ in range(2)
        ]  # fmt: skip
    assert (first.status_code, first.json()["duplicate"]) == (200, False)
    assert (again.status_code, again.json()["duplicate"]) == (200, True)
    assert [(a.status_code, a.json()["duplicate"]) for a in by_uuid] == [(200, False), (200, True)]
    assert len(published(hook_settings, topic, key)) == 1
    assert len(published(hook_settings, topic, event_uuid)) == 1


def test_idempotency_key_wins_over_event_uuid_and_no_key_means_no_dedup(hook_settings, topic, url):
    event_uuid, keys = new_key(), [new_key(), new_key()]
    with httpx.Client(base_url=url) as client:
        for key in keys:  # two deliveries (two hooks) of one event: two records
            answer = client.post(
                HOOK, json=fixture_body("push"), headers=headers(key=key, event_uuid=event_uuid)
            )
            assert answer.status_code == 200 and answer.json()["event_id"] == key
        anonymous = [
            client.post(HOOK, json={"object_kind": "push", "marker": event_uuid}, headers=headers())
            for _ in range(2)
        ]
    assert len(published(hook_settings, topic, *keys)) == 2
    ids = [a.json()["event_id"] for a in anonymous]
    assert len(set(ids)) == 2 and all(uuid.UUID(i).version == 4 for i in ids)
    assert len(published(hook_settings, topic, *ids)) == 2


def test_concurrent_repeats_of_one_delivery_publish_one_event(hook_settings, topic, url):
    key = new_key()

    async def deliver_all() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url) as client:
            return await asyncio.gather(
                *(
                    client.post(HOOK, json=fixture_body("pipeline"), headers=headers(
                        "Pipeline Hook", key=key
                    ))
                    for _ in range(20)
                )
            )  # fmt: skip

    answers = asyncio.run(deliver_all())
    assert [a.status_code for a in answers] == [200] * 20
    assert sorted(a.json()["duplicate"] for a in answers) == [False] + [True] * 19
    assert len(published(hook_settings, topic, key)) == 1


def test_a_restarted_app_still_knows_the_deliveries_it_published(hook_settings, settings):
    name = f"t-{uuid.uuid4().hex[:8]}.gitlab.events"
    catalog = events_topic(settings, name)
    key = new_key()
    others = [new_key() for _ in range(30)]  # spread over the partitions
    app = create_app(hook_settings, topic=name, catalog=catalog)
    with serving(app) as base, httpx.Client(base_url=base) as client:
        for k in [key, *others]:
            answer = client.post(HOOK, json=fixture_body("push"), headers=headers(key=k))
            assert answer.status_code == 200
    with serving(create_app(hook_settings, topic=name, catalog=catalog)) as base:
        assert httpx.get(base + "/healthz").json()["seen"] == 31
        again = httpx.post(base + HOOK, json=fixture_body("push"), headers=headers(key=key))
        assert (again.status_code, again.json()["duplicate"]) == (200, True)
    assert [p.event.event_id for p in read_events(settings, catalog, name)].count(key) == 1


def test_no_broker_means_503_and_nothing_marked_seen_so_a_retry_publishes(
    hook_settings, topic, url
):
    # A bootstrap address nobody listens on: nothing can be acknowledged.
    down = hook_settings.model_copy(
        update={"bootstrap_servers": f"127.0.0.1:{free_port()}", "client_timeout_s": 1.0}
    )
    key = new_key()
    with serving(create_app(down, topic=topic[0], catalog=topic[1])) as base:
        assert httpx.get(base + "/healthz", timeout=10).status_code == 503
        for _ in range(2):  # the first failure did not mark the key: still 503, not duplicate
            answer = httpx.post(
                base + HOOK, json=fixture_body("push"), headers=headers(key=key), timeout=10
            )
            assert answer.status_code == 503
            assert answer.headers["Retry-After"] == "5"
            assert "retry the delivery" in answer.json()["detail"]
            assert "127.0.0.1" not in answer.text  # no internal addresses to GitLab
    # GitLab's retry reaches a connector whose broker answers: published, once.
    retry = httpx.post(url + HOOK, json=fixture_body("push"), headers=headers(key=key))
    assert (retry.status_code, retry.json()["duplicate"]) == (200, False)
    assert len(published(hook_settings, topic, key)) == 1


def test_a_publish_the_broker_refuses_is_503_and_its_retry_publishes_once(hook_settings):
    name = f"t-{uuid.uuid4().hex[:8]}.gitlab.events"
    catalog = events_topic(hook_settings, name)
    key = new_key()
    with serving(create_app(hook_settings, topic=name, catalog=catalog)) as base:
        assert httpx.get(base + "/healthz").status_code == 200  # seeded from the topic
        # The topic goes away under the running app: the broker cannot take the event.
        admin = admin_client(hook_settings)
        for future in admin.delete_topics([name]).values():
            future.result(10)
        assert wait_until(lambda: name not in admin.list_topics(timeout=5).topics, 10)
        failed = httpx.post(
            base + HOOK, json=fixture_body("push"), headers=headers(key=key), timeout=20
        )
        assert failed.status_code == 503
        apply_topics(hook_settings, catalog)
        retry = httpx.post(
            base + HOOK, json=fixture_body("push"), headers=headers(key=key), timeout=20
        )
        assert (retry.status_code, retry.json()["duplicate"]) == (200, False)
    assert [p.event.event_id for p in read_events(hook_settings, catalog, name)] == [key]


# -- configuration and processes -------------------------------------------------------


def test_an_app_without_any_secret_refuses_to_be_built(settings):
    with pytest.raises(ConfigError, match="BAR_GITLAB_WEBHOOK_SECRET"):
        create_app(settings)
    assert TokenChecker(insecure=True).may_match(None)


def test_stack_part_is_import_light_and_checks_healthz(settings, tmp_path):
    code = (
        "import sys; import connectors.gitlab.stack; "
        "print(sorted(m for m in ('fastapi', 'uvicorn', 'starlette') if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert loaded.stdout.strip() == "[]"
    from connectors.gitlab.stack import stack_part, webhook_url

    # A port of its own: the session's webhook (tests/conftest.py) may hold the settings'.
    settings = settings.model_copy(update={"gitlab_webhook_port": free_port()})
    part = stack_part(settings, StackPaths(tmp_path))
    assert webhook_url(settings) == f"http://127.0.0.1:{settings.gitlab_webhook_port}{HOOK}"
    wildcard = settings.model_copy(update={"gitlab_webhook_host": "0.0.0.0"})
    assert webhook_url(wildcard) == webhook_url(settings)
    assert part.name == "gitlab-webhook" and part.after == ("kafka", "schema-registry")
    assert (part.host, part.port) == ("127.0.0.1", settings.gitlab_webhook_port)
    assert str(dev_secret_path(settings).absolute()) in part.address
    assert not part.check()  # nothing listens there in this test run


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_connect_gitlab_serves_in_the_foreground_until_a_signal(settings, sig):
    apply_topics(settings, Catalog([default_catalog().get("bar.gitlab.events")]))
    port = free_port()
    env = {**settings_env(settings), "BAR_GITLAB_WEBHOOK_SECRET": SECRET}
    env.pop("BAR_GITLAB_PROJECT_SECRETS", None)
    proc = start_webhook(
        ["-m", "connectors.gitlab.connect_cli", "gitlab", "--port", str(port), "--no-access-log"],
        env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, base)
        key = new_key()
        answer = httpx.post(base + HOOK, json=fixture_body("push"), headers=headers(key=key))
        assert answer.status_code == 200 and answer.json()["topic"] == "bar.gitlab.events"
        proc.send_signal(sig)
        output, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, output
    assert f"GitLab webhook listening on http://127.0.0.1:{port}/webhooks/gitlab" in output
    assert "GitLab webhook stopped" in output


def test_connect_gitlab_refuses_to_start_without_a_secret(settings):
    env = settings_env(settings)
    for name in ("BAR_GITLAB_WEBHOOK_SECRET", "BAR_GITLAB_PROJECT_SECRETS"):
        env.pop(name, None)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "connectors.gitlab.connect_cli",
            "gitlab",
            "--port",
            str(free_port()),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    assert "no GitLab webhook secret is configured" in done.stderr
    assert "Traceback" not in done.stderr


def test_dev_stack_service_uses_a_generated_secret_when_none_is_configured(settings, tmp_path):
    apply_topics(settings, Catalog([default_catalog().get("bar.gitlab.events")]))
    port = free_port()
    env = {
        **settings_env(settings),
        "BAR_DATA_DIR": str(tmp_path),
        "BAR_GITLAB_WEBHOOK_PORT": str(port),
    }
    for name in ("BAR_GITLAB_WEBHOOK_SECRET", "BAR_GITLAB_PROJECT_SECRETS"):
        env.pop(name, None)
    proc = start_webhook(["-m", "connectors.gitlab", "--no-access-log"], env)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, base)
        secret_file = dev_secret_path(settings.model_copy(update={"data_dir": tmp_path}))
        token = secret_file.read_text().strip()
        assert len(token) >= 32 and (secret_file.stat().st_mode & 0o777) == 0o600
        ok = httpx.post(base + HOOK, json=fixture_body("push"), headers=headers(token=token))
        assert ok.status_code == 200
        denied = httpx.post(base + HOOK, json=fixture_body("push"), headers=headers(token="guess"))
        assert denied.status_code == 401
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, output
    assert secret_file.read_text().strip() == token  # kept for the next `dev up`


# -- review fixes: project-scoped keys, bounded seeding, the effective body limit ------


def test_one_key_for_two_projects_is_two_events_also_after_a_restart(hook_settings, settings):
    """A token holder of one project cannot suppress another project's delivery by
    sending its key: the seen-set is per project, as restored from the topic."""
    name = f"t-{uuid.uuid4().hex[:8]}.gitlab.events"
    catalog = events_topic(settings, name)
    key = new_key()
    bodies = [("push", "Push Hook"), ("release", "Release Hook")]  # projects 15 and 2
    with serving(create_app(hook_settings, topic=name, catalog=catalog)) as base:
        for fixture, hook in bodies:
            answer = httpx.post(
                base + HOOK, json=fixture_body(fixture), headers=headers(hook, key=key)
            )
            assert (answer.status_code, answer.json()["duplicate"]) == (200, False)
    with serving(create_app(hook_settings, topic=name, catalog=catalog)) as base:
        for fixture, hook in bodies:
            again = httpx.post(
                base + HOOK, json=fixture_body(fixture), headers=headers(hook, key=key)
            )
            assert (again.status_code, again.json()["duplicate"]) == (200, True)
    found = read_events(settings, catalog, name)
    assert sorted(p.key or "" for p in found if p.event.event_id == key) == ["15", "2"]


def test_seeding_reads_a_bounded_tail_of_a_busy_topic_and_becomes_ready(hook_settings, settings):
    from datetime import UTC, datetime

    from buildkit.producer import TypedProducer
    from connectors.gitlab.normalize import normalize

    name = f"t-{uuid.uuid4().hex[:8]}.gitlab.events"
    catalog = events_topic(settings, name, partitions=1)
    body = fixture_body("push")
    event = normalize("Push Hook", body, event_id="x", received_at=datetime.now(UTC))
    total = 6_000
    with TypedProducer(settings, catalog=catalog, source="tests") as producer:
        for n in range(total):
            produced = event.model_copy(update={"event_id": f"seed-{n}"})
            producer.produce(name, produced, str(produced.project_id), event_id=produced.event_id)
    app = create_app(hook_settings, topic=name, catalog=catalog, seed_records=1_000)
    with serving(app) as base:
        assert wait_until(lambda: httpx.get(base + "/healthz").status_code == 200, 15)
        seen = httpx.get(base + "/healthz").json()["seen"]
        assert 1_000 <= seen < total  # the last 1,000 (at least) of the one partition used
        newest = httpx.post(
            base + HOOK, json=body, headers=headers(key=f"seed-{total - 1}"), timeout=10
        )
        assert (newest.status_code, newest.json()["duplicate"]) == (200, True)


def test_deliveries_do_not_wait_for_a_seeding_that_cannot_finish(hook_settings, topic):
    down = hook_settings.model_copy(
        update={"bootstrap_servers": f"127.0.0.1:{free_port()}", "client_timeout_s": 2.0}
    )
    app = create_app(down, topic=topic[0], catalog=topic[1], seed_wait_s=0.5)
    with serving(app) as base:
        answer = httpx.post(
            base + HOOK, json=fixture_body("push"), headers=headers(key=new_key()), timeout=10
        )
        assert answer.status_code == 503 and answer.headers["Retry-After"] == "5"
        assert answer.elapsed.total_seconds() < 2
        health = httpx.get(base + "/healthz", timeout=10)
        assert health.status_code == 503 and health.elapsed.total_seconds() < 2


def test_the_body_limit_is_what_fits_in_a_record_and_says_how_to_raise_it(hook_settings, topic):
    small = hook_settings.model_copy(
        update={"kafka_properties": {"message.max.bytes": SecretStr("40000")}}
    )
    limit = 40_000 - 16 * 1024
    assert limit < small.gitlab_max_body_bytes
    body = json.dumps({"object_kind": "push", "pad": "x" * limit}).encode()
    with serving(create_app(small, topic=topic[0], catalog=topic[1])) as base:
        answer = httpx.post(base + HOOK, content=body, headers=headers(key=new_key()))
    assert answer.status_code == 413
    detail = answer.json()["detail"]
    assert f"over the {limit}-byte limit" in detail
    assert "message.max.bytes 40000" in detail and "BAR_KAFKA_PROPERTIES" in detail
    assert Settings().gitlab_max_body_bytes <= 1_000_000 - 16 * 1024  # the default fits


def test_token_for_is_what_the_checker_wants(settings, tmp_path):
    from connectors.gitlab.auth import secrets_configured, token_for

    configured = settings.model_copy(
        update={
            "gitlab_webhook_secret": SecretStr(SECRET),
            "gitlab_project_secrets": {"15": SecretStr("p15"), "a/b": SecretStr("ab")},
        }
    )
    checker = TokenChecker.from_settings(configured)
    for project_id, path in [(15, None), (3, "a/b"), (2, "c/d")]:
        assert checker.allows(token_for(configured, project_id, path), project_id, path)
    assert secrets_configured(configured)
    bare = settings.model_copy(
        update={"gitlab_webhook_secret": None, "gitlab_project_secrets": {}, "data_dir": tmp_path}
    )
    assert not secrets_configured(bare)
    assert token_for(bare, 15, None) == dev_secret_path(bare).read_text().strip()
