"""SafetyFilter: commands never leave the joint limits, never step further than max_delta from the last command
sent (holds and a goal's first command included), never start from an unusable measured state; e-stop latches.

Regressions pinned:
- the joint limits win over the delta window: a measured position outside the limits never drags the
  command outside them;
- issue 15 defect 1: a measured state of -1e30 / 10.0 / stale / future-stamped at a goal's start made the first
  command jump 45x the delta limit: the filter bounds against the last command it SENT, and before the first
  refuses a measured state that is stale, in the future, non-finite or out of limits;
- with the e-stop engaged apply() holds the last command sent whatever the target, until release().
"""

import numpy as np
import pytest

from motus_ros.profiles import load_profile
from motus_ros.safety import (
    MeasuredState,
    SafetyFilter,
    physical_range,
    physical_range_problem,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=["aloha_sim", "interbotix_aloha", "agilex_aloha2"])
def profile(request):
    return load_profile(request.param)


def fresh(q, age_s: float = 0.0) -> MeasuredState:
    return MeasuredState(np.asarray(q, dtype=np.float64), age_s)


def middle(safety: SafetyFilter) -> np.ndarray:
    return (safety.lower + safety.upper) / 2


def hostile_state(rng, safety: SafetyFilter) -> MeasuredState | None:
    """A measured state a hostile or broken driver could report (or None: no joint state at all)."""
    span = safety.upper - safety.lower
    q = rng.uniform(safety.lower, safety.upper)
    kind = rng.integers(8)
    if kind == 0:
        q[rng.integers(q.size)] = rng.choice([np.nan, np.inf, -np.inf])
    elif kind == 1:
        q[rng.integers(q.size)] = rng.choice([1e30, -1e30, 10.0, -10.0])
    elif kind == 2:
        return None
    elif kind == 3:
        q = rng.uniform(safety.lower - span, safety.upper + span)
    age = float(rng.choice([0.0, 0.0, 0.01, 10.0, -30.0, -0.01, np.nan]))
    return MeasuredState(q, age)


def test_fuzzer_never_exceeds_limits_or_deltas_against_the_last_command_sent(profile):
    """Thousands of commands, holds and e-stops from hostile measured states: every command SENT is inside the
    limits and within max_delta of the previous one; nothing is sent before a usable reference exists."""
    sent: list[np.ndarray] = []
    safety = SafetyFilter(profile, send=sent.append, max_state_age_s=0.06)
    lower, upper, span = safety.lower, safety.upper, safety.upper - safety.lower
    rng = np.random.default_rng(1)
    for _ in range(3000):
        measured = hostile_state(rng, safety)
        before = len(sent)
        action = rng.integers(10)
        if action == 0:
            safety.hold(measured)
        elif action == 1:
            safety.estop() if not safety.engaged else safety.release()
        else:
            safety.apply(rng.uniform(lower - span, upper + span), measured)
        if before == 0 and sent:
            # The first command came from a usable measured state: fresh, in the future by no more than the
            # tolerance, finite, inside the limits within one delta.
            assert measured is not None and -safety.future_tolerance_s <= measured.age_s <= safety.max_state_age_s
            assert np.all(np.abs(sent[0] - measured.position) <= 2 * safety.max_delta + 1e-12)
    commands = np.stack(sent)
    assert len(commands) > 1000
    assert np.all(commands >= lower) and np.all(commands <= upper)
    assert np.all(np.abs(np.diff(commands, axis=0)) <= safety.max_delta + 1e-12), "a step exceeded the delta limit"


@pytest.mark.parametrize(
    "problem, measured",
    [
        ("no joint state", None),
        ("not finite", fresh(np.full(14, np.nan))),
        ("stale", fresh(np.zeros(14), age_s=0.5)),
        ("in the future", fresh(np.zeros(14), age_s=-30.0)),
        ("no valid stamp", fresh(np.zeros(14), age_s=float("nan"))),
    ],
)
def test_refuses_to_start_from_an_unusable_state(problem, measured):
    sent = []
    safety = SafetyFilter(load_profile("aloha_sim"), send=sent.append, max_state_age_s=0.06)
    if measured is not None and np.all(np.isfinite(measured.position)):
        measured.position[6] = measured.position[13] = 0.5
    command, clamped = safety.apply(np.zeros(14), measured)
    assert command is None and clamped and sent == []
    assert safety.hold(measured) is None and sent == []
    assert problem in safety.refusal, safety.refusal


@pytest.mark.parametrize("joint, value", [(5, -1e30), (0, 10.0)])
def test_goal_start_after_absurd_state_moves_at_most_one_delta(joint, value):
    """The measured defect: left_arm_wrist_rotate = -1e30 (or waist = 10.0) then a new goal: the first command
    jumped to the limit. Now it is bounded against the last command sent, and an absurd state never starts."""
    safety = SafetyFilter(load_profile("aloha_sim"), max_state_age_s=0.06)
    q = np.full(14, 0.3)
    first, _ = safety.apply(q, fresh(q))
    absurd = q.copy()
    absurd[joint] = value
    assert safety.state_problem(absurd), "an absurd state passed as a reference/input"
    command, _ = safety.apply(np.full(14, -3.0), fresh(absurd))  # a new goal's first command
    assert np.all(np.abs(command - first) <= safety.max_delta + 1e-12)
    # A fresh filter (no command sent yet) refuses to start from it at all.
    assert SafetyFilter(load_profile("aloha_sim")).apply(q, fresh(absurd))[0] is None


