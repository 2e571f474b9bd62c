"""The GitLab sink end to end: actions on the real broker, executed against the GitLab
double, outcomes recorded; and ``buildkit gitlab actions`` / ``sink`` on the command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from buildkit.catalog import Catalog, TopicSpec, default_catalog
from buildkit.contracts.events import ActionKind, GitLabAction
from buildkit.dev.procs import wait_until
from buildkit.producer import TypedProducer
from buildkit.settings import Settings
from buildkit.topics import apply_topics
from connectors.gitlab.actions_view import ActionRow, ViewStatus, list_actions
from connectors.gitlab.client import GitLabActions, action_marker
from connectors.gitlab.sink import OUTCOMES_TOPIC, GitLabSink
from connectors.gitlab.sink_cli import gitlab_app
from tests.conftest import settings_env
from tests.connectors.gitlab.gitlab_double import GitLabDouble

PROJECT = 42
TOKEN = "glpat-sink-tests"


def action(prefix: str, n: int, kind: ActionKind, **fields: object) -> GitLabAction:
    return GitLabAction(
        action_id=f"{prefix}-a{n}",
        kind=kind,
        project_id=fields.pop("project_id", PROJECT),
        requested_by="tests",
        run_id=fields.pop("run_id", f"{prefix}-run"),
        created_at=datetime(2026, 11, 25, 10, n, tzinfo=UTC),
        **fields,
    )


@pytest.fixture
def catalog(settings: Settings, prefix: str) -> Catalog:
    """This test's own actions and outcomes topics (one partition: one order)."""
    cat = Catalog(
        [
            TopicSpec(f"{prefix}.actions", GitLabAction, partitions=1, key_field="project_id"),
            TopicSpec(
                f"{prefix}.outcomes",
                default_catalog().get(OUTCOMES_TOPIC).value_type,
                partitions=1,
                key_field="project_id",
            ),
        ]
    )
    apply_topics(settings, cat)
    return cat


@pytest.fixture
def gitlab() -> Iterator[GitLabDouble]:
    with GitLabDouble(token=TOKEN) as double:
        double.add_project(PROJECT, issues=(1, 2, 3), merge_requests=(5,))
        yield double


def publish(settings: Settings, catalog: Catalog, topic: str, actions: list[GitLabAction]) -> None:
    with TypedProducer(settings, catalog=catalog, source="tests") as producer:
        for item in actions:
            producer.produce(topic, item, key=str(item.project_id))


def run_sink(
    settings: Settings,
    catalog: Catalog,
    prefix: str,
    gitlab: GitLabDouble,
    count: int,
    *,
    outcomes_topic: str | None = None,
) -> GitLabSink:
    sink = GitLabSink(
        settings,
        GitLabActions(gitlab.url, TOKEN, max_retries=3),
        group_id=f"{prefix}-sink",
        actions_topic=f"{prefix}.actions",
        outcomes_topic=outcomes_topic or f"{prefix}.outcomes",
        catalog=catalog,
        outage_backoff_s=0.1,
        outage_backoff_max_s=0.5,
    )
    with sink:
        sink.run(max_records=count, idle_timeout_s=30)
    return sink


def outcomes(settings: Settings, catalog: Catalog, prefix: str) -> dict[str, ActionRow]:
    rows = list_actions(
        settings,
        catalog=catalog,
        actions_topic=f"{prefix}.actions",
        outcomes_topic=f"{prefix}.outcomes",
    )
    return {row.action.action_id.removeprefix(f"{prefix}-"): row for row in rows}


def test_sink_executes_every_kind_and_a_duplicate_note_is_posted_once(
    settings, catalog, prefix, gitlab
):
    note = action(prefix, 1, ActionKind.ISSUE_NOTE, target_iid=1, body="Tests pass: 93%")
    actions = [
        note,
        action(prefix, 2, ActionKind.MERGE_REQUEST_NOTE, target_iid=5, body="Review done"),
        action(
            prefix,
            3,
            ActionKind.COMMIT_STATUS,
            sha="0a1b2c3d",
            state="success",
            title="bar/qits",
            body="coverage 93%",
        ),
        action(prefix, 4, ActionKind.SET_LABELS, target_iid=2, labels=["bar::tested", "ready"]),
        action(
            prefix,
            5,
            ActionKind.SET_LABELS,
            target_iid=5,
            labels=["reviewed"],
            target="merge_request",
        ),
        action(prefix, 6, ActionKind.WIKI_PAGE, title="Run report", body="# Run\nall green"),
        note,  # the same action id again: a task redelivered to its agent
    ]
    publish(settings, catalog, f"{prefix}.actions", actions)

    sink = run_sink(settings, catalog, prefix, gitlab, len(actions))

    project = gitlab.projects[PROJECT]
    assert gitlab.notes(PROJECT, 1) == [f"Tests pass: 93%\n\n{action_marker(note.action_id)}"]
    assert gitlab.notes(PROJECT, 5, merge_request=True)[0].startswith("Review done\n\n<!--")
    [status] = project.statuses
    assert (status["sha"], status["name"], status["status"]) == ("0a1b2c3d", "bar/qits", "success")
    assert project.issues[2].labels == ["bar::tested", "ready"]
    assert project.merge_requests[5].labels == ["reviewed"]
    assert project.wikis["Run-report"]["content"] == "# Run\nall green"
    assert (sink.stats.done, sink.stats.already_done, sink.stats.failed) == (6, 1, 0)

    rows = outcomes(settings, catalog, prefix)
    assert all(row.status == ViewStatus.DONE for key, row in rows.items() if key != "a1")
    assert rows["a1"].status == ViewStatus.ALREADY_DONE and rows["a1"].outcomes == 2
    assert rows["a1"].outcome is not None and rows["a1"].outcome.reference is not None
    assert rows["a6"].outcome is not None and rows["a6"].outcome.reference == "Run-report"


