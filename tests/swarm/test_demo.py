"""``buildkit swarm demo`` (the last step of ``make demo``) runs and tells the truth."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.stack


@pytest.mark.timeout(240)
def test_swarm_demo_scales_up_answers_every_task_once_and_scales_back(cli):
    done = cli(
        "swarm",
        "demo",
        "--tasks",
        "30",
        "--work-s",
        "0.5",
        "--scale-down-cooldown",
        "4",
        timeout=200,
    )

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "30/30 tasks answered, 0 duplicate result(s), 0 failed" in done.stdout
    assert "peak 6 replicas" in done.stdout  # 30 tasks / 5 per agent
    assert "back to 2" in done.stdout
