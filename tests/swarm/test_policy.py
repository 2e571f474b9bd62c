"""The SWARM scaling policy: the HPA formula per metric, bounds, cooldowns, no flapping."""

from __future__ import annotations

import itertools

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import streams.swarm
from streams.swarm import (
    Observation,
    ScalingDecision,
    ScalingHistory,
    ScalingPolicy,
    decide_scale,
)

DOC_EXAMPLE = {"minAgents": 2, "maxAgents": 20, "tasksPerAgent": 5}
CONFIGURE_SCALING = {
    "minReplicas": 1,
    "maxReplicas": 10,
    "targetCPU": 70,
    "targetMemory": 80,
    "scaleUpCooldown": 60,
    "scaleDownCooldown": 300,
}


def observe(
    current: int,
    at_s: float,
    lag: int | None = None,
    cpu: tuple[float, ...] = (),
    memory: tuple[float, ...] = (),
) -> Observation:
    return Observation(
        agent_type="test-generator",
        current_replicas=current,
        lag=lag,
        cpu_percent=cpu,
        memory_percent=memory,
        at_ms=round(at_s * 1000),
    )


def run(
    policy: ScalingPolicy,
    steps: list[tuple[float, dict[str, object]]],
    current: int,
) -> list[ScalingDecision]:
    """Feed observations at the given times, applying each decision before the next."""
    history = ScalingHistory()
    decisions = []
    for at_s, metrics in steps:
        decision = decide_scale(policy, observe(current, at_s, **metrics), history)
        history = history.record(decision)
        current = decision.desired
        decisions.append(decision)
    return decisions


def test_package_exports_are_pinned():
    assert sorted(streams.swarm.__all__) == [
        "MetricRecommendation",
        "Observation",
        "ScalingDecision",
        "ScalingHistory",
        "ScalingPolicy",
        "decide_scale",
    ]


