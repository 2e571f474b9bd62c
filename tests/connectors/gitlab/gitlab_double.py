"""A GitLab REST API v4 double: the calls the GitLab sink makes, over real HTTP.

A real server (FastAPI + uvicorn in a background thread on a free port) answering,
as GitLab's REST API documentation describes them:

======  =================================================  ==============================
GET     ``/api/v4/version``                                ``version``, ``revision``
GET     ``/api/v4/user``                                   the token's user
GET     ``/api/v4/projects/:id``                           project
GET     ``/api/v4/projects/:id/issues/:iid/notes``         notes, paginated (``page``,
                                                           ``per_page``; ``sort`` asc|desc,
                                                           ``order_by`` created_at|updated_at)
POST    ``/api/v4/projects/:id/issues/:iid/notes``         201 note (``body``)
GET     ``/api/v4/projects/:id/merge_requests/:iid/notes``  as for issues
POST    ``/api/v4/projects/:id/merge_requests/:iid/notes``  as for issues
PUT     ``/api/v4/projects/:id/issues/:iid``               issue (``labels``: comma list)
PUT     ``/api/v4/projects/:id/merge_requests/:iid``       merge request (``labels``)
POST    ``/api/v4/projects/:id/statuses/:sha``             201 commit status (``state``,
                                                           ``name``, ``description``); 400
                                                           "Cannot transition status" when
                                                           the status is in that state
GET     ``/api/v4/projects/:id/repository/commits/:sha/statuses``  latest status per name
                                                           (``name`` filter)
GET     ``/api/v4/projects/:id/wikis``                     pages (``with_content``)
POST    ``/api/v4/projects/:id/wikis``                     201 page (``title``, ``content``)
GET     ``/api/v4/projects/:id/wikis/:slug``               page
PUT     ``/api/v4/projects/:id/wikis/:slug``               page
======  =================================================  ==============================

Authentication is the ``PRIVATE-TOKEN`` header: a missing or wrong token is ``401
{"message": "401 Unauthorized"}``. An unknown project, issue, merge request or wiki
page is ``404 {"message": "404 Project Not Found"}`` (and so on); an unknown route
``404 {"error": "404 Not Found"}``. Lists carry GitLab's pagination headers
(``x-page``, ``x-per-page``, ``x-total``, ``x-total-pages``, ``x-next-page``,
``x-prev-page`` and ``Link``). Faults are injected with :meth:`GitLabDouble.fail_next`
(the next N requests answer 429 with ``Retry-After``, 500, 502, 403, ..., a redirect
to ``location``, or an HTML page with ``html``, as an SSO proxy does). Every
request is recorded with its arrival time (:attr:`GitLabDouble.requests`).
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from tests.helpers.http_double import HttpDouble

_EVENTS = {
    "pending": "enqueue",
    "running": "run",
    "success": "succeed",
    "failed": "drop",
    "canceled": "cancel",
    "skipped": "skip",
}


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the double saw it, and what it answered."""

    method: str
    path: str
    status: int
    at: float  # time.monotonic() on arrival


@dataclass
class _Fault:
    status: int
    retry_after: int | None
    remaining: int
    method: str | None
    path: str | None
    #: Serve the request, then answer the fault (a proxy timing out on a slow GitLab).
    after: bool
    #: A redirect's Location.
    location: str | None = None
    #: An HTML page as the body instead of GitLab's JSON message.
    html: str | None = None

    def matches(self, request: Request) -> bool:
        return (self.method is None or request.method == self.method) and (
            self.path is None or self.path in request.url.path
        )

    def response(self) -> Response:
        headers = {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}
        if self.location is not None:
            headers["Location"] = self.location
        if self.html is not None:
            return HTMLResponse(self.html, self.status, headers=headers)
        message = "Retry later" if self.status == 429 else f"{self.status} injected"
        return JSONResponse({"message": message}, self.status, headers=headers)


@dataclass
class Target:
    """An issue or merge request: its labels and notes."""

    iid: int
    labels: list[str] = field(default_factory=list)
    notes: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Project:
    """A project's issues, merge requests, commit statuses and wiki pages."""

    id: int
    issues: dict[int, Target] = field(default_factory=dict)
    merge_requests: dict[int, Target] = field(default_factory=dict)
    statuses: list[dict[str, Any]] = field(default_factory=list)
    wikis: dict[str, dict[str, Any]] = field(default_factory=dict)


