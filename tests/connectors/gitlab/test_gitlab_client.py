"""The action executor against the GitLab double: each kind, retries, refusals, markers."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from buildkit.contracts.events import ActionKind, ActionStatus, GitLabAction
from buildkit.dev.procs import free_port
from buildkit.errors import ConfigError
from connectors.gitlab.client import (
    ActionRejected,
    GitLabActions,
    GitLabUnavailable,
    action_marker,
    wiki_slug,
)
from tests.connectors.gitlab.gitlab_double import GitLabDouble

PROJECT = 7


def action(kind: ActionKind, action_id: str = "a-1", **fields: object) -> GitLabAction:
    return GitLabAction(
        action_id=action_id,
        kind=kind,
        project_id=fields.pop("project_id", PROJECT),
        requested_by="tests",
        created_at=datetime(2026, 11, 25, 10, tzinfo=UTC),
        **fields,
    )


@pytest.fixture
def double() -> Iterator[GitLabDouble]:
    with GitLabDouble(token="secret") as gitlab:
        gitlab.add_project(PROJECT, issues=(1, 2), merge_requests=(3,))
        yield gitlab


@pytest.fixture
def actions(double: GitLabDouble) -> Iterator[GitLabActions]:
    executor = GitLabActions(double.url, "secret", max_retries=3)
    yield executor
    executor.close()


def test_a_note_carries_its_marker_and_is_not_posted_twice(double, actions):
    first = actions.execute(action(ActionKind.ISSUE_NOTE, target_iid=1, body="LGTM"))
    again = actions.execute(action(ActionKind.ISSUE_NOTE, target_iid=1, body="LGTM"))
    assert first.status == ActionStatus.DONE and first.http_status == 201
    assert again.status == ActionStatus.ALREADY_DONE and again.reference == first.reference
    assert double.notes(PROJECT, 1) == [f"LGTM\n\n{action_marker('a-1')}"]


def test_the_marker_is_found_beyond_the_first_page_of_notes(double, actions):
    actions.execute(action(ActionKind.MERGE_REQUEST_NOTE, target_iid=3, body="first"))
    for n in range(150):  # newer notes push the marked one to page 2 of 100
        double.add_note(PROJECT, 3, f"chatter {n}", merge_request=True)
    again = actions.execute(action(ActionKind.MERGE_REQUEST_NOTE, target_iid=3, body="first"))
    assert again.status == ActionStatus.ALREADY_DONE
    assert len(double.notes(PROJECT, 3, merge_request=True)) == 151
    pages = [r for r in double.requests if r.method == "GET" and r.path.endswith("/notes")]
    assert len(pages) == 3  # one for the first run, two to reach the marker


def test_commit_status_set_twice_is_already_done(double, actions):
    status = action(
        ActionKind.COMMIT_STATUS, sha="abc123", state="success", title="bar/qits", body="ok"
    )
    assert actions.execute(status).status == ActionStatus.DONE
    assert actions.execute(status).status == ActionStatus.ALREADY_DONE
    [made] = double.projects[PROJECT].statuses
    assert (made["name"], made["status"], made["description"]) == ("bar/qits", "success", "ok")


def test_labels_replace_the_set_on_an_issue_or_merge_request(double, actions):
    actions.execute(action(ActionKind.SET_LABELS, target_iid=2, labels=["bug", "bar::triaged"]))
    done = actions.execute(
        action(ActionKind.SET_LABELS, target_iid=3, labels=["review"], target="merge_request")
    )
    assert double.projects[PROJECT].issues[2].labels == ["bug", "bar::triaged"]
    assert double.projects[PROJECT].merge_requests[3].labels == ["review"]
    assert done.reference == "review"


def test_a_wiki_page_is_created_then_updated_by_slug(double, actions):
    created = actions.execute(action(ActionKind.WIKI_PAGE, title="Run report", body="v1"))
    updated = actions.execute(action(ActionKind.WIKI_PAGE, title="Run report", body="v2"))
    same = actions.execute(action(ActionKind.WIKI_PAGE, title="Run report", body="v2"))
    assert (created.status, created.reference) == (ActionStatus.DONE, "Run-report")
    assert updated.status == ActionStatus.DONE
    assert same.status == ActionStatus.ALREADY_DONE
    assert double.projects[PROJECT].wikis["Run-report"]["content"] == "v2"
    assert wiki_slug("Run report") == "Run-report"


def test_a_429_waits_for_retry_after_then_succeeds(double, actions):
    double.fail_next(1, 429, retry_after=1)
    done = actions.execute(action(ActionKind.SET_LABELS, target_iid=1, labels=["x"]))
    assert done.status == ActionStatus.DONE and done.retried == 1
    limited, retried = double.requests[-2:]
    assert (limited.status, retried.status) == (429, 200)
    assert retried.at - limited.at >= 1.0


def test_5xx_past_the_retry_budget_is_unavailable(double, actions):
    double.fail_next(4, 502)  # the request and its 3 retries
    with pytest.raises(GitLabUnavailable) as caught:
        actions.execute(action(ActionKind.SET_LABELS, target_iid=1, labels=["x"]))
    assert caught.value.http_status == 502


@pytest.mark.parametrize(
    ("token", "project_id", "iid", "status", "words"),
    [
        ("wrong", PROJECT, 1, 401, "401 Unauthorized"),
        ("secret", 999, 1, 404, "404 Project Not Found"),
        ("secret", PROJECT, 99, 404, "404 Issue Not Found"),
    ],
)
def test_refusals_are_rejections_with_the_reason(double, token, project_id, iid, status, words):
    executor = GitLabActions(double.url, token, max_retries=1)
    with pytest.raises(ActionRejected) as caught:
        executor.execute(
            action(ActionKind.ISSUE_NOTE, project_id=project_id, target_iid=iid, body="hi")
        )
    assert caught.value.http_status == status
    assert words in caught.value.reason


def test_an_action_missing_its_fields_is_rejected_without_a_request(double, actions):
    with pytest.raises(ActionRejected, match="has no sha"):
        actions.execute(action(ActionKind.COMMIT_STATUS, state="success"))
    assert double.requests == []


# -- answers no retry mends, and the start-up check ------------------------------------


def test_a_redirected_post_is_rejected_and_not_followed(double, actions):
    with GitLabDouble(token="secret") as elsewhere:
        elsewhere.add_project(PROJECT, issues=(1,))
        target = f"{elsewhere.url}/api/v4/projects/{PROJECT}/issues/1/notes"
        double.fail_next(1, 308, method="POST", path="/issues/1/notes", location=target)
        with pytest.raises(ActionRejected) as caught:
            actions.execute(action(ActionKind.ISSUE_NOTE, target_iid=1, body="hi"))
        assert elsewhere.requests == []  # neither the body nor the token went there
    assert caught.value.http_status == 308
    assert "BAR_GITLAB_URL" in caught.value.reason and target in caught.value.reason


def test_a_200_login_page_is_rejected_not_waited_for(double, actions):
    login = "<!DOCTYPE html><html><body>Sign in with SSO</body></html>"
    double.fail_next(1, 200, method="POST", path="/wikis", html=login)
    with pytest.raises(ActionRejected) as caught:
        actions.execute(action(ActionKind.WIKI_PAGE, title="Report", body="x"))
    assert caught.value.http_status == 200
    assert "not GitLab's JSON (text/html" in caught.value.reason
    assert "BAR_GITLAB_URL" in caught.value.reason


@pytest.mark.parametrize("url", ["gitlab.example.com", "ftp://gitlab.example.com", "http://"])
def test_a_malformed_url_is_rejected(url):
    executor = GitLabActions(url, "secret", max_retries=1)
    with pytest.raises(ActionRejected, match="BAR_GITLAB_URL"):
        executor.execute(action(ActionKind.SET_LABELS, target_iid=1, labels=["x"]))


def test_no_connection_is_unavailable():
    executor = GitLabActions(f"http://127.0.0.1:{free_port()}", "secret", max_retries=0)
    with pytest.raises(GitLabUnavailable, match="cannot reach GitLab"):
        executor.execute(action(ActionKind.SET_LABELS, target_iid=1, labels=["x"]))


def test_a_wiki_create_answered_502_after_it_was_made_is_unavailable_then_already_done(
    double, actions
):
    double.fail_next(1, 502, method="POST", path="/wikis", after=True)
    page = action(ActionKind.WIKI_PAGE, title="Run report", body="v1")
    with pytest.raises(GitLabUnavailable):  # no blind retry of the POST
        actions.execute(page)
    assert actions.execute(page).status == ActionStatus.ALREADY_DONE
    assert [r.status for r in double.requests if r.method == "POST"] == [502]


def test_check_accepts_gitlab_and_names_the_setting_to_fix(double):
    assert GitLabActions(double.url, "secret").check() == "17.5.0-double"
    with pytest.raises(ConfigError, match="BAR_GITLAB_TOKEN"):
        GitLabActions(double.url, "wrong").check()
    with pytest.raises(ConfigError, match="without /api/v4"):
        GitLabActions(f"{double.url}/api/v4", "secret").check()
    double.fail_next(1, 301, path="/version", location="https://gitlab.example.com/api/v4/version")
    with pytest.raises(ConfigError, match=r"redirected \(301\) to https://gitlab\.example\.com"):
        GitLabActions(double.url, "secret").check()
    double.fail_next(1, 200, path="/version", html="<html>Sign in</html>")
    with pytest.raises(ConfigError, match="not a login page"):
        GitLabActions(double.url, "secret").check()
    with pytest.raises(GitLabUnavailable):
        GitLabActions(f"http://127.0.0.1:{free_port()}", "secret", max_retries=0).check()