def test_small_steps_pass_unchanged(profile):
    safety = SafetyFilter(profile)
    current = middle(safety)
    safety.hold(fresh(current))
    target = current + 0.5 * safety.max_delta
    command, clamped = safety.apply(target)
    assert not clamped and np.array_equal(command, target)


def test_large_step_is_cut_to_the_delta_limit():
    safety = SafetyFilter(load_profile("aloha_sim"))
    current = np.zeros(14)
    current[6] = current[13] = 0.5
    target = current.copy()
    target[0] = 1.0  # waist +1 rad in one step
    command, clamped = safety.apply(target, fresh(current))
    assert clamped and command[0] == pytest.approx(safety.max_delta[0]) and np.array_equal(command[1:], target[1:])
    # The next command is bounded against that command, whatever the measured state says.
    command2, _ = safety.apply(target, fresh(np.full(14, 0.5)))
    assert command2[0] == pytest.approx(2 * safety.max_delta[0])


def test_position_slightly_outside_limits_is_brought_inside_not_followed():
    safety = SafetyFilter(load_profile("aloha_sim"))
    current = np.zeros(14)
    current[6] = current[13] = 0.5
    current[1] = safety.upper[1] + 0.5 * safety.max_delta[1]  # within one step beyond the limit: encoder slack
    command, clamped = safety.apply(current, fresh(current))  # "stay where you are"
    assert clamped and command[1] == safety.upper[1]
    far = current.copy()
    far[1] = safety.upper[1] + 0.5
    assert "out of limits" in SafetyFilter(load_profile("aloha_sim")).state_problem(far)


def test_hold_repeats_the_last_command_sent():
    safety = SafetyFilter(load_profile("aloha_sim"))
    q = np.full(14, 0.2)
    command, _ = safety.apply(q + 0.05, fresh(q))
    far = np.full(14, -1.0)
    assert np.array_equal(safety.hold(fresh(far)), command)  # not the measured position
    assert np.array_equal(safety.last_command, command)


def test_estop_latches_and_holds_until_released():
    safety = SafetyFilter(load_profile("aloha_sim"))
    current = np.full(14, 0.3)
    safety.estop("operator")
    assert safety.engaged and safety.estop_reason == "operator"
    for _ in range(3):  # latched: stays engaged across calls
        command, clamped = safety.apply(current + 0.05, fresh(current))
        assert clamped and np.array_equal(command, current)
    safety.release()
    assert not safety.engaged
    command, clamped = safety.apply(current + 0.05)
    assert not clamped and np.allclose(command, current + 0.05)


def test_failed_send_is_not_a_reference():
    calls = []

    def send(command):
        calls.append(command)
        if len(calls) == 2:
            raise RuntimeError("publisher gone")

    safety = SafetyFilter(load_profile("aloha_sim"), send=send)
    q = np.full(14, 0.3)
    first, _ = safety.apply(q, fresh(q))
    with pytest.raises(RuntimeError):
        safety.apply(q + 0.08)
    assert np.array_equal(safety.last_command, first)  # the unsent command never became the reference
    third, _ = safety.apply(q + 1.0)
    assert np.all(np.abs(third - first) <= safety.max_delta + 1e-12)


def test_bad_target_raises():
    safety = SafetyFilter(load_profile("aloha_sim"))
    with pytest.raises(ValueError, match=r"shape \(14,\)"):
        safety.apply(np.zeros(13), fresh(np.zeros(14)))
    bad = np.zeros(14)
    bad[2] = np.nan
    with pytest.raises(ValueError, match=r"finite.*\[2\]"):
        safety.apply(bad, fresh(np.zeros(14)))


def test_physical_range():
    profile = load_profile("aloha_sim")
    low, high = physical_range(profile)
    assert physical_range_problem(profile, (low + high) / 2) == ""
    q = np.zeros(14)
    q[0] = 1e30
    assert "physical range" in physical_range_problem(profile, q) and "left_arm_waist" in physical_range_problem(
        profile, q
    )
    q[0] = np.inf
    assert "not finite" in physical_range_problem(profile, q)
    assert "14 values" in physical_range_problem(profile, np.zeros(3))


def test_a_reconfigured_filter_keeps_the_reference():
    """The policy node hands the last command sent to the filter of its next configure: no jump after a
    lifecycle cleanup/configure, whatever the measured state says."""
    profile = load_profile("aloha_sim")
    q = np.full(14, 0.3)
    safety = SafetyFilter(profile, last_command=q)
    command, _ = safety.apply(np.full(14, -1.0), fresh(np.full(14, -1.0)))
    assert np.allclose(command, q - safety.max_delta)
