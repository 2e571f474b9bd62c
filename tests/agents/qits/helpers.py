"""Running QITS agents as the workflow engine dispatches them, in-process."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from agents.runtime.agent import Agent
from agents.runtime.testing import AgentTestContext
from buildkit.contracts.events import AgentResult

SPECS = Path(__file__).parent.parent.parent / "qits" / "specs"
PETSTORE = SPECS / "petstore-3.0.yaml"
USERS = SPECS / "users-3.1.yaml"


def dispatch(
    agent: Agent,
    stage: str,
    *,
    inputs: dict[str, str] | None = None,
    workflow_inputs: dict[str, Any] | None = None,
    run_id: str = "run-1",
    **params: Any,
) -> tuple[AgentResult, AgentTestContext]:
    """Run one task the way ROE's ``_dispatch`` shapes it; its result and test context."""
    parameters = {
        "run_id": run_id,
        "workflow_id": "feature-workflow",
        "stage": stage,
        "workflow_inputs": workflow_inputs or {},
        "outputs": [],
        **params,
    }
    ctx = AgentTestContext(agent)
    result = asyncio.run(
        ctx.run(
            parameters_json=json.dumps(parameters),
            inputs=inputs or {},
            run_id=run_id,
            stage=stage,
        )
    )
    return result, ctx


def issue_event(description: str, *, project_id: int = 7, iid: int = 12) -> dict[str, str]:
    """Workflow inputs of a run a GitLab ``issue`` webhook started (see roe.triggers)."""
    body = {
        "object_kind": "issue",
        "project": {"id": project_id, "path_with_namespace": "team/app"},
        "object_attributes": {"iid": iid, "title": "Pets API", "description": description},
    }
    return {
        "gitlab.kind": "issue",
        "gitlab.project_id": str(project_id),
        "gitlab.object_iid": str(iid),
        "gitlab.event": json.dumps(body),
    }
