"""Turn one GitLab webhook delivery into a :class:`~buildkit.contracts.GitLabEvent`.

A delivery is the ``X-Gitlab-Event`` header value plus the JSON body. Where each
field of the contract comes from:

``kind``
    The body's ``object_kind``; else the kind the header names (``"Member Hook"``
    is ``member``, ``"Job Hook"`` is ``build``; see ``HEADER_KINDS``); else the
    body's ``event_name``; else the header slugified (``"Foo Bar Hook"`` is
    ``foo_bar``). Group events (member, project, subgroup) carry no
    ``object_kind``, so their kind comes from the header and their
    ``event_name`` becomes the action.
``action``
    ``object_attributes.action``, else the top-level ``action`` (release,
    milestone), else ``event_name`` for the events that have no other verb.
    Per kind: push is ``push``; a tag push is ``create`` or ``delete`` (the
    zero SHA on one side says which); pipeline, job and deployment use their
    status; a feature flag is ``on`` or ``off``.
``project_id`` / ``project_path``
    ``project.id`` / ``project.path_with_namespace``, else the top-level
    ``project_id`` / ``path_with_namespace``.
``object_id`` / ``object_iid``
    ``object_attributes.id`` / ``iid``. A comment's iid is its target's
    (``issue.iid`` or ``merge_request.iid``), as is an emoji's; a job's id is
    ``build_id``, a deployment's ``deployment_id``, a release's ``id``, a group
    member's ``user_id``, a subgroup's ``group_id``.
``labels``
    Titles from the top-level ``labels``, else ``object_attributes.labels``,
    else (comments, emoji) the target issue's or merge request's ``labels``.
``author``
    ``user.username``, else ``user_username``. Never the display name.
``ref``
    The top-level ``ref``, else ``object_attributes.ref``; a merge request (and
    a comment on one) gives its ``source_branch``, a release its ``tag``.
``occurred_at``
    Per kind: ``object_attributes.updated_at`` / ``created_at``, the pushed
    head commit's ``timestamp``, a pipeline's ``finished_at``, a job's
    ``build_finished_at`` / ``build_started_at`` / ``build_created_at``, a
    deployment's ``status_changed_at``. GitLab writes ISO 8601
    (``2013-12-03T17:23:34Z``), ``2013-12-03 17:23:34 UTC`` and
    ``2021-04-28 21:50:00 +0200``; all three parse. A missing or unreadable
    time falls back to ``received_at``.
``raw_json``
    The body exactly as received, as compact JSON.

Nothing about an unknown header or kind raises: it is kept with what the
generic extractor finds. Only a body that is not a JSON object is refused.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from buildkit.contracts import GitLabEvent

__all__ = ["HEADER_KINDS", "normalize", "parse_gitlab_time"]

HEADER_KINDS: Mapping[str, str] = {
    "Push Hook": "push",
    "Tag Push Hook": "tag_push",
    "Issue Hook": "issue",
    "Confidential Issue Hook": "issue",
    "Note Hook": "note",
    "Confidential Note Hook": "note",
    "Merge Request Hook": "merge_request",
    "Wiki Page Hook": "wiki_page",
    "Pipeline Hook": "pipeline",
    "Job Hook": "build",
    "Deployment Hook": "deployment",
    "Release Hook": "release",
    "Milestone Hook": "milestone",
    "Feature Flag Hook": "feature_flag",
    "Emoji Hook": "emoji",
    "Member Hook": "member",
    "Project Hook": "project",
    "Subgroup Hook": "subgroup",
    "Resource Access Token Hook": "access_token",
}
"""The ``X-Gitlab-Event`` header values GitLab documents, and the kind each one names."""

ZERO_SHA = "0" * 40


@dataclass
class Fields:
    """What an extractor found; ``times`` are ``occurred_at`` candidates, best first."""

    action: str | None = None
    object_id: int | None = None
    object_iid: int | None = None
    labels: list[str] = field(default_factory=list)
    ref: str | None = None
    times: list[Any] = field(default_factory=list)


Extractor = Callable[[dict[str, Any]], Fields]


def normalize(
    event_header: str, payload: dict[str, Any], *, event_id: str, received_at: datetime
) -> GitLabEvent:
    """Normalize one webhook delivery (``X-Gitlab-Event`` value and JSON body) into the contract.

    Raises :class:`ValueError` only when ``payload`` is not a JSON object (a
    ``dict``) or cannot be written back as JSON; unknown headers and kinds are kept.
    """
    if not isinstance(payload, dict):
        raise ValueError(
            f"GitLab webhook body for {event_header!r} must be a JSON object, "
            f"got {type(payload).__name__}: {payload!r:.80}"
        )
    try:
        raw_json = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"GitLab webhook body for {event_header!r} is not plain JSON: {exc}"
        ) from exc

    kind = _kind(event_header, payload)
    found = EXTRACTORS.get(kind, _generic)(payload)
    project = _dict(payload.get("project"))
    return GitLabEvent(
        event_id=event_id,
        kind=kind,
        action=found.action,
        project_id=_int(project.get("id")) or _int(payload.get("project_id")),
        project_path=_str(project.get("path_with_namespace"))
        or _str(payload.get("path_with_namespace")),
        object_id=found.object_id,
        object_iid=found.object_iid,
        labels=found.labels,
        author=_str(_dict(payload.get("user")).get("username"))
        or _str(payload.get("user_username")),
        ref=found.ref,
        occurred_at=_first_time(found.times) or received_at,
        received_at=received_at,
        raw_json=raw_json,
    )


def parse_gitlab_time(value: object) -> datetime | None:
    """Read a GitLab timestamp in any of its formats as an aware datetime; ``None`` if unreadable.

    ``2013-12-03T17:23:34Z``, ``2021-02-23T02:41:37.886Z``,
    ``2011-12-12T14:27:31+02:00``, ``2013-12-03 17:23:34 UTC`` and
    ``2021-04-28 21:50:00 +0200`` all parse; a time with no zone is taken as UTC.
    """
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if text.endswith(" UTC"):
        text = text[: -len(" UTC")] + "+00:00"
    # "2021-04-28 21:50:00 +0200": drop the space before a numeric offset.
    text = re.sub(r" ([+-]\d{2}:?\d{2})$", r"\1", text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


# -- the per-kind extractors ---------------------------------------------------------


def _generic(payload: dict[str, Any]) -> Fields:
    """The fields most kinds share; also what an unknown kind gets."""
    attrs = _dict(payload.get("object_attributes"))
    return Fields(
        action=_str(attrs.get("action"))
        or _str(payload.get("action"))
        or _str(payload.get("event_name")),
        object_id=_int(attrs.get("id")),
        object_iid=_int(attrs.get("iid")),
        labels=_titles(payload.get("labels")) or _titles(attrs.get("labels")),
        ref=_str(payload.get("ref")) or _str(attrs.get("ref")),
        times=[attrs.get("updated_at"), attrs.get("created_at"), payload.get("updated_at")],
    )


def _push(payload: dict[str, Any]) -> Fields:
    found = _generic(payload)
    found.action = "push"
    found.times = [_head_commit_time(payload)]
    return found


def _tag_push(payload: dict[str, Any]) -> Fields:
    found = _push(payload)
    found.action = "delete" if payload.get("after") == ZERO_SHA else "create"
    return found


def _merge_request(payload: dict[str, Any]) -> Fields:
    found = _generic(payload)
    attrs = _dict(payload.get("object_attributes"))
    found.ref = _str(attrs.get("source_branch"))
    return found


def _note(payload: dict[str, Any]) -> Fields:
    """A comment: the note is the object; its issue or merge request gives iid and labels."""
    found = _generic(payload)
    target = _dict(payload.get("issue")) or _dict(payload.get("merge_request"))
    found.object_iid = _int(target.get("iid"))
    found.labels = _titles(target.get("labels"))
    found.ref = _str(_dict(payload.get("merge_request")).get("source_branch"))
    return found


def _emoji(payload: dict[str, Any]) -> Fields:
    found = _note(payload)
    found.ref = None
    return found


def _pipeline(payload: dict[str, Any]) -> Fields:
    found = _generic(payload)
    attrs = _dict(payload.get("object_attributes"))
    found.action = _str(attrs.get("status"))
    found.times = [attrs.get("finished_at"), attrs.get("created_at")]
    return found


def _build(payload: dict[str, Any]) -> Fields:
    return Fields(
        action=_str(payload.get("build_status")),
        object_id=_int(payload.get("build_id")),
        ref=_str(payload.get("ref")),
        times=[
            payload.get("build_finished_at"),
            payload.get("build_started_at"),
            payload.get("build_created_at"),
        ],
    )


def _deployment(payload: dict[str, Any]) -> Fields:
    return Fields(
        action=_str(payload.get("status")),
        object_id=_int(payload.get("deployment_id")),
        ref=_str(payload.get("ref")),
        times=[payload.get("status_changed_at")],
    )


def _release(payload: dict[str, Any]) -> Fields:
    return Fields(
        action=_str(payload.get("action")),
        object_id=_int(payload.get("id")),
        ref=_str(payload.get("tag")),
        times=[payload.get("created_at"), payload.get("released_at")],
    )


def _feature_flag(payload: dict[str, Any]) -> Fields:
    found = _generic(payload)
    active = _dict(payload.get("object_attributes")).get("active")
    found.action = ("on" if active else "off") if isinstance(active, bool) else None
    found.times = []  # the body carries no time of its own
    return found


def _member(payload: dict[str, Any]) -> Fields:
    found = _generic(payload)
    found.object_id = _int(payload.get("user_id"))
    return found


def _subgroup(payload: dict[str, Any]) -> Fields:
    found = _generic(payload)
    found.object_id = _int(payload.get("group_id"))
    return found


def _access_token(payload: dict[str, Any]) -> Fields:
    found = _generic(payload)
    # object_attributes.created_at is when the token was made, not when this warning fired.
    found.times = []
    return found


EXTRACTORS: Mapping[str, Extractor] = {
    "push": _push,
    "tag_push": _tag_push,
    "issue": _generic,
    "work_item": _generic,
    "note": _note,
    "merge_request": _merge_request,
    "wiki_page": _generic,
    "pipeline": _pipeline,
    "build": _build,
    "deployment": _deployment,
    "release": _release,
    "milestone": _generic,
    "feature_flag": _feature_flag,
    "emoji": _emoji,
    "member": _member,
    "project": _generic,
    "subgroup": _subgroup,
    "access_token": _access_token,
}
"""One extractor per kind; a kind not listed gets :func:`_generic`."""


# -- small, total readers: a wrong type reads as absent, never raises ---------------------


def _kind(event_header: str, payload: dict[str, Any]) -> str:
    return (
        _str(payload.get("object_kind"))
        or HEADER_KINDS.get(event_header)
        or _str(payload.get("event_name"))
        or _slug(event_header)
    )


def _slug(header: str) -> str:
    words = re.sub(r"[^a-z0-9]+", "_", header.lower()).strip("_")
    return re.sub(r"_hook$", "", words) or "unknown"


def _dict(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _titles(value: object) -> list[str]:
    if not isinstance(value, list):
        return []
    return [t for item in value if (t := _str(_dict(item).get("title")))]


def _head_commit_time(payload: dict[str, Any]) -> Any:
    commits = [c for c in payload.get("commits") or [] if isinstance(c, dict)]
    head = payload.get("checkout_sha") or payload.get("after")
    for commit in commits:
        if commit.get("id") == head:
            return commit.get("timestamp")
    return commits[-1].get("timestamp") if commits else None


def _first_time(candidates: list[Any]) -> datetime | None:
    for candidate in candidates:
        if (parsed := parse_gitlab_time(candidate)) is not None:
            return parsed
    return None