class _ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class GitLabDouble(HttpDouble):
    """The double; ``with GitLabDouble(token="t") as gitlab:`` serves at ``gitlab.url``."""

    service = "GitLab double"

    def __init__(self, token: str = "glpat-double") -> None:
        super().__init__()
        self.token = token
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._faults: list[_Fault] = []
        self.projects: dict[int, Project] = {}
        self._ids = itertools.count(1000)

    # -- lifecycle ------------------------------------------------------------------

    # -- set up and look -------------------------------------------------------------
    def add_project(
        self, project_id: int, *, issues: tuple[int, ...] = (), merge_requests: tuple[int, ...] = ()
    ) -> Project:
        """A project with these issues and merge requests (by iid)."""
        with self._lock:
            project = self.projects.setdefault(project_id, Project(project_id))
            for iid in issues:
                project.issues.setdefault(iid, Target(iid))
            for iid in merge_requests:
                project.merge_requests.setdefault(iid, Target(iid))
            return project

    def add_note(self, project_id: int, iid: int, body: str, *, merge_request: bool = False) -> int:
        """A note someone else wrote; returns its id."""
        with self._lock:
            project = self.projects[project_id]
            target = (project.merge_requests if merge_request else project.issues)[iid]
            return self._new_note(target, body)["id"]

    def fail_next(
        self,
        count: int,
        status: int,
        *,
        retry_after: int | None = None,
        method: str | None = None,
        path: str | None = None,
        after: bool = False,
        location: str | None = None,
        html: str | None = None,
    ) -> None:
        """Answer the next ``count`` requests (of ``method``, whose path contains ``path``)
        with ``status`` and ``Retry-After``; with ``after`` the request is served first
        and its answer replaced, as a gateway timing out on a slow GitLab does. With
        ``location`` the answer is a redirect there (``status`` 301, 302, 307, 308); with
        ``html`` its body is that HTML page (a login page answering 200)."""
        with self._lock:
            self._faults.append(
                _Fault(status, retry_after, count, method, path, after, location, html)
            )

    def clear_faults(self) -> None:
        """Forget every fault not served yet."""
        with self._lock:
            self._faults.clear()

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def notes(self, project_id: int, iid: int, *, merge_request: bool = False) -> list[str]:
        """The bodies of a target's notes, oldest first."""
        with self._lock:
            project = self.projects[project_id]
            target = (project.merge_requests if merge_request else project.issues)[iid]
            return [n["body"] for n in target.notes]

    # -- the API ---------------------------------------------------------------------
    def _new_note(self, target: Target, body: str) -> dict[str, Any]:
        note = {
            "id": next(self._ids),
            "body": body,
            "author": {"id": 1, "username": "bar-bot"},
            "created_at": _now(),
            "updated_at": _now(),
            "system": False,
            "noteable_iid": target.iid,
        }
        target.notes.append(note)
        return note

    def _project(self, project_id: str) -> Project:
        try:
            return self.projects[int(project_id)]
        except (KeyError, ValueError):
            raise _ApiError(404, "404 Project Not Found") from None

    def _target(self, project_id: str, kind: str, iid: str) -> Target:
        project = self._project(project_id)
        targets = project.issues if kind == "issues" else project.merge_requests
        try:
            return targets[int(iid)]
        except (KeyError, ValueError):
            what = "Issue" if kind == "issues" else "Merge Request"
            raise _ApiError(404, f"404 {what} Not Found") from None

    def _app(self) -> FastAPI:
        app = FastAPI()
        double = self

        @app.middleware("http")
        async def gate(request: Request, call_next: Any) -> Response:
            arrived = time.monotonic()
            fault = double._take_fault(request)
            response = None if fault is None or fault.after else fault.response()
            if response is None and request.headers.get("private-token") != double.token:
                response = JSONResponse({"message": "401 Unauthorized"}, 401)
            if response is None:
                response = await call_next(request)
                if fault is not None:
                    response = fault.response()
            with double._lock:
                double._requests.append(
                    RecordedRequest(request.method, request.url.path, response.status_code, arrived)
                )
            return response

        @app.exception_handler(_ApiError)
        async def api_error(request: Request, exc: _ApiError) -> JSONResponse:
            return JSONResponse({"message": exc.message}, exc.status)

        @app.exception_handler(StarletteHTTPException)
        async def not_found(request: Request, exc: StarletteHTTPException) -> JSONResponse:
            return JSONResponse({"error": f"{exc.status_code} Not Found"}, exc.status_code)

        @app.get("/api/v4/version")
        def version() -> dict[str, Any]:
            return {"version": "17.5.0-double", "revision": "0000000", "enterprise": False}

        @app.get("/api/v4/user")
        def user() -> dict[str, Any]:
            return {"id": 1, "username": "bar-bot", "name": "BuildKit bot", "state": "active"}

        @app.get("/api/v4/projects/{project_id}")
        def project(project_id: str) -> dict[str, Any]:
            found = double._project(project_id)
            return {"id": found.id, "path_with_namespace": f"group/project-{found.id}"}

        @app.get("/api/v4/projects/{project_id}/{kind}/{iid}/notes")
        def list_notes(
            request: Request,
            project_id: str,
            kind: str,
            iid: str,
            sort: str = "desc",
            order_by: str = "created_at",
            page: int = 1,
            per_page: int = 20,
        ) -> Response:
            with double._lock:
                target = double._target(project_id, _kind(kind), iid)
                notes = sorted(target.notes, key=lambda n: (n[order_by], n["id"]))
            if sort == "desc":
                notes.reverse()
            return _page(request, notes, page, per_page)

        @app.post("/api/v4/projects/{project_id}/{kind}/{iid}/notes", status_code=201)
        async def create_note(request: Request, project_id: str, kind: str, iid: str) -> Any:
            data = await _data(request)
            if not data.get("body"):
                raise _ApiError(400, "400 Bad request - body is missing")
            with double._lock:
                target = double._target(project_id, _kind(kind), iid)
                return double._new_note(target, str(data["body"]))

        @app.post("/api/v4/projects/{project_id}/statuses/{sha}", status_code=201)
        async def create_status(request: Request, project_id: str, sha: str) -> Any:
            data = await _data(request)
            state = data.get("state")
            if state not in _EVENTS:
                raise _ApiError(400, "400 Bad request - state does not have a valid value")
            name = data.get("name") or data.get("context") or "default"
            with double._lock:
                found = double._project(project_id)
                latest = _latest(found.statuses, sha, name)
                if latest is not None and latest["status"] == state:
                    raise _ApiError(
                        400,
                        f"Cannot transition status via :{_EVENTS[state]} from :{state} "
                        f'(Reason(s): Status cannot transition via "{_EVENTS[state]}")',
                    )
                status = {
                    "id": next(double._ids),
                    "sha": sha,
                    "ref": data.get("ref"),
                    "status": state,
                    "name": name,
                    "description": data.get("description"),
                    "created_at": _now(),
                }
                if latest is not None and latest["status"] in ("pending", "running"):
                    latest.update({k: v for k, v in status.items() if k != "id"})
                    return latest
                found.statuses.append(status)
                return status

        @app.get("/api/v4/projects/{project_id}/repository/commits/{sha}/statuses")
        def list_statuses(
            request: Request, project_id: str, sha: str, name: str | None = None
        ) -> Response:
            with double._lock:
                found = double._project(project_id)
                names = dict.fromkeys(s["name"] for s in found.statuses if s["sha"] == sha)
                latest = [_latest(found.statuses, sha, n) for n in names]
            rows = [s for s in latest if s is not None and (name is None or s["name"] == name)]
            return _page(request, rows, 1, 100)

        @app.get("/api/v4/projects/{project_id}/wikis")
        def list_wikis(request: Request, project_id: str, with_content: int = 0) -> Response:
            with double._lock:
                pages = list(double._project(project_id).wikis.values())
            rows = [
                p if with_content else {k: v for k, v in p.items() if k != "content"} for p in pages
            ]
            return _page(request, rows, 1, 100)

        @app.post("/api/v4/projects/{project_id}/wikis", status_code=201)
        async def create_wiki(request: Request, project_id: str) -> Any:
            data = await _data(request)
            title = str(data.get("title") or "")
            if not title:
                raise _ApiError(400, "400 Bad request - title is missing")
            with double._lock:
                found = double._project(project_id)
                slug = "-".join(title.split(" "))
                if slug in found.wikis:
                    raise _ApiError(400, "Duplicate page: A page with that title already exists")
                page = {
                    "slug": slug,
                    "title": title,
                    "content": str(data.get("content") or ""),
                    "format": data.get("format") or "markdown",
                    "encoding": "UTF-8",
                }
                found.wikis[slug] = page
                return page

        @app.get("/api/v4/projects/{project_id}/wikis/{slug:path}")
        def get_wiki(project_id: str, slug: str) -> Any:
            with double._lock:
                page = double._project(project_id).wikis.get(slug)
            if page is None:
                raise _ApiError(404, "404 Wiki Page Not Found")
            return page

        @app.put("/api/v4/projects/{project_id}/wikis/{slug:path}")
        async def update_wiki(request: Request, project_id: str, slug: str) -> Any:
            data = await _data(request)
            with double._lock:
                page = double._project(project_id).wikis.get(slug)
                if page is None:
                    raise _ApiError(404, "404 Wiki Page Not Found")
                for key in ("title", "content", "format"):
                    if key in data:
                        page[key] = data[key]
                return page

        # Last: this path would otherwise take /wikis/:slug for an issue.
        @app.put("/api/v4/projects/{project_id}/{kind}/{iid}")
        async def update_target(request: Request, project_id: str, kind: str, iid: str) -> Any:
            data = await _data(request)
            with double._lock:
                target = double._target(project_id, _kind(kind), iid)
                if "labels" in data:
                    labels = data["labels"]
                    if isinstance(labels, str):
                        labels = [x.strip() for x in labels.split(",") if x.strip()]
                    target.labels = list(dict.fromkeys(labels))
                return {"iid": target.iid, "project_id": int(project_id), "labels": target.labels}

        return app

    def _take_fault(self, request: Request) -> _Fault | None:
        with self._lock:
            self._faults = [f for f in self._faults if f.remaining > 0]
            for fault in self._faults:
                if fault.matches(request):
                    fault.remaining -= 1
                    return fault
        return None


