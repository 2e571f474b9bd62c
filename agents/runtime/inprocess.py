"""Agents served inside the calling process, one :class:`AgentRunner` thread each: for
demos and tests that want real agents on the broker without replica processes (SWARM
runs those)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from agents.runtime.agent import Agent
from agents.runtime.runner import AgentRunner
from buildkit.settings import Settings

__all__ = ["serving"]


@contextmanager
def serving(settings: Settings, agents: list[Agent], **runner_options: Any) -> Iterator[None]:
    """Serve ``agents`` for the ``with`` body; on exit each runner drains (the task in
    flight finishes, its result is sent, it deregisters) before this returns."""
    stop = threading.Event()
    threads = [
        threading.Thread(
            target=AgentRunner(settings, agent, **runner_options).run,
            args=(stop,),
            name=f"agent-{agent.name}",
            daemon=True,
        )
        for agent in agents
    ]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
