"""ROS 2 bag -> LeRobot dataset: bags written with rosbags' Writer as `ros2 bag record` lays them out round-trip.

The bag mimics an ALOHA recording: three cameras at 25 Hz (one bgr8, to check the channel swap),
joint states split over two per-arm topics at 100 Hz, Float64MultiArray commands at 50 Hz, and a
gripper mapped from robot units to model space. The converter resamples to 50 Hz, nearest-before.
"""

from __future__ import annotations

import numpy as np
import pytest
from bag_helpers import float64_array, image, joint_state
from bag_helpers import write_bag as write_rosbag

from motus_model.data.bag_converter import as_profile, convert_bags
from motus_model.data.lerobot import LeRobotDataset

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


def write_bag(path, duration_s: float = 0.6):
    """An MCAP rosbag2 folder: 3 raw cameras at 25 Hz, per-arm joint states at 100 Hz, one command topic at 50 Hz."""
    events = []
    for frame in range(int(duration_s * 25) + 1):  # cameras at 25 Hz
        t = START_NS + frame * 40_000_000
        for camera, spec in enumerate(PROFILE["cameras"]):
            events.append(
                (t, spec["topic"], "sensor_msgs/msg/Image", image(t, image_at(camera, frame), spec["encoding"]))
            )
    for tick in range(int(duration_s * 100) + 1):  # joint states at 100 Hz, one message per arm
        t = START_NS + tick * 10_000_000 + 1_000_000
        q = joints_at(t)
        for arm, topic in enumerate(PROFILE["joint_state_topics"]):
            # same names on both arms, as Interbotix publishes them
            events.append(
                (t, topic, "sensor_msgs/msg/JointState", joint_state(t, ARM_JOINTS, q[7 * arm : 7 * arm + 7]))
            )
    for tick in range(int(duration_s * 50) + 1):  # commands at 50 Hz
        t = START_NS + tick * 20_000_000 + 2_000_000
        events.append((t, "/commands", "std_msgs/msg/Float64MultiArray", float64_array(command_at(t))))
    return write_rosbag(path, events)


