"""Optional LLM enrichment of generated tests through an OpenAI-compatible endpoint.

Off unless ``BAR_LLM_URL`` is set (the CLI reads :class:`LlmSettings`; library
code takes an :class:`LlmEnricher`). For each operation with a JSON request
body it asks ``POST {url}/v1/chat/completions`` for extra request bodies — some
valid, some violating the schema — and keeps only what jsonschema confirms:
suggested valid bodies must validate against the request schema, suggested
invalid ones must not. The model proposes, the schema decides, so a wrong
suggestion can never become a wrong assertion.

Every call is traced as an :class:`LlmCall` (model, prompt and completion
tokens from the response's ``usage``, duration, outcome), logged and returned
in :class:`~qits.testgen.GeneratedTests.llm_calls`.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

import httpx
import jsonschema
from pydantic import BaseModel, ConfigDict, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from qits.testgen_plan import OperationPlan

log = logging.getLogger(__name__)

_PROMPT = (
    "You write test data for an HTTP API. Operation: {what}. Its JSON request body must "
    "match this JSON Schema (draft 2020-12):\n{schema}\nA valid example:\n{example}\n"
    'Answer with one JSON object only: {{"valid": [up to {n} more bodies that match the '
    'schema, covering edge cases], "invalid": [up to {n} bodies that violate it, each in '
    "one way]}}."
)


class LlmSettings(BaseSettings):
    """Where the OpenAI-compatible endpoint is, from ``BAR_LLM_*``."""

    model_config = SettingsConfigDict(env_prefix="BAR_LLM_", extra="forbid", frozen=True)

    url: str | None = None
    model: str = "gpt-4o-mini"
    api_key: SecretStr | None = None
    timeout_s: float = 60.0
    max_suggestions: int = 3


class LlmCall(BaseModel):
    """The trace of one chat-completion call."""

    model_config = ConfigDict(frozen=True)

    operation: str
    model: str
    prompt_tokens: int | None
    completion_tokens: int | None
    duration_ms: int
    outcome: str
    """``ok``, or what went wrong (the generation goes on without the suggestions)."""


class LlmEnricher:
    """Asks the endpoint for extra request bodies and records each call."""

    def __init__(self, settings: LlmSettings, client: httpx.Client | None = None) -> None:
        if not settings.url:
            raise ValueError("LlmEnricher needs settings.url (BAR_LLM_URL)")
        self.settings = settings
        headers = {}
        if settings.api_key is not None:
            headers["Authorization"] = f"Bearer {settings.api_key.get_secret_value()}"
        self.client = client or httpx.Client(
            base_url=settings.url, timeout=settings.timeout_s, headers=headers
        )

    def enrich(self, plan: OperationPlan) -> list[LlmCall]:
        """Add checked suggestions to ``plan``; return the trace of the call made (if any)."""
        if plan.body_kind != "json" or not plan.request_schema or not plan.generate_success:
            return []
        prompt = _PROMPT.format(
            what=f"{plan.method.upper()} {plan.path}",
            schema=json.dumps(plan.request_schema, sort_keys=True),
            example=json.dumps(plan.body, sort_keys=True),
            n=self.settings.max_suggestions,
        )
        started = time.monotonic()
        usage: dict[str, Any] = {}
        outcome = "ok"
        try:
            response = self.client.post(
                "/v1/chat/completions",
                json={
                    "model": self.settings.model,
                    "temperature": 0,
                    "messages": [{"role": "user", "content": prompt}],
                },
            )
            response.raise_for_status()
            answer = response.json()
            usage = answer.get("usage") or {}
            content = answer["choices"][0]["message"]["content"]
            self._accept(plan, _json_object(content))
        except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
            outcome = f"{type(exc).__name__}: {exc}"
            plan.notes.append(f"LLM enrichment failed: {outcome}")
        call = LlmCall(
            operation=plan.label,
            model=self.settings.model,
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
            duration_ms=round((time.monotonic() - started) * 1000),
            outcome=outcome,
        )
        log.info(
            "llm call for %s: model=%s prompt_tokens=%s completion_tokens=%s duration_ms=%d %s",
            call.operation,
            call.model,
            call.prompt_tokens,
            call.completion_tokens,
            call.duration_ms,
            call.outcome,
        )
        return [call]

    def _accept(self, plan: OperationPlan, answer: dict[str, Any]) -> None:
        assert plan.request_schema is not None
        validator = jsonschema.Draft202012Validator(plan.request_schema)
        limit = self.settings.max_suggestions
        valid = [b for b in _list(answer.get("valid")) if validator.is_valid(b)]
        invalid = [
            b
            for b in _list(answer.get("invalid"))
            if isinstance(b, dict) and not validator.is_valid(b)
        ]
        dropped = len(_list(answer.get("valid"))) - len(valid)
        dropped += len(_list(answer.get("invalid"))) - len(invalid)
        if dropped:
            plan.notes.append(f"LLM suggestions dropped after schema check: {dropped}")
        plan.suggested_valid = valid[:limit]
        plan.suggested_invalid = invalid[:limit]


def _json_object(content: str) -> dict[str, Any]:
    """The JSON object in a completion, tolerating a fenced code block around it."""
    text = content.strip()
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        text = text.rsplit("```", 1)[0]
    loaded = json.loads(text)
    if not isinstance(loaded, dict):
        raise ValueError("the completion is not a JSON object")
    return loaded


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