def test_rate_limits_and_server_errors_are_retried_until_done(settings, catalog, prefix, gitlab):
    gitlab.fail_next(1, 429, retry_after=1, method="POST", path="/issues/1/notes")
    gitlab.fail_next(2, 500, method="PUT", path="/issues/2")
    # GitLab made the note, the gateway answered 502: retried, found, not posted twice.
    gitlab.fail_next(1, 502, method="POST", path="/issues/3/notes", after=True)
    actions = [
        action(prefix, 1, ActionKind.ISSUE_NOTE, target_iid=1, body="rate limited"),
        action(prefix, 2, ActionKind.SET_LABELS, target_iid=2, labels=["flaky-server"]),
        action(prefix, 3, ActionKind.ISSUE_NOTE, target_iid=3, body="slow gateway"),
    ]
    publish(settings, catalog, f"{prefix}.actions", actions)

    run_sink(settings, catalog, prefix, gitlab, len(actions))

    limited = [r for r in gitlab.requests if r.method == "POST" and "/issues/1/" in r.path]
    assert [r.status for r in limited] == [429, 201]
    assert limited[1].at - limited[0].at >= 1.0  # Retry-After: 1 honoured
    assert [r.status for r in gitlab.requests if r.method == "PUT"] == [500, 500, 200]
    assert len(gitlab.notes(PROJECT, 1)) == 1
    assert gitlab.notes(PROJECT, 3) == [f"slow gateway\n\n{action_marker(f'{prefix}-a3')}"]
    rows = outcomes(settings, catalog, prefix)
    assert [rows[k].status for k in ("a1", "a2", "a3")] == [
        ViewStatus.DONE,
        ViewStatus.DONE,
        ViewStatus.ALREADY_DONE,
    ]
    assert rows["a1"].outcome is not None and rows["a1"].outcome.attempts == 2
    assert rows["a2"].outcome is not None and rows["a2"].outcome.attempts == 3


def test_refusals_fail_the_action_with_the_reason_and_the_sink_moves_on(
    settings, catalog, prefix, gitlab
):
    gitlab.fail_next(1, 403, method="PUT", path="/wikis/")
    gitlab.fail_next(1, 403, method="POST", path="/wikis")
    # A token revoked while the sink runs: GitLab answers 401 from then on.
    gitlab.fail_next(1, 401, path="/statuses/")
    actions = [
        action(prefix, 1, ActionKind.ISSUE_NOTE, project_id=999, target_iid=1, body="x"),
        action(prefix, 2, ActionKind.ISSUE_NOTE, target_iid=404, body="x"),
        action(prefix, 3, ActionKind.WIKI_PAGE, title="Locked page", body="x"),
        action(prefix, 4, ActionKind.COMMIT_STATUS, sha="ff00", state="running", title="ci"),
        action(prefix, 5, ActionKind.COMMIT_STATUS, state="running"),  # no sha
        action(prefix, 6, ActionKind.ISSUE_NOTE, target_iid=1, body="still working"),
    ]
    publish(settings, catalog, f"{prefix}.actions", actions)

    sink = run_sink(settings, catalog, prefix, gitlab, len(actions))

    assert (sink.stats.failed, sink.stats.done) == (5, 1)
    rows = outcomes(settings, catalog, prefix)
    got = {k: (r.status, r.outcome.http_status) for k, r in rows.items() if r.outcome}
    assert got == {
        "a1": (ViewStatus.FAILED, 404),
        "a2": (ViewStatus.FAILED, 404),
        "a3": (ViewStatus.FAILED, 403),
        "a4": (ViewStatus.FAILED, 401),
        "a5": (ViewStatus.FAILED, None),
        "a6": (ViewStatus.DONE, 201),
    }
    reasons = {k: r.outcome.reason for k, r in rows.items() if r.outcome}
    assert "404 Project Not Found" in str(reasons["a1"])
    assert "404 Issue Not Found" in str(reasons["a2"])
    assert "403" in str(reasons["a3"])
    assert "401" in str(reasons["a4"])
    assert "has no sha" in str(reasons["a5"])
    assert gitlab.notes(PROJECT, 1)[0].startswith("still working")