@pytest.mark.timeout(60)
def test_bag_round_trip(tmp_path):
    bag = write_bag(tmp_path / "episode")
    root = convert_bags([bag], PROFILE, tmp_path / "dataset", fps=50, task="pick the cube")
    dataset = LeRobotDataset(root)
    assert dataset.num_episodes == 1
    assert dataset.camera_keys == (
        "observation.images.cam_high",
        "observation.images.cam_left_wrist",
        "observation.images.cam_right_wrist",
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


def write_per_arm_command_bag(path, duration_s: float = 0.3, by_name: bool = False):
    """Joint states as above; commands on two per-arm topics of 7 values each: Float64MultiArray, or with
    by_name JointState messages carrying the driver's unprefixed names (as the Agilex arms take them), reversed."""
    events = []
    for frame in range(int(duration_s * 25) + 1):
        t = START_NS + frame * 40_000_000
        for camera, spec in enumerate(PROFILE["cameras"]):
            events.append(
                (t, spec["topic"], "sensor_msgs/msg/Image", image(t, image_at(camera, frame), spec["encoding"]))
            )
    for tick in range(int(duration_s * 100) + 1):
        t = START_NS + tick * 10_000_000 + 1_000_000
        q = joints_at(t)
        for arm, topic in enumerate(PROFILE["joint_state_topics"]):
            events.append(
                (t, topic, "sensor_msgs/msg/JointState", joint_state(t, ARM_JOINTS, q[7 * arm : 7 * arm + 7]))
            )
    for tick in range(int(duration_s * 50) + 1):
        t = START_NS + tick * 20_000_000 + 2_000_000
        command = command_at(t)
        for arm, topic in enumerate(["/follower_left/commands", "/follower_right/commands"]):
            values = command[7 * arm : 7 * arm + 7]
            if by_name:  # reversed order: the converter must place each value by its name
                message = joint_state(t + arm * 1000, ARM_JOINTS[::-1], np.ascontiguousarray(values[::-1]))
                events.append((t + arm * 1000, topic, "sensor_msgs/msg/JointState", message))
            else:
                events.append((t + arm * 1000, topic, "std_msgs/msg/Float64MultiArray", float64_array(values)))
    return write_rosbag(path, events)


@pytest.mark.timeout(60)
def test_cli_converts_with_a_robot_profile_yaml(tmp_path, capsys):
    import yaml

    from motus_model.cli import main

    # a profile YAML as config/robots holds them: per-arm command topics, camera sizes (the converter reads
    # commands by message type, whatever the command_interface)
    profile = dict(PROFILE)
    profile.update(
        {
            "cameras": [dict(c, height=HEIGHT, width=WIDTH) for c in PROFILE["cameras"]],
            "command_interface": "joint_trajectory",
            "command_topics": ["/follower_left/commands", "/follower_right/commands"],
            "command_joint_groups": [list(range(7)), list(range(7, 14))],
        }
    )
    (tmp_path / "profile.yaml").write_text(yaml.safe_dump(profile))
    bag = write_per_arm_command_bag(tmp_path / "episode")
    assert (
        main(
            [
                "convert-bag",
                str(bag),
                "--profile",
                str(tmp_path / "profile.yaml"),
                "--output",
                str(tmp_path / "dataset"),
                "--task",
                "fold",
            ]
        )
        == 0
    )
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
    profile = dict(
        PROFILE,
        command_interface="joint_state_per_arm",
        command_topics=["/follower_left/commands", "/follower_right/commands"],
        command_joint_groups=[list(range(7)), list(range(7, 14))],
    )
    bag = write_per_arm_command_bag(tmp_path / "episode", by_name=True)
    dataset = LeRobotDataset(convert_bags([bag], profile, tmp_path / "dataset", fps=50, task="fold"))
    episode = dataset.load_episode(0)
    t0 = START_NS + 2_000_000 + 1000  # the right arm's first command completes the first full command
    for i in range(dataset.episode_length(0)):
        t = t0 + i * 20_000_000
        command_time = START_NS + 2_000_000 + ((t - START_NS - 2_000_000 - 1000) // 20_000_000) * 20_000_000
        np.testing.assert_allclose(episode["action"][i], to_model(command_at(command_time)), rtol=1e-6, atol=1e-6)


def test_cli_names_a_bad_profile_in_one_line(tmp_path, capsys):
    from motus_model.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(
            [
                "convert-bag",
                str(tmp_path / "x.mcap"),
                "--profile",
                "no_such_robot",
                "--output",
                str(tmp_path / "dataset"),
                "--task",
                "fold",
            ]
        )
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "\n" not in err and "Traceback" not in err
    assert (
        err.startswith("motus: error: --profile no_such_robot: unknown robot profile 'no_such_robot'")
        and "searched" in err
    )


# ---------------------------------------------------------------------------------------------------------------
# Bags as really recorded: Interbotix layout, CompressedImage cameras, MCAP and sqlite3, folders and single files
# ---------------------------------------------------------------------------------------------------------------

INTERBOTIX_PROFILE = dict(
    PROFILE,
    name="test_interbotix",
    cameras=[
        {"role": "high", "topic": "/cam_high/camera/color/image_rect_raw", "encoding": "rgb8"},
        {"role": "left_wrist", "topic": "/cam_left_wrist/camera/color/image_rect_raw", "encoding": "rgb8"},
        {"role": "right_wrist", "topic": "/cam_right_wrist/camera/color/image_rect_raw", "encoding": "rgb8"},
    ],
    command_interface="interbotix",
    command_topics=["/follower_left/commands/joint_group", "/follower_right/commands/joint_group"],
    command_joint_groups=[list(range(7)), list(range(7, 14))],
)


def write_interbotix_bag(
    folder,
    storage="mcap",
    duration_s=0.3,
    formats=("jpeg", "rgb8; jpeg compressed bgr8", "png"),
    single_commands=True,
    start_ns=START_NS,
):
    """What `ros2 bag record` gives on an Interbotix ALOHA: compressed cameras (<topic>/compressed), per-arm joint
    states, JointGroupCommand "arm" (6 values) + JointSingleCommand "gripper" per arm."""
    from bag_helpers import compressed, joint_group, joint_single

    events = []
    for frame in range(int(duration_s * 25) + 1):
        t = start_ns + frame * 40_000_000
        for camera, spec in enumerate(INTERBOTIX_PROFILE["cameras"]):
            events.append(
                (
                    t,
                    spec["topic"] + "/compressed",
                    "sensor_msgs/msg/CompressedImage",
                    compressed(t, image_at(camera, frame), formats[camera]),
                )
            )
    for tick in range(int(duration_s * 100) + 1):
        t = start_ns + tick * 10_000_000 + 1_000_000
        q = joints_at(t)
        for arm, topic in enumerate(INTERBOTIX_PROFILE["joint_state_topics"]):
            events.append(
                (t, topic, "sensor_msgs/msg/JointState", joint_state(t, ARM_JOINTS, q[7 * arm : 7 * arm + 7]))
            )
    for tick in range(int(duration_s * 50) + 1):
        t = start_ns + tick * 20_000_000 + 2_000_000
        command = command_at(t)
        for arm, robot in enumerate(("follower_left", "follower_right")):
            events.append(
                (
                    t + 10 * arm,
                    f"/{robot}/commands/joint_group",
                    "interbotix_xs_msgs/msg/JointGroupCommand",
                    joint_group("arm", command[7 * arm : 7 * arm + 6]),
                )
            )
            if single_commands:
                events.append(
                    (
                        t + 10 * arm + 5,
                        f"/{robot}/commands/joint_single",
                        "interbotix_xs_msgs/msg/JointSingleCommand",
                        joint_single("gripper", command[7 * arm + 6]),
                    )
                )
    return write_rosbag(folder, events, storage)


def _check_interbotix_episode(dataset, episode_index=0):
    episode = dataset.load_episode(episode_index)
    assert episode["action"].shape[1] == 14 and len(episode["action"]) >= 10
    # every command is float32 on the wire; the gripper comes from the JointSingleCommand
    first_command_ns = START_NS + 2_000_000 + 15
    expected = to_model(command_at(START_NS + 2_000_000).astype(np.float32).astype(np.float64))
    np.testing.assert_allclose(episode["action"][0], expected, rtol=1e-5, atol=1e-5)
    assert first_command_ns > START_NS
    for camera, key in enumerate(dataset.camera_keys):
        decoded = episode["frames"][key][0].astype(np.int16)
        assert np.abs(decoded - image_at(camera, 0).astype(np.int16)).mean() < 4.0, key  # jpeg + h264


@pytest.mark.timeout(120)
@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_interbotix_compressed_bag_folder(tmp_path, storage):
    bag = write_interbotix_bag(tmp_path / "rosbag2_episode", storage)
    assert (bag / "metadata.yaml").is_file()
    root = convert_bags([bag], INTERBOTIX_PROFILE, tmp_path / "dataset", fps=50, task="transfer")
    _check_interbotix_episode(LeRobotDataset(root))


@pytest.mark.timeout(120)
def test_single_files_and_several_bags_make_one_dataset_and_append(tmp_path):
    mcap_file = next(write_interbotix_bag(tmp_path / "a", "mcap").glob("*.mcap"))
    db3_file = next(write_interbotix_bag(tmp_path / "b", "sqlite3").glob("*.db3"))
    root = convert_bags([mcap_file, db3_file], INTERBOTIX_PROFILE, tmp_path / "dataset", fps=50, task=["one", "two"])
    dataset = LeRobotDataset(root)
    assert dataset.num_episodes == 2 and [dataset.task(i) for i in range(2)] == ["one", "two"]
    _check_interbotix_episode(dataset, 1)
    convert_bags([tmp_path / "a"], INTERBOTIX_PROFILE, root, fps=50, task="three", append=True)
    dataset = LeRobotDataset(root)
    assert dataset.num_episodes == 3 and dataset.task(2) == "three"
    _check_interbotix_episode(dataset, 2)


def _cli_error(tmp_path, capsys, args):
    from motus_model.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "motus: error:" in line]  # (progress bars share stderr)
    assert len(lines) == 1 and lines[0].startswith("motus: error: ") and "Traceback" not in err, err
    return lines[0]


def test_bad_bags_give_one_line_errors_and_leave_no_dataset(tmp_path, capsys):
    import yaml

    profile_path = tmp_path / "profile.yaml"
    profile_path.write_text(yaml.safe_dump(INTERBOTIX_PROFILE))
    good = write_interbotix_bag(tmp_path / "good", "mcap")
    out = tmp_path / "dataset"
    base = ["convert-bag", "--profile", str(profile_path), "--output", str(out), "--task", "t"]

    (tmp_path / "empty.mcap").write_bytes(b"")
    assert "empty.mcap: the file is empty" in _cli_error(tmp_path, capsys, base + [str(tmp_path / "empty.mcap")])
    mcap = next(good.glob("*.mcap"))
    truncated = tmp_path / "truncated.mcap"
    truncated.write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 2])
    assert "truncated.mcap" in _cli_error(tmp_path, capsys, base + [str(truncated)])
    (tmp_path / "no_meta").mkdir()
    assert "without metadata.yaml" in _cli_error(tmp_path, capsys, base + [str(tmp_path / "no_meta")])
    # a good bag first, then a bad one: the whole conversion fails and no half dataset is left behind
    missing = write_rosbag(
        tmp_path / "no_cameras",
        [
            (
                START_NS,
                "/follower_left/joint_states",
                "sensor_msgs/msg/JointState",
                joint_state(START_NS, ARM_JOINTS, np.zeros(7)),
            )
        ],
    )
    err = _cli_error(tmp_path, capsys, base + [str(good), str(missing)])
    assert "no_cameras: topic /cam_high/camera/color/image_rect_raw (camera) is not in the bag" in err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".dataset")]
    # joint-count mismatch: group commands of 6 values for 7-joint groups and no JointSingleCommand topic
    no_single = write_interbotix_bag(tmp_path / "no_single", single_commands=False)
    err = _cli_error(tmp_path, capsys, base + [str(no_single)])
    assert "holds 6 values, its joint group has 7" in err and "joint_single" in err
    unknown = write_interbotix_bag(tmp_path / "tiff", formats=("tiff", "jpeg", "jpeg"))
    assert "CompressedImage format 'tiff' is not supported" in _cli_error(tmp_path, capsys, base + [str(unknown)])


def test_failed_append_leaves_the_dataset_as_it_was(tmp_path, capsys):
    root = convert_bags(
        [write_interbotix_bag(tmp_path / "a")], INTERBOTIX_PROFILE, tmp_path / "dataset", fps=50, task="t"
    )
    before = {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    bad = write_interbotix_bag(tmp_path / "bad", single_commands=False)
    with pytest.raises(ValueError, match="joint group has 7"):
        convert_bags(
            [write_interbotix_bag(tmp_path / "b"), bad], INTERBOTIX_PROFILE, root, fps=50, task="t", append=True
        )
    after = {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    assert after == before
    assert LeRobotDataset(root).num_episodes == 1
