"""ObservationBuffer: keep-latest, and missing / stale / skewed observations rejected with the reason.

The fallback always runs; the message_filters variant runs too where message_filters imports.
"""

import numpy as np
import pytest

from motus_ros.observation_buffer import (
    ObservationBuffer,
    SynchronizedObservationBuffer,
    make_observation_buffer,
    message_filters_available,
)

pytestmark = pytest.mark.timeout(60)

ROLES = ["high", "left_wrist", "right_wrist"]
VARIANTS = [ObservationBuffer] + ([SynchronizedObservationBuffer] if message_filters_available() else [])


def image(value: int) -> np.ndarray:
    return np.full((4, 5, 3), value, np.uint8)


def fill(buffer, stamp: float, value: int = 1, skip: str | None = None) -> None:
    for role in ROLES:
        if role != skip:
            buffer.update_image(role, image(value), stamp)
    if skip != "joint_state":
        buffer.update_joint_state(np.full(14, float(value)), stamp)


@pytest.fixture(params=VARIANTS, ids=lambda cls: cls.__name__)
def buffer(request):
    return request.param(ROLES, max_skew_s=0.1, max_age_s=0.5)


def test_complete_fresh_observation_is_returned(buffer):
    fill(buffer, 10.0)
    assert buffer.status(10.2) == (True, "ok")
    observation = buffer.latest(10.2)
    assert observation is not None and sorted(observation.images) == sorted(ROLES)
    assert observation.stamp_s == 10.0 and np.array_equal(observation.state, np.ones(14))


@pytest.mark.parametrize(
    "skip, reason", [("left_wrist", "missing camera left_wrist"), ("joint_state", "missing joint_state")]
)
def test_missing_source_rejected_with_reason(buffer, skip, reason):
    fill(buffer, 10.0, skip=skip)
    assert buffer.status(10.0) == (False, reason)
    assert buffer.latest(10.0) is None


def test_stale_observation_rejected(buffer):
    fill(buffer, 10.0)
    ok, reason = buffer.status(10.6)
    assert not ok and reason.startswith("stale") and "0.600 s old" in reason
    assert buffer.latest(10.6) is None


def test_skewed_observation_rejected(buffer):
    fill(buffer, 10.0)
    buffer.update_image("high", image(2), 10.3)  # one camera 0.3 s ahead of the others
    assert buffer.status(10.3) == (False, "skew: 0.300 s between left_wrist and high (max_skew_s 0.1)")
    assert buffer.latest(10.3) is None


def test_keep_latest_never_a_backlog():
    buffer = ObservationBuffer(ROLES, max_skew_s=0.1, max_age_s=0.5)
    for k in range(50):  # a burst of frames: only the newest of each source survives
        fill(buffer, 10.0 + 0.01 * k, value=k)
    observation = buffer.latest(10.5)
    assert observation.stamp_s == pytest.approx(10.49)
    assert all(int(im[0, 0, 0]) == 49 for im in observation.images.values()) and observation.state[0] == 49
    assert buffer.latest_joint_state()[0] == 49
    buffer.clear()
    assert buffer.latest_joint_state() is None and buffer.status(10.5) == (
        False,
        "missing camera high, left_wrist, right_wrist",
    )


def test_bad_inputs_raise():
    buffer = ObservationBuffer(ROLES, 0.1, 0.5)
    with pytest.raises(ValueError, match="unknown camera role 'belly'"):
        buffer.update_image("belly", image(0), 0.0)
    with pytest.raises(ValueError, match="finite"):
        buffer.update_joint_state(np.array([np.nan]), 0.0)
    with pytest.raises(ValueError, match="> 0"):
        ObservationBuffer(ROLES, 0.0, 0.5)


def test_factory_picks_the_variant_by_availability():
    chosen = make_observation_buffer(ROLES, 0.1, 0.5)
    expected = SynchronizedObservationBuffer if message_filters_available() else ObservationBuffer
    assert type(chosen) is expected
    assert type(make_observation_buffer(ROLES, 0.1, 0.5, use_message_filters=False)) is ObservationBuffer


# --- issue 15: future stamps and the joint state's own staleness bound (simulated clock: plain seconds) ---------

CONTROL_PERIOD_S = 0.02  # 50 Hz


@pytest.fixture(params=VARIANTS, ids=lambda cls: cls.__name__)
def control_buffer(request):
    """Cameras may be 0.5 s old; the joint state at most 3 control periods."""
    return request.param(
        ROLES, max_skew_s=0.5, max_age_s=0.5, max_state_age_s=3 * CONTROL_PERIOD_S, future_tolerance_s=0.05
    )


def test_joint_state_loss_holds_within_three_control_periods(control_buffer):
    """Cameras and joint states flow, then the driver dies (joint states stop; cameras keep coming): the control
    ticks after the last joint state see a usable observation for at most 3 periods, never the cameras' 0.5 s."""
    tick, usable_after_loss = 0, 0
    for tick in range(50):  # driver alive: every tick fresh
        now = 10.0 + tick * CONTROL_PERIOD_S
        fill(control_buffer, now)
        assert control_buffer.status(now)[0], control_buffer.status(now)
    last_joint_state = 10.0 + tick * CONTROL_PERIOD_S
    for k in range(1, 30):  # the driver is gone; the cameras keep publishing
        now = last_joint_state + k * CONTROL_PERIOD_S + 1e-4  # ticks land just after the period boundaries
        for role in ROLES:
            control_buffer.update_image(role, image(1), now)
        ok, reason = control_buffer.status(now)
        if ok:
            usable_after_loss += 1
        else:
            assert "stale: joint_state" in reason, reason
    assert usable_after_loss <= 3, f"{usable_after_loss} control ticks moved on a lost driver's last joint state"
    assert usable_after_loss >= 2  # and the bound is not tighter than asked (no spurious holds at 50 Hz)


def test_future_stamp_is_refused_on_arrival_and_in_status(control_buffer):
    fill(control_buffer, 10.0)
    # A robot stamping 30 s ahead: refused when it arrives (received_s = the arrival time) ...
    with pytest.raises(ValueError, match=r"30\.000 s in the future"):
        control_buffer.update_joint_state(np.full(14, 2.0), 40.0, received_s=10.0)
    with pytest.raises(ValueError, match="in the future"):
        control_buffer.update_image("high", image(2), 40.0, received_s=10.0)
    assert control_buffer.latest_joint_state()[0] == 1.0  # the older sample stays, and ages: hold soon
    ok, reason = control_buffer.status(10.5)
    assert not ok and "stale" in reason
    # ... and a future stamp that got in without an arrival time never counts as fresh.
    control_buffer.update_joint_state(np.full(14, 3.0), 40.0)
    ok, reason = control_buffer.status(10.02)
    assert not ok and reason.startswith("future: joint_state is stamped 29.980 s ahead"), reason
    assert control_buffer.latest(10.02) is None
    # Within the tolerance (clock skew between machines) it is accepted.
    control_buffer.update_joint_state(np.full(14, 4.0), 10.53, received_s=10.5)
    fill(control_buffer, 10.5)
    control_buffer.update_joint_state(np.full(14, 4.0), 10.53, received_s=10.5)
    assert control_buffer.status(10.5) == (True, "ok")


def test_non_finite_stamp_is_refused(control_buffer):
    with pytest.raises(ValueError, match="stamp must be finite"):
        control_buffer.update_joint_state(np.zeros(14), float("nan"), received_s=10.0)
