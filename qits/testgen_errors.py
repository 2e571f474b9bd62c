"""Errors of test generation from OpenAPI documents.

Only a document that cannot be read as OpenAPI 3.x at all is an error; a part of
a readable document that the generator cannot handle is *reported* per operation
(see :mod:`qits.testgen`), never raised. Each error carries a stable dotted
``code`` and a ``retryable`` flag, like the other QITS errors.
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