def test_document_example_scales_to_twenty_then_back_to_min_after_cooldown():
    policy = ScalingPolicy.model_validate(DOC_EXAMPLE)
    steps: list[tuple[float, dict[str, object]]] = [(0, {"lag": 100})]
    steps += [(t, {"lag": 0}) for t in range(30, 601, 30)]
    decisions = run(policy, steps, current=2)

    first = decisions[0]
    assert (first.action, first.desired) == ("up", 20)
    assert first.reason.startswith("lag 100 / 5 per agent → 20; max 20, clamped to [2, 20] → 20")

    desired_at = {d.at_ms // 1000: d.desired for d in decisions}
    # Drained at 30 s, but the scale-down cooldown (300 s) and the window keep 20.
    assert all(desired_at[t] == 20 for t in range(30, 301, 30))
    assert desired_at[330] == 2
    assert all(desired_at[t] == 2 for t in range(330, 601, 30))  # never below min
    down = next(d for d in decisions if d.action == "down")
    assert "down from 20 to 2" in down.reason


def test_lag_drained_during_cooldown_explains_the_hold():
    policy = ScalingPolicy.model_validate(DOC_EXAMPLE)
    decisions = run(policy, [(0, {"lag": 100}), (60, {"lag": 0})], current=2)
    assert decisions[1].action == "hold"
    assert "scale-down to 20 held" not in decisions[1].reason
    assert "recommendation 20 within the last 300s" in decisions[1].reason


def test_cpu_follows_the_hpa_formula():
    policy = ScalingPolicy(target_cpu=70, max_replicas=10)
    decision = decide_scale(policy, observe(4, 0, cpu=(90, 90, 90, 90)), ScalingHistory())
    assert decision.desired == 6  # ceil(4 * 90 / 70)
    assert decision.action == "up"
    assert "cpu 90% of target 70% → 6" in decision.reason


def test_cpu_mean_is_over_the_reporting_replicas():
    policy = ScalingPolicy(target_cpu=50, max_replicas=10)
    decision = decide_scale(policy, observe(4, 0, cpu=(100, 50)), ScalingHistory())
    assert decision.desired == 6  # ceil(4 * 75 / 50)


def test_metric_within_tolerance_holds():
    policy = ScalingPolicy(target_cpu=70, max_replicas=10)
    decision = decide_scale(policy, observe(4, 0, cpu=(75, 75, 75, 75)), ScalingHistory())
    assert (decision.action, decision.desired) == ("hold", 4)
    assert decision.recommendations[0].within_tolerance
    assert "within 10%" in decision.reason


def test_lag_within_tolerance_holds():
    policy = ScalingPolicy(tasks_per_agent=5, max_replicas=10)
    decision = decide_scale(policy, observe(4, 0, lag=21), ScalingHistory())
    assert (decision.action, decision.desired) == ("hold", 4)


def test_the_metric_asking_for_most_replicas_wins():
    policy = ScalingPolicy(tasks_per_agent=5, target_cpu=70, max_replicas=20, min_replicas=2)
    decision = decide_scale(policy, observe(2, 0, lag=100, cpu=(35, 35)), ScalingHistory())
    assert decision.desired == 20
    assert decision.reason.startswith(
        "lag 100 / 5 per agent → 20; cpu 35% of target 70% → 1; max 20, clamped to [2, 20]"
    )
    assert {r.metric: r.replicas for r in decision.recommendations} == {"lag": 20, "cpu": 1}


def test_recommendation_is_clamped_to_max():
    policy = ScalingPolicy(tasks_per_agent=5, max_replicas=8)
    decision = decide_scale(policy, observe(2, 0, lag=1000), ScalingHistory())
    assert (decision.recommended, decision.desired) == (8, 8)
    assert "max 200, clamped to [1, 8] → 8" in decision.reason


def test_scale_up_cooldown_blocks_a_second_scale_up():
    policy = ScalingPolicy(target_cpu=50, max_replicas=20, scale_up_cooldown_s=60)
    decisions = run(
        policy,
        [(0, {"cpu": (100, 100)}), (30, {"cpu": (100,) * 4}), (60, {"cpu": (100,) * 4})],
        current=2,
    )
    assert [(d.action, d.desired) for d in decisions] == [("up", 4), ("hold", 4), ("up", 8)]
    assert "scale-up to 8 held: last scale-up 30s ago, cooldown 60s" in decisions[1].reason


def test_missing_metrics_are_ignored_with_a_reason():
    policy = ScalingPolicy(target_cpu=70, target_memory=80, tasks_per_agent=5, max_replicas=10)
    decision = decide_scale(policy, observe(3, 0, cpu=(140, 140, 140)), ScalingHistory())
    assert decision.desired == 6
    assert "lag: not measured" in decision.reason
    assert "memory: no replica reported" in decision.reason
    nothing = decide_scale(policy, observe(3, 0), ScalingHistory())
    assert (nothing.action, nothing.desired) == ("hold", 3)
    assert "no usable metric, keep 3" in nothing.reason


def test_scales_from_zero_on_lag():
    policy = ScalingPolicy(min_replicas=0, max_replicas=5, tasks_per_agent=10, target_cpu=70)
    decision = decide_scale(policy, observe(0, 0, lag=3), ScalingHistory())
    assert (decision.action, decision.desired) == ("up", 1)
    idle = decide_scale(policy, observe(0, 0, lag=0), ScalingHistory())
    assert (idle.action, idle.desired) == ("hold", 0)


def test_lag_without_a_lag_target_still_wakes_one_replica():
    policy = ScalingPolicy(min_replicas=0, max_replicas=5, target_cpu=70)
    decision = decide_scale(policy, observe(0, 0, lag=3), ScalingHistory())
    assert decision.desired == 1
    assert "at least 1 for lag with 0 replicas" in decision.reason


def test_current_outside_bounds_is_corrected_at_once():
    policy = ScalingPolicy(min_replicas=2, max_replicas=4, target_cpu=70)
    history = ScalingHistory(last_scale_up_ms=0, last_change_ms=0)
    decision = decide_scale(policy, observe(9, 1, cpu=(70,) * 9), history)
    assert (decision.action, decision.desired) == ("down", 4)


def test_oscillating_load_does_not_flap():
    policy = ScalingPolicy(
        tasks_per_agent=5, target_cpu=70, min_replicas=2, max_replicas=20, scale_up_cooldown_s=0
    )
    steps: list[tuple[float, dict[str, object]]] = [
        (t, {"lag": 100, "cpu": (90.0,)} if (t // 60) % 2 == 0 else {"lag": 0, "cpu": (10.0,)})
        for t in range(0, 600, 30)
    ]
    actions = [d.action for d in run(policy, steps, current=2)]
    assert actions[0] == "up"
    assert set(actions[1:]) == {"hold"}


def test_event_fields_carry_every_input_and_the_reason():
    policy = ScalingPolicy.model_validate(CONFIGURE_SCALING | {"tasksPerAgent": 5})
    decision = decide_scale(policy, observe(2, 5, lag=40, cpu=(80, 60)), ScalingHistory())
    fields = decision.to_event_fields()
    assert fields["agent_type"] == "test-generator"
    assert fields["at_ms"] == 5000
    assert fields["lag"] == 40 and fields["lag_is_lower_bound"] is True
    assert fields["cpu_percent"] == [80, 60] and fields["memory_percent"] == []
    assert (fields["current_replicas"], fields["desired_replicas"]) == (2, 8)
    assert fields["reason"] == decision.reason
    for name in ScalingPolicy.model_fields:
        assert name in fields
    assert [r["metric"] for r in fields["recommendations"]] == ["lag", "cpu", "memory"]


def test_configure_scaling_example_parses():
    policy = ScalingPolicy.model_validate(CONFIGURE_SCALING)
    assert policy == ScalingPolicy(
        min_replicas=1,
        max_replicas=10,
        target_cpu=70,
        target_memory=80,
        scale_up_cooldown_s=60,
        scale_down_cooldown_s=300,
    )
    assert policy.tolerance == 0.1


def test_min_above_max_is_rejected_naming_both_fields():
    with pytest.raises(pydantic.ValidationError, match=r"minReplicas \(5\).*maxReplicas \(3\)"):
        ScalingPolicy.model_validate({"minReplicas": 5, "maxReplicas": 3, "targetCPU": 70})


def test_policy_without_any_target_is_rejected():
    with pytest.raises(pydantic.ValidationError, match="targetCPU, targetMemory, tasksPerAgent"):
        ScalingPolicy.model_validate({"minReplicas": 1, "maxReplicas": 3})


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"maxReplicas": 0, "targetCPU": 70}, "maxReplicas"),
        ({"minReplicas": -1, "targetCPU": 70}, "minReplicas"),
        ({"targetCPU": 0}, "targetCPU"),
        ({"tasksPerAgent": 0}, "tasksPerAgent"),
        ({"targetCPU": 70, "scaleUpCoolDown": 60}, "scaleUpCoolDown"),
    ],
)
def test_invalid_values_name_the_field(config: dict[str, object], field: str):
    with pytest.raises(pydantic.ValidationError, match=field):
        ScalingPolicy.model_validate(config)


