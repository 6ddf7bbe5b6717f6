"""Conversions: image encodings (rgb8, bgr8, rgba8, bgra8, mono8, row padding), wrong sizes, joint states, trajectories,
observations."""

import numpy as np
import pytest
from sensor_msgs.msg import Image, JointState

from motus_msgs.msg import Observation
from motus_ros import conversions
from motus_ros.conversions import (
    actions_to_trajectory,
    image_to_numpy,
    image_to_numpy_fallback,
    joint_state_to_vector,
    numpy_to_image,
    observation_to_inputs,
    profile_joint_state_to_model,
    profile_joint_state_to_vector,
    stamp_to_seconds,
    trajectory_to_actions,
    vector_to_joint_state,
)
from motus_ros.profiles import load_profile

pytestmark = pytest.mark.timeout(60)

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)


def test_rgb8_round_trip_and_stamp():
    msg = numpy_to_image(RGB, 12.5, "cam")
    assert (msg.height, msg.width, msg.step, msg.encoding) == (6, 8, 24, "rgb8")
    assert stamp_to_seconds(msg.header.stamp) == pytest.approx(12.5) and msg.header.frame_id == "cam"
    out = image_to_numpy(msg, expected_encoding="rgb8", expected_shape=(6, 8), use_cv_bridge=False)
    assert out.dtype == np.uint8 and np.array_equal(out, RGB)


def test_bgr8_bytes_are_reversed_on_the_wire_and_converted_back_to_rgb():
    msg = numpy_to_image(RGB, 0.0, encoding="bgr8")
    wire = np.frombuffer(bytes(msg.data), np.uint8).reshape(6, 8, 3)
    assert np.array_equal(wire, RGB[..., ::-1])  # the wire really is BGR
    assert np.array_equal(image_to_numpy(msg, use_cv_bridge=False), RGB)
    # A hand-built BGR message: a pure blue pixel in BGR is (255, 0, 0) on the wire, (0, 0, 255) in RGB.
    blue = Image(height=1, width=1, encoding="bgr8", step=3, data=bytes([255, 0, 0]))
    assert image_to_numpy(blue, use_cv_bridge=False).tolist() == [[[0, 0, 255]]]


def test_mono8_becomes_three_equal_channels():
    gray = RNG.integers(0, 256, size=(4, 5), dtype=np.uint8)
    out = image_to_numpy(numpy_to_image(gray, 0.0, encoding="mono8"), use_cv_bridge=False)
    assert out.shape == (4, 5, 3) and all(np.array_equal(out[..., c], gray) for c in range(3))


def test_rgba8_and_bgra8_are_served_as_training_decodes_them():
    # A hand-built 1x2 image: red and blue pixels, alpha 7 (dropped).
    rgba = Image(height=1, width=2, encoding="rgba8", step=8, data=bytes([255, 0, 0, 7, 0, 0, 255, 7]))
    bgra = Image(height=1, width=2, encoding="bgra8", step=8, data=bytes([0, 0, 255, 7, 255, 0, 0, 7]))
    for msg in (rgba, bgra):
        assert image_to_numpy(msg, expected_encoding=msg.encoding).tolist() == [[[255, 0, 0], [0, 0, 255]]]
        assert np.array_equal(image_to_numpy(numpy_to_image(RGB, 0.0, encoding=msg.encoding)), RGB)
    # The same bytes through the bag converter's path decode to the same array.
    from motus_model.data.bag_converter import image_message_to_rgb

    assert np.array_equal(image_message_to_rgb(bgra), image_to_numpy(bgra))


def test_row_padding_is_dropped():
    padded = np.zeros((6, 8 * 3 + 4), np.uint8)
    padded[:, :24] = RGB.reshape(6, 24)
    padded[:, 24:] = 99  # garbage in the padding
    msg = Image(height=6, width=8, encoding="rgb8", step=28, data=padded.tobytes())
    assert np.array_equal(image_to_numpy(msg, use_cv_bridge=False), RGB)


