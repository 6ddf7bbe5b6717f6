"""The simulated ALOHA driver in its own process: cameras and joint states flow (rates: bench/bench_sim.py), joint
states follow commands sent through each command interface (by the real command adapters), reset, reward/success.

Regressions pinned:
- gym-aloha's env.step()/reset() render three 480x640 images per call; the node must not use them, or the
  joint states fall far below 50 Hz on a CPU (the count of joint states per camera frame catches it);
- camera rendering runs off the physics thread: joint states keep their rate while cameras render.
"""

import dataclasses
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
import yaml
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from ros_helpers import spin_until
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool, Float64
from std_srvs.srv import Trigger

from motus_ros.command_adapters import make_command_adapter
from motus_ros.conversions import image_to_numpy, stamp_to_seconds
from motus_ros.profiles import load_profile
from motus_ros.sim.aloha_sim_node import PARAMETERS, READY_LINE

pytestmark = pytest.mark.timeout(180)

CONFIG = Path(__file__).resolve().parents[2] / "config" / "sim.yaml"
CAMERA_RATE_HZ = 4.0
START_POSE = np.array([0, -0.96, 1.16, 0, -0.3, 0])  # gym_aloha/constants.py START_ARM_POSE (per arm)


def have_interbotix() -> bool:
    try:
        import interbotix_xs_msgs.msg  # noqa: F401
    except ImportError:
        return False
    return True


def test_sim_yaml_matches_the_declared_defaults():
    params = yaml.safe_load(CONFIG.read_text())["aloha_sim"]["ros__parameters"]
    assert params == {p.name: p.default for p in PARAMETERS}
    # Typed as ROS will type them: doubles written as floats.
    assert all(isinstance(params[p.name], float) for p in PARAMETERS if p.rate)


@pytest.fixture
def sim(spawn_process, small_profile):
    return spawn_process(
        [
            "-m",
            "motus_ros.sim.aloha_sim_node",
            "--ros-args",
            "-p",
            f"profile:={small_profile}",
            "-p",
            f"camera_rate_hz:={CAMERA_RATE_HZ}",
            "-p",
            "seed:=3",
        ],
        ready_line=READY_LINE,
        timeout=90,
    )


class Recorder:
    def __init__(self, node: Node, profile) -> None:
        self.joint_states: list[tuple[float, JointState]] = []
        self.images: dict[str, list[Image]] = {camera.role: [] for camera in profile.cameras}
        self.rewards: list[float] = []
        self.successes: list[bool] = []
        node.create_subscription(
            JointState, profile.joint_state_topics[0], lambda m: self.joint_states.append((time.monotonic(), m)), 50
        )
        for camera in profile.cameras:
            node.create_subscription(Image, camera.topic, self.images[camera.role].append, qos_profile_sensor_data)
        node.create_subscription(Float64, "/aloha_sim/reward", lambda m: self.rewards.append(m.data), 10)
        node.create_subscription(Bool, "/aloha_sim/success", lambda m: self.successes.append(m.data), 10)

    def position(self) -> np.ndarray:
        return np.asarray(self.joint_states[-1][1].position)


def wait_for_pose(node, recorder, target: np.ndarray, joints: list[int], timeout: float = 15.0) -> np.ndarray:
    def close() -> bool:
        return bool(recorder.joint_states) and np.all(np.abs(recorder.position()[joints] - target[joints]) < 0.03)

    assert spin_until(node, close, timeout), (
        f"joint states did not reach the command: target {target[joints]}, got {recorder.position()[joints]}"
    )
    return recorder.position()


