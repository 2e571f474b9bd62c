"""GitLab webhook deliveries, as documented on docs.gitlab.com "Webhook events", normalize
into the GitLabEvent contract; no broker needed."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, NamedTuple

import pytest

import connectors.gitlab
from buildkit.contracts import Codec, GitLabEvent
from connectors.gitlab import HEADER_KINDS, normalize, parse_gitlab_time

FIXTURES = Path(__file__).parent / "fixtures"
RECEIVED = datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


class Expected(NamedTuple):
    header: str
    kind: str
    action: str | None
    project_id: int | None
    project_path: str | None
    object_id: int | None
    object_iid: int | None
    labels: list[str]
    author: str | None
    ref: str | None
    occurred_at: datetime | None  # None: the body has no time, so received_at


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


CASES: dict[str, Expected] = {
    "push": Expected(
        "Push Hook", "push", "push", 15, "mike/diaspora", None, None, [], "jsmith",
        "refs/heads/master", utc(2012, 1, 3, 21, 36, 29),
    ),
    "tag_push": Expected(
        "Tag Push Hook", "tag_push", "create", 1, "jsmith/example", None, None, [], None,
        "refs/tags/v1.0.0", None,
    ),
    "issue": Expected(
        "Issue Hook", "issue", "open", 1, "gitlabhq/gitlab-test", 301, 23, ["API"], "root",
        None, utc(2013, 12, 3, 17, 15, 43),
    ),
    "note_issue": Expected(
        "Note Hook", "note", "create", 5, "gitlab-org/gitlab-test", 1241, 17,
        ["Afterpod", "Element"], "root", None, utc(2015, 5, 17, 17, 6, 40),
    ),
    "note_merge_request": Expected(
        "Note Hook", "note", "create", 5, "gitlab-org/gitlab-test", 1244, 1,
        ["Afterpod", "Element"], "root", "master", utc(2015, 5, 17, 18, 21, 36),
    ),
    "merge_request": Expected(
        "Merge Request Hook", "merge_request", "open", 1, "gitlabhq/gitlab-test", 99, 1,
        ["API"], "root", "ms-viewport", utc(2013, 12, 3, 17, 23, 34),
    ),
    "wiki_page": Expected(
        "Wiki Page Hook", "wiki_page", "create", 1, "root/awesome-project", None, None, [],
        "root", None, None,
    ),
    "pipeline": Expected(
        "Pipeline Hook", "pipeline", "success", 1, "gitlab-org/gitlab-test", 31, 3, [], "root",
        "master", utc(2016, 8, 12, 15, 26, 29),
    ),
    "build": Expected(
        "Job Hook", "build", "created", 380, "gitlab-org/gitlab-test", 1977, None, [], None,
        "gitlab-script-trigger", datetime(2021, 2, 23, 2, 41, 37, 886000, tzinfo=UTC),
    ),
    "deployment": Expected(
        "Deployment Hook", "deployment", "success", 30, "root/test-deployment-webhooks", 15,
        None, [], "root", None, utc(2021, 4, 28, 19, 50, 0),
    ),
    "release": Expected(
        "Release Hook", "release", "create", 2, "gitlab-org/release-webhook-example", 1, None,
        [], None, "v1.1", utc(2020, 11, 2, 12, 55, 12),
    ),
    "milestone": Expected(
        "Milestone Hook", "milestone", "create", 1, "gitlabhq/gitlab-test", 61, 10, [], None,
        None, utc(2025, 6, 16, 14, 10, 57),
    ),
    "feature_flag": Expected(
        "Feature Flag Hook", "feature_flag", "on", 1, "gitlabhq/gitlab-test", 6, None, [],
        "root", None, None,
    ),
    "emoji": Expected(
        "Emoji Hook", "emoji", "award", 6, "flightjs/Flight", 1, 42, [], "root", None,
        utc(2023, 7, 4, 20, 44, 11),
    ),
    "member": Expected(
        "Member Hook", "member", "user_add_to_group", None, None, 64, None, [], "test_user",
        None, utc(2020, 12, 11, 4, 57, 22),
    ),
    "project": Expected(
        "Project Hook", "project", "project_create", 22, "group1/project1", None, None, [],
        None, None, utc(2024, 10, 7, 10, 43, 48),
    ),
    "subgroup": Expected(
        "Subgroup Hook", "subgroup", "subgroup_create", None, None, 10, None, [], None, None,
        utc(2021, 1, 20, 9, 40, 12),
    ),
    "access_token": Expected(
        "Resource Access Token Hook", "access_token", "expiring_access_token", 7,
        "flightjs/Flight", 25, None, [], None, None, None,
    ),
}  # fmt: skip


def fixture(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return loaded


def normalized(name: str, header: str | None = None) -> GitLabEvent:
    return normalize(
        header or CASES[name].header, fixture(name), event_id=f"e-{name}", received_at=RECEIVED
    )


def test_package_exports_exactly_the_pinned_names() -> None:
    assert sorted(connectors.gitlab.__all__) == ["HEADER_KINDS", "normalize", "parse_gitlab_time"]


def test_every_fixture_has_a_case_and_every_documented_header_a_fixture() -> None:
    assert {p.stem for p in FIXTURES.glob("*.json")} == set(CASES)
    confidential = {h for h in HEADER_KINDS if h.startswith("Confidential ")}
    assert {c.header for c in CASES.values()} == set(HEADER_KINDS) - confidential


@pytest.mark.parametrize("name", sorted(CASES))
def test_documented_delivery_normalizes_to_its_fields(name: str) -> None:
    want = CASES[name]
    event = normalized(name)

    got = (
        event.kind, event.action, event.project_id, event.project_path, event.object_id,
        event.object_iid, event.labels, event.author, event.ref,
    )  # fmt: skip
    assert got == (
        want.kind, want.action, want.project_id, want.project_path, want.object_id,
        want.object_iid, want.labels, want.author, want.ref,
    )  # fmt: skip
    assert event.occurred_at == (want.occurred_at or RECEIVED)
    assert event.occurred_at.tzinfo is not None
    assert event.event_id == f"e-{name}"
    assert event.received_at == RECEIVED


@pytest.mark.parametrize("name", sorted(CASES))
def test_raw_json_is_the_compact_body_and_round_trips(name: str) -> None:
    event = normalized(name)
    assert json.loads(event.raw_json) == fixture(name)
    assert event.raw_json == json.dumps(fixture(name), separators=(",", ":"), ensure_ascii=False)


@pytest.mark.parametrize("name", sorted(CASES))
def test_normalized_event_survives_an_avro_round_trip(name: str) -> None:
    codec = Codec.for_model(GitLabEvent)
    event = normalized(name)
    assert codec.decode(codec.encode(event)) == event


@pytest.mark.parametrize(
    ("header", "name"),
    [("Confidential Issue Hook", "issue"), ("Confidential Note Hook", "note_issue")],
)
def test_confidential_headers_give_the_same_kind(header: str, name: str) -> None:
    assert normalized(name, header) == normalized(name)


def test_unknown_header_without_object_kind_is_kept_with_a_slugified_kind() -> None:
    body = {"something": [1, 2], "project": "not a dict", "labels": "nor a list"}
    event = normalize("Brand New Thing Hook", body, event_id="u", received_at=RECEIVED)

    assert event.kind == "brand_new_thing"
    assert event.project_id is None and event.labels == [] and event.action is None
    assert event.occurred_at == RECEIVED
    assert json.loads(event.raw_json) == body


def test_unknown_kind_in_the_body_wins_over_the_header() -> None:
    body = {
        "object_kind": "vulnerability",
        "object_attributes": {"project_id": 50, "created_at": "2025-01-08T00:46:14.413Z"},
    }
    event = normalize("Vulnerability Hook", body, event_id="v", received_at=RECEIVED)

    assert event.kind == "vulnerability"
    assert event.occurred_at == datetime(2025, 1, 8, 0, 46, 14, 413000, tzinfo=UTC)


def test_a_work_item_under_the_issue_header_keeps_its_own_kind() -> None:
    body = fixture("issue") | {"object_kind": "work_item"}
    event = normalize("Issue Hook", body, event_id="w", received_at=RECEIVED)
    assert (event.kind, event.object_iid, event.labels) == ("work_item", 23, ["API"])


def test_a_deleted_tag_is_a_delete() -> None:
    body = fixture("tag_push") | {
        "before": "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7",
        "after": "0" * 40,
        "checkout_sha": None,
    }
    assert normalize("Tag Push Hook", body, event_id="t", received_at=RECEIVED).action == "delete"


@pytest.mark.parametrize("payload", [[1, 2], "push", None, 3])
def test_a_body_that_is_not_an_object_is_refused_by_name(payload: Any) -> None:
    with pytest.raises(
        ValueError, match=r"'Push Hook' must be a JSON object, got " + type(payload).__name__
    ):
        normalize("Push Hook", payload, event_id="x", received_at=RECEIVED)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2013-12-03T17:23:34Z", utc(2013, 12, 3, 17, 23, 34)),
        ("2013-12-03 17:23:34 UTC", utc(2013, 12, 3, 17, 23, 34)),
        ("2021-02-23T02:41:37.886Z", datetime(2021, 2, 23, 2, 41, 37, 886000, tzinfo=UTC)),
        (
            "2011-12-12T14:27:31+02:00",
            datetime(2011, 12, 12, 14, 27, 31, tzinfo=timezone(timedelta(hours=2))),
        ),
        ("2021-04-28 21:50:00 +0200", utc(2021, 4, 28, 19, 50, 0)),
        ("2024-01-26", utc(2024, 1, 26)),
    ],
)
def test_gitlab_time_formats_parse(text: str, expected: datetime) -> None:
    assert parse_gitlab_time(text) == expected


@pytest.mark.parametrize("value", [None, "", "yesterday", "2015-04-08T21: 00:25-07:00", 12])
def test_unreadable_times_read_as_absent(value: object) -> None:
    assert parse_gitlab_time(value) is None