def test_wrong_encoding_and_sizes_are_rejected_with_expected_vs_got():
    msg = numpy_to_image(RGB, 0.0)
    with pytest.raises(ValueError, match="expected 'bgr8', got 'rgb8'"):
        image_to_numpy(msg, expected_encoding="bgr8")
    with pytest.raises(ValueError, match="expected 480x640, got 6x8"):
        image_to_numpy(msg, expected_shape=(480, 640))
    with pytest.raises(ValueError, match="must be one of"):
        image_to_numpy(Image(height=1, width=1, encoding="yuv422", step=2, data=bytes(2)))
    short = Image(height=6, width=8, encoding="rgb8", step=24, data=bytes(24 * 5))
    with pytest.raises(ValueError, match="144 bytes .* got 120"):
        image_to_numpy(short)
    with pytest.raises(ValueError, match="step must be >= width"):
        image_to_numpy(Image(height=1, width=8, encoding="rgb8", step=8, data=bytes(8)))
    with pytest.raises(ValueError, match=r"RGB array \[H, W, 3\]"):
        numpy_to_image(np.zeros((4, 4), np.uint8), 0.0)
    with pytest.raises(ValueError, match="uint8"):
        numpy_to_image(np.zeros((4, 4, 3), np.float32), 0.0)


@pytest.mark.skipif(
    conversions._cv_bridge() is None, reason="cv_bridge is not installed (it comes with a full ROS 2 install)"
)
def test_cv_bridge_and_numpy_paths_agree():
    for encoding in ("rgb8", "bgr8", "mono8"):
        array = RGB[..., 0] if encoding == "mono8" else RGB
        msg = numpy_to_image(array, 0.0, encoding=encoding)
        assert np.array_equal(image_to_numpy(msg, use_cv_bridge=True), image_to_numpy_fallback(msg))


def test_joint_state_reordered_by_name_and_extra_names_ignored():
    msg = JointState(name=["b", "finger", "a"], position=[2.0, 9.0, 1.0])
    assert joint_state_to_vector(msg, ["a", "b"]).tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match=r"unknown joint names \['finger'\]"):
        joint_state_to_vector(msg, ["a", "b"], allow_extra=False)


def test_joint_state_missing_nan_and_duplicates_rejected():
    with pytest.raises(ValueError, match=r"missing joints \['c'\]"):
        joint_state_to_vector(JointState(name=["a", "b"], position=[1.0, 2.0]), ["a", "c"])
    with pytest.raises(ValueError, match=r"NaN/inf for \['b'\]"):
        joint_state_to_vector(JointState(name=["a", "b"], position=[1.0, float("nan")]), ["a", "b"])
    with pytest.raises(ValueError, match="one position per name"):
        joint_state_to_vector(JointState(name=["a", "b"], position=[1.0]), ["a"])
    left = JointState(name=["waist"], position=[1.0])
    right = JointState(name=["waist"], position=[2.0])
    with pytest.raises(ValueError, match="more than one JointState"):
        joint_state_to_vector([left, right], ["waist"])
    both = joint_state_to_vector([left, right], ["l/waist", "r/waist"], prefixes=["l/", "r/"])
    assert both.tolist() == [1.0, 2.0]


def test_per_arm_driver_messages_to_model_space():
    profile = load_profile("interbotix_aloha")
    names = [
        "waist",
        "shoulder",
        "elbow",
        "forearm_roll",
        "wrist_angle",
        "wrist_rotate",
        "gripper",
        "left_finger",
        "right_finger",
    ]
    left = JointState(name=names, position=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 1.6214, 0.05, -0.05])
    right = JointState(name=names, position=[-0.1, -0.2, -0.3, -0.4, -0.5, -0.6, 0.6197, 0.02, -0.02])
    robot = profile_joint_state_to_vector([left, right], profile)
    assert robot[6] == pytest.approx(1.6214) and robot[7] == pytest.approx(-0.1)  # robot units, per-arm prefixes
    with pytest.raises(ValueError, match="more than one JointState"):  # without the prefixes the arms collide
        joint_state_to_vector([left, right], profile.joint_names)
    state = profile_joint_state_to_model([left, right], profile)
    np.testing.assert_allclose(
        state, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 1.0, -0.1, -0.2, -0.3, -0.4, -0.5, -0.6, 0.0], atol=1e-12
    )


