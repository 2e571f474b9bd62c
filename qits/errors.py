"""Errors of QITS: reading OpenAPI documents, the LLM endpoint, and the quality tools.

Only a document that cannot be read as OpenAPI 3.x at all is an error; a part of
a readable document that the generator or the builder cannot handle is *reported*
per operation, never raised. Each error carries a stable dotted ``code`` and a
``retryable`` flag so the agent engine branches on codes, not on class names or
message text. They derive from the project's root
:class:`buildkit.errors.BuildKitError`, so the CLI prints the message and exits
non-zero without a traceback.
"""

from __future__ import annotations

from buildkit.errors import BuildKitError


class SpecError(BuildKitError):
    """The document is missing, not JSON/YAML, or not OpenAPI 3.0/3.1."""

    code = "qits.spec_invalid"
    retryable = False


class LlmError(BuildKitError):
    """The OpenAI-compatible endpoint did not answer or answered nonsense."""

    code = "qits.llm_failed"
    retryable = True


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
