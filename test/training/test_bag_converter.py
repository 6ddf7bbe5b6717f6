"""ROS 2 bag (MCAP) -> LeRobot dataset: a bag written here with mcap-ros2-support round-trips.

The bag mimics an ALOHA recording: three cameras at 25 Hz (one bgr8, to check the channel swap),
joint states split over two per-arm topics at 100 Hz, Float64MultiArray commands at 50 Hz, and a
gripper mapped from robot units to model space. The converter resamples to 50 Hz, nearest-before.
"""

from __future__ import annotations

import numpy as np
import pytest
from mcap_ros2.writer import Writer

from motus_model.data.bag_converter import as_profile, convert_bags
from motus_model.data.lerobot import LeRobotDataset
from motus_model.data.ros_msgdefs import MESSAGE_DEFINITIONS

ARM_JOINTS = ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate", "gripper"]
JOINT_NAMES = [f"follower_left/{j}" for j in ARM_JOINTS] + [f"follower_right/{j}" for j in ARM_JOINTS]
GRIPPER_OPEN, GRIPPER_CLOSED = 1.6214, 0.6197  # Interbotix follower gripper range (rad)
PROFILE = {
    "cameras": [
        {"role": "high", "topic": "/cam_high/image_raw", "encoding": "rgb8"},
        {"role": "left_wrist", "topic": "/cam_left_wrist/image_raw", "encoding": "bgr8"},
        {"role": "right_wrist", "topic": "/cam_right_wrist/image_raw", "encoding": "rgb8"},
    ],
    "joint_state_topics": ["/follower_left/joint_states", "/follower_right/joint_states"],
    "joint_names": JOINT_NAMES,
    "joint_name_prefixes": ["follower_left/", "follower_right/"],  # the drivers publish unprefixed names
    "grippers": [
        {"index": 6, "robot_open": GRIPPER_OPEN, "robot_closed": GRIPPER_CLOSED},
        {"index": 13, "robot_open": GRIPPER_OPEN, "robot_closed": GRIPPER_CLOSED},
    ],
    # the rest of the shared RobotProfile schema (motus_model.embodiment): one forward-command topic
    "name": "test_aloha",
    "control_rate_hz": 50.0,
    "command_interface": "forward_command",
    "command_topics": ["/commands"],
    "command_joint_groups": [list(range(14))],
    "lower_limits": [-3.0] * 14,
    "upper_limits": [3.0] * 14,
    "max_delta_per_step": [0.1] * 14,
}
START_NS = 1_700_000_000_000_000_000
HEIGHT, WIDTH = 16, 20


def joints_at(t_ns: int) -> np.ndarray:
    """Robot-unit joint positions at time t (grippers inside their range)."""
    seconds = (t_ns - START_NS) / 1e9
    q = np.sin(seconds * np.arange(1, 15))
    q[[6, 13]] = GRIPPER_CLOSED + (GRIPPER_OPEN - GRIPPER_CLOSED) * (0.5 + 0.5 * q[[6, 13]])
    return q


def to_model(q: np.ndarray) -> np.ndarray:
    """The expected model-space vector, by hand: grippers (6, 13) mapped to 0 closed .. 1 open."""
    q = np.array(q, dtype=np.float64)
    q[[6, 13]] = (q[[6, 13]] - GRIPPER_CLOSED) / (GRIPPER_OPEN - GRIPPER_CLOSED)
    return q


def command_at(t_ns: int) -> np.ndarray:
    return joints_at(t_ns + 20_000_000)  # commands lead the state by 20 ms


def image_at(camera: int, frame: int) -> np.ndarray:
    """A flat RGB colour that encodes (camera, frame index), so the picked frame can be read back."""
    return np.full((HEIGHT, WIDTH, 3), [40 * camera + 20, 8 * frame, 200 - 8 * frame], dtype=np.uint8)