def test_trajectory_round_trip_timing_and_reordering():
    names = [f"j{i}" for i in range(14)]
    actions = RNG.normal(size=(5, 14))
    traj = actions_to_trajectory(actions, names, dt=0.02, stamp=3.0)
    assert len(traj.points) == 5 and traj.joint_names == names
    times = [p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in traj.points]
    np.testing.assert_allclose(times, [0.02, 0.04, 0.06, 0.08, 0.10])
    np.testing.assert_array_equal(trajectory_to_actions(traj, names), actions)
    reversed_names = names[::-1]
    np.testing.assert_array_equal(trajectory_to_actions(traj, reversed_names), actions[:, ::-1])
    with pytest.raises(ValueError, match=r"missing joints \['x'\]"):
        trajectory_to_actions(traj, names[:13] + ["x"])
    with pytest.raises(ValueError, match=r"shape \[N, 14\]"):
        actions_to_trajectory(actions[:, :3], names, 0.02, 0.0)
    with pytest.raises(ValueError, match="finite"):
        actions_to_trajectory(np.full((1, 14), np.nan), names, 0.02, 0.0)


def _observation(profile, images=True, state=None, names=None):
    msg = Observation()
    if images:
        msg.camera_names = profile.camera_roles
        msg.images = [numpy_to_image(RGB, 1.0, encoding="bgr8" if i == 1 else "rgb8") for i in range(3)]
    if state is not None:
        msg.joint_state = vector_to_joint_state(state, names or profile.joint_names, 1.0)
    return msg


def test_observation_to_inputs_converts_images_and_keeps_state_in_robot_units():
    profile = load_profile("interbotix_aloha")
    robot_state = np.zeros(14)
    robot_state[6] = 1.6214  # left gripper open
    robot_state[13] = 0.6197  # right gripper closed
    images, state = observation_to_inputs(_observation(profile, state=robot_state), profile)
    assert sorted(images) == sorted(profile.camera_roles)
    assert all(np.array_equal(image, RGB) for image in images.values())  # bgr8 camera converted too
    np.testing.assert_array_equal(state, robot_state)  # robot units: the caller maps with robot_to_model
    reordered = _observation(profile, state=robot_state[::-1], names=profile.joint_names[::-1])
    np.testing.assert_array_equal(observation_to_inputs(reordered, profile)[1], robot_state)
    # Unnamed positions in profile order work as well.
    unnamed = _observation(profile, state=robot_state)
    unnamed.joint_state.name = []
    np.testing.assert_allclose(observation_to_inputs(unnamed, profile)[1], state)
    # Empty observation: "use the latest".
    assert observation_to_inputs(Observation(), profile) == ({}, None)


def test_observation_to_inputs_rejects_bad_requests():
    profile = load_profile("aloha_sim")
    bad_role = _observation(profile, state=np.zeros(14))
    bad_role.camera_names = ["high", "left_wrist", "belly"]
    with pytest.raises(ValueError, match="unknown camera 'belly'"):
        observation_to_inputs(bad_role, profile)
    missing = _observation(profile, state=np.zeros(14))
    missing.camera_names, missing.images = missing.camera_names[:2], missing.images[:2]
    with pytest.raises(ValueError, match=r"missing cameras \['right_wrist'\]"):
        observation_to_inputs(missing, profile)
    with pytest.raises(ValueError, match="no joint state"):
        observation_to_inputs(_observation(profile), profile)
    unknown = _observation(profile, state=np.zeros(14), names=profile.joint_names[:13] + ["tail"])
    with pytest.raises(ValueError, match="missing joints"):
        observation_to_inputs(unknown, profile)
    extra = _observation(profile, state=np.zeros(15), names=profile.joint_names + ["tail"])
    with pytest.raises(ValueError, match=r"unknown joint names \['tail'\]"):
        observation_to_inputs(extra, profile)
    nan_state = np.zeros(14)
    nan_state[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        observation_to_inputs(_observation(profile, state=nan_state), profile)