def _kind(kind: str) -> str:
    if kind not in ("issues", "merge_requests"):
        raise StarletteHTTPException(404)
    return kind


def _latest(statuses: list[dict[str, Any]], sha: str, name: str) -> dict[str, Any] | None:
    mine = [s for s in statuses if s["sha"] == sha and s["name"] == name]
    return mine[-1] if mine else None


async def _data(request: Request) -> dict[str, Any]:
    """The request's parameters: a JSON body (python-gitlab) or a form."""
    if request.headers.get("content-type", "").startswith("application/json"):
        body = await request.json()
        return body if isinstance(body, dict) else {}
    return dict(await request.form())


def _page(request: Request, rows: list[Any], page: int, per_page: int) -> Response:
    """One page of ``rows`` with GitLab's pagination headers."""
    import json

    per_page = max(1, min(per_page, 100))
    total_pages = max(1, -(-len(rows) // per_page))
    chunk = rows[(page - 1) * per_page : page * per_page]
    headers = {
        "x-page": str(page),
        "x-per-page": str(per_page),
        "x-total": str(len(rows)),
        "x-total-pages": str(total_pages),
        "x-next-page": str(page + 1) if page < total_pages else "",
        "x-prev-page": str(page - 1) if page > 1 else "",
    }
    base = str(request.url.remove_query_params("page"))

    def link(n: int, rel: str) -> str:
        sep = "&" if "?" in base else "?"
        return f'<{base}{sep}{urlencode({"page": n})}>; rel="{rel}"'

    links = []
    if page < total_pages:
        links.append(link(page + 1, "next"))
    if page > 1:
        links.append(link(page - 1, "prev"))
    links += [link(1, "first"), link(total_pages, "last")]
    headers["Link"] = ", ".join(links)
    return Response(json.dumps(chunk), 200, headers=headers, media_type="application/json")
