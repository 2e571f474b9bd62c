"""Execute one :class:`~buildkit.contracts.events.GitLabAction` against GitLab's REST API v4.

A thin layer over python-gitlab. What it asks GitLab, per action kind:

``ISSUE_NOTE`` / ``MERGE_REQUEST_NOTE``
    ``GET .../issues/:iid/notes`` (or ``merge_requests``), newest first, at most
    ``note_scan_limit`` notes, looking for the action's marker; then
    ``POST .../notes`` with the body plus the marker. The marker is an HTML comment,
    ``<!-- bar-action:ACTION_ID -->``, which GitLab renders as nothing: an action
    redelivered after a crash (posted, offset not yet committed) finds its note and
    ends ``ALREADY_DONE`` instead of commenting twice. The ``POST`` is not retried
    on 5xx by python-gitlab (a gateway may answer 502 after GitLab made the note):
    :class:`GitLabUnavailable` goes up and the whole action, marker scan first, is
    tried again by the sink.
``COMMIT_STATUS``
    ``POST /projects/:id/statuses/:sha`` (``title`` is the status name, ``body`` its
    description). GitLab refuses to set a status to the state it is already in (400
    "Cannot transition status"); the latest status of that name is then read back,
    and if it already has the wanted state the action is ``ALREADY_DONE``.
``SET_LABELS``
    ``PUT .../issues/:iid`` (or ``merge_requests`` when ``target`` says so) with the
    labels: replacing the set is idempotent by itself.
``WIKI_PAGE``
    ``GET /projects/:id/wikis/:slug``, then ``PUT`` it when it exists (or nothing,
    when its content is already the wanted one) or ``POST /projects/:id/wikis``. As for
    notes, the create ``POST`` is not retried on 5xx by python-gitlab (a gateway's 502
    may come after GitLab made the page, and a blind retry would be refused "already
    exists"): the sink tries the whole action again, which finds the page first.

Failures come out as two exceptions, so the sink can tell "try again later" from
"this will never work": :class:`GitLabUnavailable` for 408, 429, 5xx and connection
failures (refused connection, timeout) still failing after python-gitlab's own
bounded retries (``max_retries``, honouring ``Retry-After`` on 429, exponential backoff
from 0.1 s on 5xx), and :class:`ActionRejected` for every other answer outside 2xx
(401, 403, 404, 400, 422, ...), for an action missing a field its kind needs, and for
what no retry can mend: a redirect (never followed, for any method: the token would go
along to the other URL; a ``POST`` redirected http→https arrives as a ``GET``), a 2xx
that is not JSON (an SSO login page in front of GitLab), a ``BAR_GITLAB_URL`` that is
not a URL.

:meth:`GitLabActions.check` (run by the sink at start-up) asks ``GET /api/v4/version``
and ``GET /api/v4/user``, so a wrong URL or token stops the sink at once with a clear
message instead of failing every action.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import gitlab
import requests
from gitlab.exceptions import GitlabError, GitlabParsingError, RedirectError

from buildkit.contracts.events import ActionKind, ActionStatus, GitLabAction
from buildkit.errors import BuildKitError, ConfigError
from buildkit.settings import Settings

__all__ = [
    "ActionRejected",
    "Executed",
    "GitLabActions",
    "GitLabUnavailable",
    "RedirectRefused",
    "action_marker",
    "wiki_slug",
]

#: requests' failures that may pass: no connection (refused, reset, DNS), timeouts.
_TRANSIENT_REQUEST_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)
#: Statuses worth another try later: rate limited, timed out, server-side trouble.
TRANSIENT_STATUSES = frozenset({408, 429}) | frozenset(range(500, 600))
_MARKER = "<!-- bar-action:{action_id} -->"


def action_marker(action_id: str) -> str:
    """The invisible HTML comment a note carries to say which action posted it."""
    return _MARKER.format(action_id=action_id)


def wiki_slug(title: str) -> str:
    """The slug GitLab gives a wiki page of ``title``: spaces become hyphens."""
    return re.sub(r"\s", "-", title.strip())


class RedirectRefused(requests.RequestException):
    """GitLab's URL answered with a redirect, which is never followed (see the module
    docstring). Not a ConnectionError, so python-gitlab does not retry it."""


class GitLabUnavailable(BuildKitError):
    """GitLab did not serve the request (429, 5xx, no connection) even after retries."""

    def __init__(self, message: str, http_status: int | None = None) -> None:
        super().__init__(message)
        self.http_status = http_status


class ActionRejected(BuildKitError):
    """GitLab refused the action (401, 403, 404, 4xx) or the action itself is incomplete:
    retrying cannot help."""

    def __init__(self, reason: str, http_status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.http_status = http_status


@dataclass(frozen=True)
class Executed:
    """What GitLab did for one action."""

    status: ActionStatus
    reference: str | None
    http_status: int | None
    #: HTTP answers python-gitlab retried (429, 5xx) while executing it.
    retried: int = 0


class GitLabActions:
    """Executes actions on one GitLab instance; see the module docstring for the calls."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        max_retries: int = 5,
        timeout_s: float = 30.0,
        note_scan_limit: int = 500,
    ) -> None:
        self.url = url.rstrip("/")
        self.max_retries = max_retries
        self.note_scan_limit = note_scan_limit
        self._session = requests.Session()
        self._responses: list[int] = []
        self._last: requests.Response | None = None
        self._session.hooks["response"].append(self._seen)
        self._gl = gitlab.Gitlab(
            self.url,
            private_token=token,
            timeout=timeout_s,
            session=self._session,
            # 5xx and connection failures are retried like 429s (which python-gitlab
            # always retries, sleeping Retry-After), with backoff, max_retries times.
            retry_transient_errors=True,
        )

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> GitLabActions:
        """The executor for ``BAR_GITLAB_URL`` / ``BAR_GITLAB_TOKEN``; both must be set."""
        if not settings.gitlab_url or settings.gitlab_token is None:
            missing = [
                name
                for name, value in (
                    ("BAR_GITLAB_URL", settings.gitlab_url),
                    ("BAR_GITLAB_TOKEN", settings.gitlab_token),
                )
                if not value
            ]
            raise ConfigError(
                f"GitLab is not configured: set {' and '.join(missing)} to run the sink. "
                "Until then actions stay recorded on bar.gitlab.actions — "
                "list them with: buildkit gitlab actions"
            )
        return cls(settings.gitlab_url, settings.gitlab_token.get_secret_value(), **kwargs)

    def _seen(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self._responses.append(response.status_code)
        self._last = response
        if response.is_redirect:
            # Raised before requests follows it: neither the body nor PRIVATE-TOKEN
            # goes to the other URL.
            target = response.headers.get("Location", "?")
            response.close()
            raise RedirectRefused(
                f"{response.request.method} {response.url} was redirected "
                f"({response.status_code}) to {target}: set BAR_GITLAB_URL to the URL GitLab "
                "is served at (https:// when http:// redirects), redirects are not followed"
            )

    def close(self) -> None:
        """Release the HTTP session."""
        self._session.close()

    # -- one action ----------------------------------------------------------------------
    def execute(self, action: GitLabAction) -> Executed:
        """Do ``action`` once; raise :class:`ActionRejected` or :class:`GitLabUnavailable`."""
        self._responses = []
        handlers = {
            ActionKind.ISSUE_NOTE: self._note,
            ActionKind.MERGE_REQUEST_NOTE: self._note,
            ActionKind.COMMIT_STATUS: self._commit_status,
            ActionKind.SET_LABELS: self._labels,
            ActionKind.WIKI_PAGE: self._wiki,
        }
        status, reference = self._call(lambda: handlers[action.kind](action))
        last = self._responses[-1] if self._responses else None
        return Executed(status, reference, last, self._retried())

    def check(self) -> str:
        """Ask ``GET /api/v4/version`` and ``GET /api/v4/user``: GitLab's version when the
        URL and token work. Raises ConfigError when they cannot (wrong URL, not GitLab's
        API, redirected, token refused), :class:`GitLabUnavailable` when GitLab could not
        be reached (which may pass: the sink starts and waits it out)."""
        self._responses = []
        retries = min(self.max_retries, 2)
        try:
            found = self._call(lambda: self._gl.http_get("/version", max_retries=retries))
            self._call(lambda: self._gl.http_get("/user", max_retries=retries))
        except ActionRejected as exc:
            raise ConfigError(
                f"cannot use GitLab at BAR_GITLAB_URL={self.url}: {exc.reason}"
                + _HINTS.get(exc.http_status or 0, "")
            ) from exc
        version = found.get("version") if isinstance(found, dict) else None
        if not isinstance(version, str):
            # python-gitlab hands a GET's non-JSON answer back as the raw response.
            kind = found.headers.get("Content-Type") if hasattr(found, "headers") else "JSON"
            raise ConfigError(
                f"BAR_GITLAB_URL={self.url} answered GET /api/v4/version without GitLab's "
                f"version ({kind}): set it to the GitLab base URL (e.g. "
                "https://gitlab.example.com), not a login page or a proxy in front of it"
            )
        return version

    def _call(self, work: Any) -> Any:
        """``work()``, its failures sorted into ActionRejected / GitLabUnavailable."""
        self._last = None
        try:
            return work()
        except GitlabError as exc:
            raise self._classify(exc) from exc
        except _TRANSIENT_REQUEST_ERRORS as exc:
            raise GitLabUnavailable(f"cannot reach GitLab at {self.url}: {exc}") from exc
        except RedirectRefused as exc:
            code = self._last.status_code if self._last is not None else None
            raise ActionRejected(str(exc), code) from exc
        except requests.RequestException as exc:
            # InvalidURL, MissingSchema, InvalidSchema, too many redirects, ...: permanent.
            raise ActionRejected(
                f"cannot send to GitLab at BAR_GITLAB_URL={self.url}: {type(exc).__name__}: {exc}"
            ) from exc

    def _retried(self) -> int:
        return sum(code in TRANSIENT_STATUSES for code in self._responses)

    @property
    def last_retried(self) -> int:
        """Answers python-gitlab retried (429, 5xx) during the latest :meth:`execute`,
        also when it raised."""
        return self._retried()

    def _classify(self, exc: GitlabError) -> BuildKitError:
        code = exc.response_code
        message = exc.error_message
        if isinstance(message, bytes):
            message = message.decode(errors="replace")
        if isinstance(exc, GitlabParsingError):
            last = self._last
            code = last.status_code if last is not None else None
            kind = last.headers.get("Content-Type", "no content type") if last else "?"
            where = last.url if last is not None else self.url
            return ActionRejected(
                f"{where} answered {code} with a body that is not GitLab's JSON ({kind}): "
                "is BAR_GITLAB_URL the GitLab base URL, not a login page or a proxy in front "
                "of it?",
                code,
            )
        if isinstance(exc, RedirectError):
            return ActionRejected(
                f"{message}: set BAR_GITLAB_URL to the URL GitLab is served at", code
            )
        if code is None:
            # No HTTP answer behind it: something python-gitlab refused locally.
            return ActionRejected(f"{type(exc).__name__}: {message}")
        if code in TRANSIENT_STATUSES:
            return GitLabUnavailable(
                f"GitLab at {self.url} answered {code}: {message} "
                f"(still after {self.max_retries} retries)",
                code,
            )
        return ActionRejected(f"{code} {_reason(code)}: {message}".strip(), code)

    def _project(self, action: GitLabAction) -> Any:
        # lazy: no GET /projects/:id, the next call names the project in its path.
        return self._gl.projects.get(action.project_id, lazy=True)

    # -- the kinds ---------------------------------------------------------------------
    def _note(self, action: GitLabAction) -> tuple[ActionStatus, str | None]:
        iid, body = _need(action, "target_iid"), _need(action, "body")
        project = self._project(action)
        is_issue = action.kind == ActionKind.ISSUE_NOTE
        target = (project.issues if is_issue else project.mergerequests).get(iid, lazy=True)
        marker = action_marker(action.action_id)
        existing = target.notes.list(
            iterator=True,
            sort="desc",
            order_by="created_at",
            per_page=100,
            max_retries=self.max_retries,
        )
        for scanned, note in enumerate(existing):
            if scanned >= self.note_scan_limit:
                break
            if marker in (note.attributes.get("body") or ""):
                return ActionStatus.ALREADY_DONE, str(note.get_id())
        # A 5xx may come from a gateway after GitLab made the note: retrying the POST
        # blind could comment twice. The sink retries the whole action instead, so the
        # marker is looked for again first. (429s are safe: refused, so retried here.)
        note = target.notes.create(
            {"body": f"{body}\n\n{marker}"},
            max_retries=self.max_retries,
            retry_transient_errors=False,
        )
        return ActionStatus.DONE, str(note.get_id())

    def _commit_status(self, action: GitLabAction) -> tuple[ActionStatus, str | None]:
        sha, state = _need(action, "sha"), _need(action, "state")
        name = action.title or "default"
        commit = self._project(action).commits.get(sha, lazy=True)
        data = {"state": state, "name": name}
        if action.body is not None:
            data["description"] = action.body
        try:
            created = commit.statuses.create(data, max_retries=self.max_retries)
        except GitlabError as exc:
            if exc.response_code != 400 or "Cannot transition status" not in str(exc.error_message):
                raise
            # Already in that state (a redelivered action): see what is there.
            latest = commit.statuses.list(name=name, get_all=False, max_retries=self.max_retries)
            same = [s for s in latest if s.attributes.get("status") == state]
            if not same:
                raise
            return ActionStatus.ALREADY_DONE, str(same[0].get_id())
        return ActionStatus.DONE, str(created.get_id())

    def _labels(self, action: GitLabAction) -> tuple[ActionStatus, str | None]:
        iid = _need(action, "target_iid")
        project = self._project(action)
        target = action.target or "issue"
        if target not in ("issue", "merge_request"):
            raise ActionRejected(
                f'SET_LABELS target must be issue or merge_request, not "{target}"'
            )
        manager = project.issues if target == "issue" else project.mergerequests
        updated = manager.update(
            iid, {"labels": ",".join(action.labels)}, max_retries=self.max_retries
        )
        labels = updated.get("labels", action.labels) if isinstance(updated, dict) else []
        return ActionStatus.DONE, ",".join(labels)

    def _wiki(self, action: GitLabAction) -> tuple[ActionStatus, str | None]:
        title, content = _need(action, "title"), action.body or ""
        slug = wiki_slug(title)
        wikis = self._project(action).wikis
        try:
            page = wikis.get(slug, max_retries=self.max_retries)
        except GitlabError as exc:
            if exc.response_code != 404:
                raise
            # Not retried on 5xx, as a note's POST (see the module docstring).
            created = wikis.create(
                {"title": title, "content": content},
                max_retries=self.max_retries,
                retry_transient_errors=False,
            )
            return ActionStatus.DONE, str(created.attributes.get("slug", slug))
        if page.attributes.get("content") == content and page.attributes.get("title") == title:
            return ActionStatus.ALREADY_DONE, slug
        updated = wikis.update(
            slug, {"title": title, "content": content}, max_retries=self.max_retries
        )
        return ActionStatus.DONE, str(updated.get("slug", slug) if updated else slug)


_HINTS = {
    401: ": check BAR_GITLAB_TOKEN (a personal, project or group access token with the "
    "api scope, not expired or revoked)",
    403: ": BAR_GITLAB_TOKEN needs the api scope",
    404: ": set BAR_GITLAB_URL to the GitLab base URL (e.g. https://gitlab.example.com, "
    "without /api/v4)",
}


def _need(action: GitLabAction, field: str) -> Any:
    value = getattr(action, field)
    if value is None or value == "":
        raise ActionRejected(f"{action.kind.value} action {action.action_id} has no {field}")
    return value


def _reason(code: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return ""
