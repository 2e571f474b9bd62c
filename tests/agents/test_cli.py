"""``buildkit agents list | describe`` through the real console script."""

from __future__ import annotations


def test_list_shows_every_manifest_and_describe_one(cli):
    listed = cli("agents", "list")
    assert listed.returncode == 0, listed.stderr
    for name in ("tdd-enforcer", "metrics-collector", "quality-gate-enforcer"):
        assert name in listed.stdout
    described = cli("agents", "describe", "performance-monitor")
    assert described.returncode == 0, described.stderr
    assert "bar-agent-performance-monitor" in described.stdout
    assert "threshold       p99: 1000 ms" in described.stdout


def test_unknown_agent_suggests_the_closest_name(cli):
    done = cli("agents", "describe", "perf-monitor")
    assert done.returncode == 1
    assert "did you mean performance-monitor" in done.stderr
    assert "Traceback" not in done.stderr