def test_a_redirect_or_a_login_page_fails_the_action_and_the_sink_moves_on(
    settings, catalog, prefix, gitlab
):
    with GitLabDouble(token=TOKEN) as elsewhere:
        moved = f"{elsewhere.url}/api/v4/projects/{PROJECT}/issues/1/notes"
        gitlab.fail_next(1, 307, method="POST", path="/issues/1/notes", location=moved)
        gitlab.fail_next(1, 200, method="POST", path="/issues/2/notes", html="<html>SSO</html>")
        # GitLab made the page, the gateway answered 502: tried again, found, not refused.
        gitlab.fail_next(1, 502, method="POST", path="/wikis", after=True)
        actions = [
            action(prefix, 1, ActionKind.ISSUE_NOTE, target_iid=1, body="redirected"),
            action(prefix, 2, ActionKind.ISSUE_NOTE, target_iid=2, body="login page"),
            action(prefix, 3, ActionKind.WIKI_PAGE, title="Slow gateway", body="made"),
            action(prefix, 4, ActionKind.ISSUE_NOTE, target_iid=3, body="still working"),
        ]
        publish(settings, catalog, f"{prefix}.actions", actions)

        sink = run_sink(settings, catalog, prefix, gitlab, len(actions))

        assert elsewhere.requests == []
    assert (sink.stats.failed, sink.stats.already_done, sink.stats.done) == (2, 1, 1)
    rows = outcomes(settings, catalog, prefix)
    got = {k: (r.status, r.outcome.http_status) for k, r in rows.items() if r.outcome}
    assert got == {
        "a1": (ViewStatus.FAILED, 307),
        "a2": (ViewStatus.FAILED, 200),
        "a3": (ViewStatus.ALREADY_DONE, 200),
        "a4": (ViewStatus.DONE, 201),
    }
    reasons = {k: str(r.outcome.reason) for k, r in rows.items() if r.outcome}
    assert "redirected (307)" in reasons["a1"] and "BAR_GITLAB_URL" in reasons["a1"]
    assert "text/html" in reasons["a2"] and "BAR_GITLAB_URL" in reasons["a2"]
    assert gitlab.notes(PROJECT, 1) == [] and gitlab.notes(PROJECT, 2) == []
    assert gitlab.projects[PROJECT].wikis["Slow-gateway"]["content"] == "made"
    assert [r.status for r in gitlab.requests if r.method == "POST" and "/wikis" in r.path] == [502]


def test_an_outage_holds_the_action_through_a_restart_and_loses_nothing(
    settings, catalog, prefix, gitlab
):
    gitlab.fail_next(10_000, 503)
    publish(
        settings,
        catalog,
        f"{prefix}.actions",
        [action(prefix, 1, ActionKind.ISSUE_NOTE, target_iid=1, body="after the outage")],
    )
    stop = threading.Event()
    first = GitLabSink(
        settings,
        GitLabActions(gitlab.url, TOKEN, max_retries=1),
        group_id=f"{prefix}-sink",
        actions_topic=f"{prefix}.actions",
        outcomes_topic=f"{prefix}.outcomes",
        catalog=catalog,
        outage_backoff_s=0.1,
        outage_backoff_max_s=0.2,
    )
    runner = threading.Thread(target=lambda: first.run(stop=stop))
    runner.start()
    try:
        deadline = datetime.now(UTC).timestamp() + 30
        while first.stats.outage_waits < 3 and datetime.now(UTC).timestamp() < deadline:
            stop.wait(0.1)
        assert first.stats.outage_waits >= 3
    finally:
        stop.set()
        runner.join(30)
        first.close()
    assert first.stats.by_action == {}  # no outcome, nothing committed past the action

    gitlab.clear_faults()
    run_sink(settings, catalog, prefix, gitlab, 1)

    assert len(gitlab.notes(PROJECT, 1)) == 1
    [row] = outcomes(settings, catalog, prefix).values()
    assert row.status == ViewStatus.DONE and row.outcomes == 1


def unconfigured_env(settings: Settings) -> dict[str, str]:
    env = settings_env(settings)
    for name in ("BAR_GITLAB_URL", "BAR_GITLAB_TOKEN"):
        env.pop(name, None)
    return env