def header(t_ns: int) -> dict:
    return {"stamp": {"sec": t_ns // 1_000_000_000, "nanosec": t_ns % 1_000_000_000}, "frame_id": ""}


def write_bag(path, duration_s: float = 0.6) -> None:
    with open(path, "wb") as stream:
        writer = Writer(stream)
        schemas = {name: writer.register_msgdef(name, text) for name, text in MESSAGE_DEFINITIONS.items()}
        events = []
        for frame in range(int(duration_s * 25) + 1):  # cameras at 25 Hz
            t = START_NS + frame * 40_000_000
            for camera, spec in enumerate(PROFILE["cameras"]):
                rgb = image_at(camera, frame)
                data = rgb[:, :, ::-1] if spec["encoding"] == "bgr8" else rgb
                message = {
                    "header": header(t), "height": HEIGHT, "width": WIDTH, "encoding": spec["encoding"],
                    "is_bigendian": 0, "step": WIDTH * 3, "data": np.ascontiguousarray(data).tobytes(),
                }
                events.append((t, spec["topic"], "sensor_msgs/msg/Image", message))
        for tick in range(int(duration_s * 100) + 1):  # joint states at 100 Hz, one message per arm
            t = START_NS + tick * 10_000_000 + 1_000_000
            q = joints_at(t)
            for arm, topic in enumerate(PROFILE["joint_state_topics"]):
                names = ARM_JOINTS  # same names on both arms, as Interbotix publishes them
                message = {"header": header(t), "name": names, "position": q[7 * arm : 7 * arm + 7].tolist(), "velocity": [], "effort": []}
                events.append((t, topic, "sensor_msgs/msg/JointState", message))
        for tick in range(int(duration_s * 50) + 1):  # commands at 50 Hz
            t = START_NS + tick * 20_000_000 + 2_000_000
            message = {"layout": {"dim": [], "data_offset": 0}, "data": command_at(t).tolist()}
            events.append((t, "/commands", "std_msgs/msg/Float64MultiArray", message))
        for t, topic, schema, message in sorted(events, key=lambda e: e[0]):
            writer.write_message(topic, schemas[schema], message, log_time=t)
        writer.finish()


@pytest.mark.timeout(60)
def test_bag_round_trip(tmp_path):
    bag = tmp_path / "episode.mcap"
    write_bag(bag)
    root = convert_bags([bag], PROFILE, tmp_path / "dataset", fps=50, task="pick the cube")
    dataset = LeRobotDataset(root)
    assert dataset.num_episodes == 1
    assert dataset.camera_keys == (
        "observation.images.cam_high", "observation.images.cam_left_wrist", "observation.images.cam_right_wrist"
    )
    episode = dataset.load_episode(0)
    assert episode["task"] == "pick the cube"
    length = dataset.episode_length(0)
    # every stream has a sample from t0 = max(first stamps) = START + 2 ms (first command)
    t0 = START_NS + 2_000_000
    ticks = t0 + np.arange(length) * 20_000_000
    last_camera = START_NS + 15 * 40_000_000
    assert ticks[-1] <= last_camera and ticks[-1] + 20_000_000 > min(last_camera, START_NS + 600_000_000 + 1_000_000)

    for i, t in enumerate(ticks):
        joint_time = START_NS + 1_000_000 + ((t - START_NS - 1_000_000) // 10_000_000) * 10_000_000
        command_time = START_NS + 2_000_000 + ((t - START_NS - 2_000_000) // 20_000_000) * 20_000_000
        expected_state = to_model(joints_at(joint_time))
        expected_action = to_model(command_at(command_time))
        np.testing.assert_allclose(episode["observation.state"][i], expected_state, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(episode["action"][i], expected_action, rtol=1e-6, atol=1e-6)
        frame = (t - START_NS) // 40_000_000  # nearest-before camera frame
        for camera, key in enumerate(dataset.camera_keys):
            decoded = episode["frames"][key][i].astype(np.int16)
            expected = image_at(camera, int(frame)).astype(np.int16)
            assert np.abs(decoded - expected).mean() < 3.0, (i, key)
    # grippers are in model space: 0 closed .. 1 open
    assert episode["observation.state"][:, [6, 13]].min() >= -1e-6
    assert episode["observation.state"][:, [6, 13]].max() <= 1 + 1e-6


def test_profile_validation():
    with pytest.raises(ValueError, match="missing required keys"):
        as_profile({"name": "x", "cameras": []})
    bad = dict(PROFILE, grippers=[{"index": 20, "robot_open": 1, "robot_closed": 0}])
    with pytest.raises(ValueError, match="gripper index"):
        as_profile(bad)
    with pytest.raises(ValueError, match="unknown robot profile 'no_such_robot'.*searched"):
        as_profile("no_such_robot")
    with pytest.raises(ValueError, match="does not exist"):
        as_profile("/no/such/profile.yaml")


def write_per_arm_command_bag(path, duration_s: float = 0.3, by_name: bool = False) -> None:
    """Joint states as above; commands on two per-arm topics of 7 values each: Float64MultiArray, or with
    by_name JointState messages carrying the driver's unprefixed names (as the Agilex arms take them)."""
    with open(path, "wb") as stream:
        writer = Writer(stream)
        schemas = {name: writer.register_msgdef(name, text) for name, text in MESSAGE_DEFINITIONS.items()}
        events = []
        for frame in range(int(duration_s * 25) + 1):
            t = START_NS + frame * 40_000_000
            for camera, spec in enumerate(PROFILE["cameras"]):
                rgb = image_at(camera, frame)
                data = rgb[:, :, ::-1] if spec["encoding"] == "bgr8" else rgb
                events.append((t, spec["topic"], "sensor_msgs/msg/Image", {
                    "header": header(t), "height": HEIGHT, "width": WIDTH, "encoding": spec["encoding"],
                    "is_bigendian": 0, "step": WIDTH * 3, "data": np.ascontiguousarray(data).tobytes()}))
        for tick in range(int(duration_s * 100) + 1):
            t = START_NS + tick * 10_000_000 + 1_000_000
            q = joints_at(t)
            for arm, topic in enumerate(PROFILE["joint_state_topics"]):
                events.append((t, topic, "sensor_msgs/msg/JointState", {
                    "header": header(t), "name": ARM_JOINTS, "position": q[7 * arm : 7 * arm + 7].tolist(),
                    "velocity": [], "effort": []}))
        for tick in range(int(duration_s * 50) + 1):
            t = START_NS + tick * 20_000_000 + 2_000_000
            command = command_at(t)
            for arm, topic in enumerate(["/follower_left/commands", "/follower_right/commands"]):
                values = command[7 * arm : 7 * arm + 7].tolist()
                if by_name:  # reversed order: the converter must place each value by its name
                    events.append((t + arm * 1000, topic, "sensor_msgs/msg/JointState", {
                        "header": header(t + arm * 1000), "name": ARM_JOINTS[::-1], "position": values[::-1],
                        "velocity": [], "effort": []}))
                else:
                    events.append((t + arm * 1000, topic, "std_msgs/msg/Float64MultiArray",
                                   {"layout": {"dim": [], "data_offset": 0}, "data": values}))
        for t, topic, schema, message in sorted(events, key=lambda e: e[0]):
            writer.write_message(topic, schemas[schema], message, log_time=t)
        writer.finish()


@pytest.mark.timeout(60)
def test_cli_converts_with_a_robot_profile_yaml(tmp_path, capsys):
    import yaml

    from motus_model.cli import main

    # a profile YAML as config/robots holds them: per-arm command topics, camera sizes (the converter reads
    # commands by message type, whatever the command_interface)
    profile = dict(PROFILE)
    profile.update({
        "cameras": [dict(c, height=HEIGHT, width=WIDTH) for c in PROFILE["cameras"]],
        "command_interface": "joint_trajectory",
        "command_topics": ["/follower_left/commands", "/follower_right/commands"],
        "command_joint_groups": [list(range(7)), list(range(7, 14))],
    })
    (tmp_path / "profile.yaml").write_text(yaml.safe_dump(profile))
    bag = tmp_path / "episode.mcap"
    write_per_arm_command_bag(bag)
    assert main(["convert-bag", str(bag), "--profile", str(tmp_path / "profile.yaml"),
                 "--output", str(tmp_path / "dataset"), "--task", "fold"]) == 0
    dataset = LeRobotDataset(tmp_path / "dataset")
    assert dataset.fps == 50.0 and dataset.task(0) == "fold"
    episode = dataset.load_episode(0)
    # first tick: every stream present = the right arm's first command (2 ms + 1 us)
    t0 = START_NS + 2_000_000 + 1000
    for i in range(dataset.episode_length(0)):
        t = t0 + i * 20_000_000
        command_time = START_NS + 2_000_000 + ((t - START_NS - 2_000_000 - 1000) // 20_000_000) * 20_000_000
        expected = to_model(command_at(command_time))
        np.testing.assert_allclose(episode["action"][i], expected, rtol=1e-6, atol=1e-6)


@pytest.mark.timeout(60)
def test_per_arm_joint_state_commands_are_read_by_the_drivers_names(tmp_path):
    profile = dict(PROFILE, command_interface="joint_state_per_arm",
                   command_topics=["/follower_left/commands", "/follower_right/commands"],
                   command_joint_groups=[list(range(7)), list(range(7, 14))])
    bag = tmp_path / "episode.mcap"
    write_per_arm_command_bag(bag, by_name=True)
    dataset = LeRobotDataset(convert_bags([bag], profile, tmp_path / "dataset", fps=50, task="fold"))
    episode = dataset.load_episode(0)
    t0 = START_NS + 2_000_000 + 1000  # the right arm's first command completes the first full command
    for i in range(dataset.episode_length(0)):
        t = t0 + i * 20_000_000
        command_time = START_NS + 2_000_000 + ((t - START_NS - 2_000_000 - 1000) // 20_000_000) * 20_000_000
        np.testing.assert_allclose(episode["action"][i], to_model(command_at(command_time)), rtol=1e-6, atol=1e-6)


def test_cli_names_a_bad_profile_in_one_line(tmp_path, capsys):
    from motus_model.cli import main

    code = main(["convert-bag", str(tmp_path / "x.mcap"), "--profile", "no_such_robot",
                 "--output", str(tmp_path / "dataset"), "--task", "fold"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "Traceback" not in err
    assert err.startswith("motus convert-bag: error: unknown robot profile 'no_such_robot'") and "searched" in err
