"""Reading a task's ``parameters_json`` strictly, for agents whose input is a model:
every problem becomes an :class:`~agents.runtime.agent.AgentFault` with the agent's own
``bad_input`` code and a message naming the field, never an unhandled exception."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from agents.runtime.agent import AgentFault
from buildkit.contracts.events import AgentTask

__all__ = ["json_object", "task_parameters", "validated"]

M = TypeVar("M", bound=BaseModel)


def task_parameters(task: AgentTask, code: str) -> dict[str, Any]:
    """``task.parameters_json`` as a dict; fault ``code`` when it is not a JSON object."""
    try:
        params = json.loads(task.parameters_json or "{}")
    except ValueError as exc:
        raise AgentFault(code, f"parameters_json is not JSON: {exc}") from exc
    if not isinstance(params, dict):
        raise AgentFault(
            code, f"parameters_json must be a JSON object, got {type(params).__name__}"
        )
    return params


def json_object(raw: Any, name: str, code: str) -> dict[str, Any] | None:
    """``raw`` (a JSON text or an already parsed value) as a dict, ``None`` if absent;
    fault ``code`` naming ``name`` when it is not a JSON object."""
    if raw is None:
        return None
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise AgentFault(code, f'"{name}" is not JSON: {exc}') from exc
    if not isinstance(raw, dict):
        raise AgentFault(code, f'"{name}" must be a JSON object, got {type(raw).__name__}')
    return raw


def validated(model: type[M], fields: dict[str, Any], code: str) -> M:
    """``model`` from ``fields``; fault ``code`` listing each field pydantic refused."""
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(
            f'"{".".join(str(p) for p in e["loc"])}": {e["msg"]}' for e in exc.errors()
        )
        raise AgentFault(code, f"parameter {problems}") from exc