def test_actions_are_listed_pending_without_gitlab_then_with_their_outcomes(
    settings, catalog, prefix, gitlab
):
    """``buildkit gitlab actions`` reads the real topics; the sink here consumes a copy of
    the actions from this test's own topic (other tests' actions stay untouched) and
    writes its outcomes to the real outcome topic."""
    real = default_catalog()
    apply_topics(settings, Catalog([real.get("bar.gitlab.actions"), real.get(OUTCOMES_TOPIC)]))
    run = f"{prefix}-run"
    actions = [
        action(prefix, 1, ActionKind.ISSUE_NOTE, target_iid=1, body="hello"),
        action(prefix, 2, ActionKind.ISSUE_NOTE, project_id=999, target_iid=1, body="lost"),
    ]
    publish(settings, real, "bar.gitlab.actions", actions)
    cli = CliRunner()
    env = unconfigured_env(settings)

    shown = cli.invoke(gitlab_app, ["actions", "--run", run], env=env)
    assert shown.exit_code == 0, shown.output
    assert f"{prefix}-a1" in shown.output and "2 pending" in shown.output

    both = Catalog([catalog.get(f"{prefix}.actions"), real.get(OUTCOMES_TOPIC)])
    publish(settings, both, f"{prefix}.actions", actions)
    run_sink(settings, both, prefix, gitlab, 2, outcomes_topic=OUTCOMES_TOPIC)

    shown = cli.invoke(gitlab_app, ["actions", "--run", run, "--json"], env=env)
    assert shown.exit_code == 0, shown.output
    rows = {r["action_id"]: r for r in map(json.loads, shown.output.splitlines())}
    assert rows[f"{prefix}-a1"]["status"] == "done"
    assert rows[f"{prefix}-a2"]["status"] == "failed"
    assert rows[f"{prefix}-a2"]["http_status"] == 404
    assert "Project Not Found" in rows[f"{prefix}-a2"]["reason"]

    failed = cli.invoke(gitlab_app, ["actions", "--run", run, "--status", "failed"], env=env)
    assert failed.exit_code == 0, failed.output
    assert f"{prefix}-a2" in failed.output and f"{prefix}-a1" not in failed.output
    assert "1 failed" in failed.output


def test_the_sink_refuses_to_start_without_gitlab_configured(settings):
    env = unconfigured_env(settings)
    ran = subprocess.run(
        [sys.executable, "-m", "connectors.gitlab.sink"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=os.getcwd(),
    )
    assert ran.returncode != 0
    assert "BAR_GITLAB_URL and BAR_GITLAB_TOKEN" in ran.stderr
    assert "buildkit gitlab actions" in ran.stderr

    shown = CliRunner().invoke(
        gitlab_app, ["sink"], env={**env, "BAR_GITLAB_URL": "http://127.0.0.1:1"}
    )
    assert shown.exit_code != 0
    assert "BAR_GITLAB_TOKEN" in shown.output and "BAR_GITLAB_URL" not in shown.output


def test_the_sink_refuses_to_start_when_gitlab_refuses_the_url_or_token(settings, gitlab):
    env = {**settings_env(settings), "BAR_GITLAB_URL": gitlab.url, "BAR_GITLAB_TOKEN": "wrong"}
    ran = subprocess.run(
        [sys.executable, "-m", "connectors.gitlab.sink"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode != 0
    assert "401" in ran.stderr and "check BAR_GITLAB_TOKEN" in ran.stderr
    assert "Traceback" not in ran.stderr


SINK_PROCESS = """
import sys
from buildkit.catalog import Catalog, TopicSpec
from buildkit.contracts.events import GitLabAction, GitLabActionOutcome
from buildkit.settings import Settings
from connectors.gitlab.sink import run_sink

prefix = sys.argv[1]
catalog = Catalog([
    TopicSpec(f"{prefix}.actions", GitLabAction, partitions=1),
    TopicSpec(f"{prefix}.outcomes", GitLabActionOutcome, partitions=1),
])
stats = run_sink(
    Settings(), group_id=f"{prefix}-sink", actions_topic=f"{prefix}.actions",
    outcomes_topic=f"{prefix}.outcomes", catalog=catalog,
)
print(f"stopped cleanly: {stats.done} done")
"""


def test_the_sink_runs_in_the_foreground_until_sigterm(settings, catalog, prefix, gitlab):
    publish(
        settings,
        catalog,
        f"{prefix}.actions",
        [action(prefix, 1, ActionKind.ISSUE_NOTE, target_iid=1, body="from a process")],
    )
    env = {**settings_env(settings), "BAR_GITLAB_URL": gitlab.url, "BAR_GITLAB_TOKEN": TOKEN}
    process = subprocess.Popen(
        [sys.executable, "-c", SINK_PROCESS, prefix],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert wait_until(lambda: gitlab.notes(PROJECT, 1) != [], 30)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, output
    assert "stopped cleanly: 1 done" in output
    [row] = outcomes(settings, catalog, prefix).values()
    assert row.status == ViewStatus.DONE