def test_sim_publishes_moves_resets(ros_context, sim, small_profile):
    profile = load_profile(small_profile)
    node = rclpy.create_node("sim_test_client")
    try:
        recorder = Recorder(node, profile)
        # 1. Streams, counted rather than timed (the rates themselves: bench/bench_sim.py): once everything flows,
        # collect until every camera sent 3 frames; joint states, published every physics step off the render
        # thread, must outnumber each camera's frames many times (50 Hz vs 4 Hz: ~12x; renders on the physics
        # thread would bring them down to the camera's pace).
        assert spin_until(node, lambda: recorder.joint_states and all(recorder.images.values()), 30), (
            "no data from the sim"
        )
        for box in (recorder.joint_states, *recorder.images.values()):
            box.clear()
        assert spin_until(node, lambda: all(len(images) >= 3 for images in recorder.images.values()), 30)
        frames = {role: len(images) for role, images in recorder.images.items()}
        assert len(recorder.joint_states) >= 4 * max(frames.values()), (
            f"{len(recorder.joint_states)} joint states while the cameras sent {frames}: physics waits on rendering"
        )
        for role, images in recorder.images.items():
            pixels = image_to_numpy(images[-1], expected_encoding="rgb8", expected_shape=(48, 64))
            assert pixels.std() > 1.0, f"{role} image is blank"
        stamps = [stamp_to_seconds(m.header.stamp) for _, m in recorder.joint_states]
        assert np.all(np.diff(stamps) > 0) and abs(stamps[-1] - time.time()) < 1.0  # node clock, increasing
        state = recorder.joint_states[-1][1]
        assert list(state.name) == profile.joint_names
        start = recorder.position()
        np.testing.assert_allclose(start[:6], START_POSE, atol=0.03)

        # 2. Moves through each command interface, sent by the real adapters.
        arms = [list(range(7)), list(range(7, 14))]
        interfaces = [
            ("forward_command", ["/arms_controller/commands"], [list(range(14))]),
            ("joint_trajectory", ["/arms_controller/joint_trajectory"], [list(range(14))]),
            ("joint_state_per_arm", ["/joint_left_states", "/joint_right_states"], arms),
        ]
        if have_interbotix():  # the sim subscribes to it only where interbotix_xs_msgs imports
            interfaces.append(
                ("interbotix", ["/follower_left/commands/joint_group", "/follower_right/commands/joint_group"], arms)
            )
        target = start.copy()
        for k, (interface, topics, groups) in enumerate(interfaces):
            commanding = dataclasses.replace(
                profile,
                command_interface=interface,
                command_topics=topics,
                command_joint_groups=groups,
                command_joint_names=[],
            )
            adapter = make_command_adapter(node, commanding, dry_run=False)
            target = target.copy()
            target[0] += 0.25  # left waist
            target[9] -= 0.15 * (k + 1) / len(interfaces)  # right elbow
            deadline = time.monotonic() + 15.0
            reached = False
            while time.monotonic() < deadline and not reached:
                adapter.send(target)
                reached = spin_until(
                    node, lambda target=target: np.all(np.abs(recorder.position()[[0, 9]] - target[[0, 9]]) < 0.03), 0.2
                )
            assert reached, f"{interface}: target {target[[0, 9]]}, got {recorder.position()[[0, 9]]}"
            adapter.destroy()
        assert recorder.position()[0] - start[0] > 0.25 * len(interfaces) - 0.05  # every move really happened

        # 3. Reset: back to the start pose (the last command is forgotten).
        client = node.create_client(Trigger, "/aloha_sim/reset")
        assert client.wait_for_service(timeout_sec=10)
        future = client.call_async(Trigger.Request())
        assert spin_until(node, future.done, 10) and future.result().success
        assert "seed 3" in future.result().message
        wait_for_pose(
            node, recorder, np.concatenate([START_POSE, [0], START_POSE, [0]]), list(range(6)) + list(range(7, 13))
        )

        # 4. Task status.
        assert spin_until(node, lambda: recorder.rewards and recorder.successes, 10)
        assert 0.0 <= recorder.rewards[-1] <= 4.0 and recorder.successes[-1] is False
    finally:
        node.destroy_node()
    assert sim.poll() is None, "the sim process died"


def test_trajectory_is_interpolated_from_the_target_at_receipt():
    from motus_ros.sim.aloha_sim_node import _Trajectory

    trajectory = _Trajectory(
        [0, 9], np.array([0.0, 1.0]), np.array([0.1, 0.3]), np.array([[1.0, 1.0], [2.0, 0.0]]), start_s=5.0
    )
    assert trajectory.sample(4.9) is None  # scheduled in the future: keep the current target
    np.testing.assert_allclose(trajectory.sample(5.05), [0.5, 1.0])
    np.testing.assert_allclose(trajectory.sample(5.2), [1.5, 0.5])
    np.testing.assert_allclose(trajectory.sample(9.0), [2.0, 0.0])  # after the end: hold the last point


def test_in_process_insertion_task_steps_and_rejects_bad_parameters(ros_context, small_profile):
    from rclpy.parameter import Parameter

    from motus_ros.sim.aloha_sim_node import AlohaSimNode

    def make(**overrides):
        params = {"profile": str(small_profile), "camera_rate_hz": 1.0, **overrides}
        return AlohaSimNode(parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])

    node = make(task="insertion", seed=5)
    try:
        node.wait_until_rendering()
        assert node.env.task == "insertion" and node.seed == 5
        start = node.target.copy()
        node.target[0] += 0.2
        for _ in range(25):  # 0.5 s of physics, driven by hand
            node._step()
        qpos = node.task.get_qpos(node.physics)
        assert abs(qpos[0] - start[0] - 0.2) < 0.03 and node.steps == 25
        node.reset_episode(5)
        np.testing.assert_allclose(node.task.get_qpos(node.physics)[:6], START_POSE, atol=1e-6)
    finally:
        node.destroy_node()
    with pytest.raises(ValueError, match="task must be one of"):
        make(task="stack_cups")
    with pytest.raises(ValueError, match="one MuJoCo camera per profile camera"):
        make(mujoco_cameras=["top"])
