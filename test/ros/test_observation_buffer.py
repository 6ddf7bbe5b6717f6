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


@pytest.mark.parametrize("skip, reason", [("left_wrist", "missing camera left_wrist"), ("joint_state", "missing joint_state")])
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
    assert buffer.latest_joint_state() is None and buffer.status(10.5) == (False, "missing camera high, left_wrist, right_wrist")


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
