"""Point 4 of the ROE issue: SIGKILL the worker at random moments; nothing is lost or doubled."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path

from buildkit.catalog import default_catalog
from buildkit.contracts.roe import WorkflowEventKind
from buildkit.producer import TypedProducer
from buildkit.topics import apply_topics
from streams.roe.engine import RoeEngine
from tests.conftest import settings_env
from tests.roe.agents import StandInAgents
from tests.roe.test_engine import AGENTS, FEATURE, start_command

RUNS = 20


def folded(settings):
    reader = RoeEngine(settings, transactional_id=f"bar-roe-reader-{uuid.uuid4().hex[:6]}")
    try:
        reader.rebuild()
    finally:
        reader.close()
    return reader


def events_of(settings, run_ids: set[str]):
    from buildkit.replay import BrokerReplay, parse_bound
    from buildkit.serde import SerdeRegistry

    serde = SerdeRegistry(settings, default_catalog()).for_topic("bar.roe.events")
    replay = BrokerReplay(settings, "bar.roe.events", parse_bound(None), parse_bound(None))
    try:
        events = [serde.decode(r.value) for r in replay.records()]
    finally:
        replay.close()
    return [e for e in events if e.run_id in run_ids]


def test_killing_the_worker_at_random_loses_and_doubles_nothing(settings, tmp_path):
    apply_topics(settings, default_catalog())
    rng = random.Random(20261125)
    agents = StandInAgents(settings, AGENTS)
    agents.start()
    assert agents.ready.wait(20)
    env = {**settings_env(settings), "PYTHONPATH": str(Path(__file__).parents[2])}
    log = (tmp_path / "roe.log").open("ab")

    def start_worker() -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "streams.roe"], env=env, stdout=log, stderr=log
        )

    run_ids = {f"crash-{uuid.uuid4().hex[:8]}" for _ in range(RUNS)}
    worker = start_worker()
    kills = 0
    try:
        with TypedProducer(settings) as producer:
            for run_id in sorted(run_ids):
                producer.produce("bar.roe.commands", start_command(run_id), key=run_id)
                time.sleep(rng.uniform(0, 0.1))
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(0.3, 1.5))
            if kills < 6:
                worker.send_signal(signal.SIGKILL)
                worker.wait(10)
                kills += 1
                worker = start_worker()
                continue
            states = folded(settings).runs
            if all(r in states and states[r].done for r in run_ids):
                break
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            worker.kill()
        agents.halt()
        log.close()
    states = folded(settings).runs
    unfinished = [r for r in run_ids if r not in states or not states[r].done]
    assert not unfinished, (
        f"{len(unfinished)} run(s) never finished; worker log: {tmp_path / 'roe.log'}"
    )
    assert all(states[r].status.value == "SUCCEEDED" for r in run_ids)
    events = events_of(settings, run_ids)
    dispatched: dict[tuple[str, str, int], set[str]] = defaultdict(set)
    succeeded: dict[str, set[str]] = defaultdict(set)
    for event in events:
        if event.kind is WorkflowEventKind.STAGE_DISPATCHED:
            dispatched[(event.run_id, event.stage or "", event.attempt or 0)].add(
                event.task_id or ""
            )
        if event.kind is WorkflowEventKind.STAGE_SUCCEEDED:
            succeeded[event.run_id].add(event.stage or "")
    # No stage attempt was dispatched under two different task ids...
    assert all(len(ids) == 1 for ids in dispatched.values())
    # ...and no stage was lost: every stage of every run succeeded.
    stages = {s.name for s in FEATURE.stages}
    assert all(succeeded[r] == stages for r in run_ids)
    # The agents saw each task id with one content, whatever was re-sent.
    contents: dict[str, set[str]] = defaultdict(set)
    for task in agents.received:
        if task.run_id in run_ids:
            contents[task.task_id].add(task.model_dump_json(exclude={"created_at"}))
    assert all(len(c) == 1 for c in contents.values())
    assert kills == 6
    assert os.path.getsize(tmp_path / "roe.log") > 0
