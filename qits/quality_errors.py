"""Errors of the quality tools (mutation testing, security scan, coverage, gate).

Each carries a stable dotted ``code`` and a ``retryable`` flag so the agent
engine branches on codes, not on class names or message text. They derive from
the project's root :class:`buildkit.errors.BuildKitError`, so the CLI prints the
message and exits non-zero without a traceback.
"""

from __future__ import annotations

from buildkit.errors import BuildKitError


class QualityToolError(BuildKitError):
    """A quality tool could not run: a path is missing or a tool failed."""

    code = "qits.tool_failed"
    retryable = False


class PathNotFound(QualityToolError):
    """A source, tests or target path given by the user does not exist."""

    code = "qits.path_not_found"

    def __init__(self, kind: str, path: object) -> None:
        super().__init__(f'{kind} "{path}" does not exist — check the path (relative to the cwd)')


class ScannerFailed(QualityToolError):
    """bandit or detect-secrets did not produce a report."""

    code = "qits.scanner_failed"
    retryable = True


class ServerDidNotStart(QualityToolError):
    """The API server started under coverage never answered on its port."""

    code = "qits.server_did_not_start"
    retryable = True