def test_policy_is_immutable():
    policy = ScalingPolicy(target_cpu=70)
    with pytest.raises(pydantic.ValidationError):
        policy.min_replicas = 3


step = st.tuples(
    st.integers(min_value=1, max_value=120),  # seconds since the previous observation
    st.one_of(st.sampled_from([0, 5, 100, 300]), st.integers(min_value=0, max_value=300)),  # lag
    st.one_of(  # cpu per replica; often absent, so lag alone drives some runs
        st.just([]), st.lists(st.floats(min_value=0, max_value=200), max_size=6)
    ),
)


@settings(max_examples=300, deadline=None)
@given(
    bounds=st.tuples(st.integers(0, 5), st.integers(1, 30)).filter(lambda b: b[0] <= b[1]),
    tasks_per_agent=st.integers(1, 10),
    up_cooldown=st.integers(0, 300),
    down_cooldown=st.integers(0, 600),
    window=st.integers(0, 600),
    start=st.integers(0, 40),
    steps=st.lists(step, min_size=1, max_size=60),
)
def test_random_load_never_changes_direction_twice_within_a_window(
    bounds: tuple[int, int],
    tasks_per_agent: int,
    up_cooldown: int,
    down_cooldown: int,
    window: int,
    start: int,
    steps: list[tuple[int, int, list[float]]],
):
    policy = ScalingPolicy(
        min_replicas=bounds[0],
        max_replicas=bounds[1],
        tasks_per_agent=tasks_per_agent,
        target_cpu=70,
        scale_up_cooldown_s=up_cooldown,
        scale_down_cooldown_s=down_cooldown,
        stabilization_window_s=window,
    )
    history, current, at_s = ScalingHistory(), start, 0
    changes: list[tuple[int, str]] = []
    for gap, lag, cpu in steps:
        at_s += gap
        decision = decide_scale(policy, observe(current, at_s, lag=lag, cpu=tuple(cpu)), history)
        assert policy.min_replicas <= decision.desired <= policy.max_replicas
        if decision.action != "hold":
            changes.append((at_s, decision.action))
        history, current = history.record(decision), decision.desired

    # A flip is two consecutive changes in opposite directions: (start, end) times.
    flips = [(a[0], b[0], b[1]) for a, b in itertools.pairwise(changes) if a[1] != b[1]]
    for start, end, to in flips:
        if to == "down":  # the stabilization window forbids a scale-down soon after a scale-up
            assert end - start > window, (changes, window)
    for first, second in itertools.pairwise(flips):
        # So no window holds two flips: two flips include an up followed by a down.
        assert second[1] - first[0] > window, (changes, window)


def test_every_decision_becomes_an_event_that_round_trips_through_avro():
    from buildkit.contracts import Codec, ScalingDecisionEvent
    from streams.swarm.events import decision_event
    from streams.swarm.policy import Observation, ScalingHistory, ScalingPolicy, decide_scale

    policy = ScalingPolicy.model_validate(
        {"minAgents": 2, "maxAgents": 20, "tasksPerAgent": 5, "targetCPU": 70}
    )
    observation = Observation(
        agent_type="test-generator",
        current_replicas=2,
        lag=100,
        cpu_percent=(40.0, 30.0),
        at_ms=1_795_600_000_000,
    )
    decision = decide_scale(policy, observation, ScalingHistory())
    event = decision_event(decision)
    assert (event.action.value, event.current_replicas, event.desired_replicas) == ("UP", 2, 20)
    assert event.lag == 100 and event.cpu_percent == [40.0, 30.0] and event.tasks_per_agent == 5
    assert event.reason == decision.reason and "lag 100 / 5 per agent → 20" in event.reason
    assert {r.metric.value for r in event.recommendations} == {"LAG", "CPU"}
    codec = Codec.for_model(ScalingDecisionEvent)
    assert codec.decode(codec.encode(event)) == event
