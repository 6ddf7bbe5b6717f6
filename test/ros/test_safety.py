"""SafetyFilter: commands never leave the joint limits, never step further than max_delta, e-stop latches.

Regressions pinned:
- the joint limits win over the delta window: a measured position outside the limits never drags the
  command outside them;
- with the e-stop engaged apply() holds the current position whatever the target, until release().
"""
import numpy as np
import pytest

from motus_ros.profiles import load_profile
from motus_ros.safety import SafetyFilter

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=["aloha_sim", "interbotix_aloha", "agilex_aloha2"])
def profile(request):
    return load_profile(request.param)


def test_random_fuzzing_never_exceeds_limits_or_deltas(profile):
    safety = SafetyFilter(profile)
    lower, upper = safety.lower, safety.upper
    span = upper - lower
    rng = np.random.default_rng(1)
    for _ in range(2000):
        # Positions and targets well beyond the limits on both sides.
        current = rng.uniform(lower - 0.5 * span, upper + 0.5 * span)
        target = rng.uniform(lower - span, upper + span)
        command, clamped = safety.apply(target, current)
        assert np.all(command >= lower) and np.all(command <= upper)
        inside = (current >= lower) & (current <= upper)
        # From inside the limits, no joint moves more than its delta limit.
        assert np.all(np.abs(command - current)[inside] <= safety.max_delta[inside] + 1e-12)
        assert clamped == (not np.allclose(command, target, atol=1e-12, rtol=0))


def test_small_steps_pass_unchanged(profile):
    safety = SafetyFilter(profile)
    current = (safety.lower + safety.upper) / 2
    target = current + 0.5 * safety.max_delta
    command, clamped = safety.apply(target, current)
    assert not clamped and np.array_equal(command, target)


def test_large_step_is_cut_to_the_delta_limit():
    safety = SafetyFilter(load_profile("aloha_sim"))
    current = np.zeros(14)
    current[6] = current[13] = 0.5
    target = current.copy()
    target[0] = 1.0  # waist +1 rad in one step
    command, clamped = safety.apply(target, current)
    assert clamped and command[0] == pytest.approx(safety.max_delta[0]) and np.array_equal(command[1:], target[1:])


def test_position_outside_limits_is_brought_inside_not_followed():
    safety = SafetyFilter(load_profile("aloha_sim"))
    current = np.zeros(14)
    current[1] = safety.upper[1] + 0.5  # shoulder 0.5 rad beyond its upper limit
    command, clamped = safety.apply(current, current)  # "stay where you are"
    assert clamped and command[1] == safety.upper[1]
    assert np.array_equal(safety.hold(current)[1:2], safety.upper[1:2])


def test_estop_latches_and_holds_until_released():
    safety = SafetyFilter(load_profile("aloha_sim"))
    current = np.full(14, 0.3)
    safety.estop("operator")
    assert safety.engaged and safety.estop_reason == "operator"
    for _ in range(3):  # latched: stays engaged across calls
        command, clamped = safety.apply(current + 0.05, current)
        assert clamped and np.array_equal(command, current)
    safety.release()
    assert not safety.engaged
    command, clamped = safety.apply(current + 0.05, current)
    assert not clamped and np.allclose(command, current + 0.05)


def test_bad_input_raises():
    safety = SafetyFilter(load_profile("aloha_sim"))
    with pytest.raises(ValueError, match=r"shape \(14,\)"):
        safety.apply(np.zeros(13), np.zeros(14))
    bad = np.zeros(14)
    bad[2] = np.nan
    with pytest.raises(ValueError, match=r"finite.*\[2\]"):
        safety.apply(bad, np.zeros(14))
