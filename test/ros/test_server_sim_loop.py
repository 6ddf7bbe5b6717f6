"""Closed loop: motus_sim (gym-aloha, MuJoCo) and motus_server in separate processes. The server's policy node
reads the sim's cameras and joint states, and its commands move the simulated arms at about the control rate
while chunks are being inferred (one command per control tick; the command rate itself: bench/bench_ros.py)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from ros_helpers import server_command, sim_command, wait_until_serving
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64MultiArray

from motus_ros.client import GOAL_STATUS_SUCCEEDED, MotusClient
from motus_ros.profiles import load_profile

pytestmark = pytest.mark.timeout(240)

PROFILE = load_profile("aloha_sim")


@pytest.mark.flaky(reruns=2, reruns_delay=5)  # real processes on 2 shared cores: a starved run is retried
def test_policy_drives_the_simulated_aloha(ros_context, spawn_process):
    # Cameras at 4 Hz: rendering three cameras costs ~150 ms of CPU, and at the default rate the render thread
    # would take a whole core of the two from the server's inference.
    spawn_process(sim_command("-p", "camera_rate_hz:=4.0"), ready_line="MOTUS_SIM READY", timeout=120)
    # motus-small: its 16-step chunk (320 ms at 50 Hz) outlasts a 1-step inference even on a loaded 2-core machine;
    # motus-tiny's 4-step chunk (80 ms) would arrive already in the past and the policy would only ever hold.
    # One torch thread: the simulator's rendering takes most of a core, and two intra-op threads waiting on each
    # other made chunks take seconds on a loaded machine.
    spawn_process(
        server_command("--torch-threads", "1", preset="motus-small", default_steps=1, chunk_request_threshold=10),
        ready_line="MOTUS SERVER READY",
        timeout=120,
    )
    client = MotusClient(node_name="sim_loop_client")
    lock = threading.Lock()
    commands: list[tuple[float, np.ndarray]] = []
    states: list[np.ndarray] = []
    success: list[bool] = []

    def on_command(message: Float64MultiArray) -> None:
        with lock:
            commands.append((time.monotonic(), np.asarray(message.data)))

    def on_state(message: JointState) -> None:
        order = [list(message.name).index(name) for name in PROFILE.joint_names]
        states.append(np.asarray(message.position)[order])

    client.node.create_subscription(Float64MultiArray, PROFILE.command_topics[0], on_command, 1000)
    client.node.create_subscription(JointState, PROFILE.joint_state_topics[0], on_state, 50)
    client.node.create_subscription(Bool, "/aloha_sim/success", lambda message: success.append(message.data), 10)
    try:
        assert client.wait_for_server(60)
        client.spin(15.0, until=lambda: len(states) > 20)
        assert states, "no joint states from the simulator"
        before = states[-1].copy()
        # The latest observation is usable (cameras + joint state from the sim) ...
        wait_until_serving(client, 60.0)  # the first camera frames can take a while on a loaded machine
        # ... and a run closes the loop.
        start = time.monotonic()
        assert client.run_policy("pick", max_duration_s=5.0)
        while not client.is_task_complete(0.1):
            pass
        client.spin(0.5)  # the last commands in flight
        result = client.get_result()
        assert client.policy_task.status == GOAL_STATUS_SUCCEEDED, result.error.message
        assert result.termination == "completed" and result.chunks >= 2
        with lock:
            sent = [command for stamp, command in commands if stamp >= start]
        # Counts, not a rate: the commands received are the run's own count (one per control tick, none lost).
        assert abs(result.steps - len(sent)) <= 2, f"{result.steps} commands published, {len(sent)} received"
        assert result.steps >= client.policy_task.feedback[-1].step - 1, "a control tick published no command"
        sent = np.stack(sent)
        assert np.all(sent >= np.asarray(PROFILE.lower_limits) - 1e-9) and np.all(
            sent <= np.asarray(PROFILE.upper_limits) + 1e-9
        )
        holding = [f for f in client.policy_task.feedback if not f.holding]
        assert holding, (
            f"the policy never left the hold state: {sorted({f.hold_reason for f in client.policy_task.feedback})}"
        )
        client.spin(1.0)
        after = states[-1]
        # The simulated arms followed the commands: the joint state moved towards the last command.
        moved = np.abs(after - before).max()
        assert moved > 1e-3, "the simulated arms did not move"
        assert np.abs(after[:6] - sent[-1][:6]).max() < np.abs(before[:6] - sent[-1][:6]).max() + 1e-6
        assert success, "no ~/success from the simulator"
    finally:
        client.destroy()


@pytest.mark.flaky(reruns=2, reruns_delay=5)  # real processes on 2 shared cores: a starved run is retried
def test_compressed_cameras_drive_the_policy_end_to_end(ros_context, spawn_process, tmp_path):
    """The simulator publishes its cameras as jpeg CompressedImage on <topic>/compressed only (a profile with
    `transport: compressed`); the server decodes them and its policy moves the arms."""
    from ros_helpers import compressed_profile

    profile_path = compressed_profile(tmp_path / "aloha_sim_compressed.yaml", size=(48, 64))  # cheap rendering
    profile = load_profile(profile_path)
    spawn_process(
        sim_command("-p", f"profile:={profile_path}", "-p", "camera_rate_hz:=8.0"),
        ready_line="MOTUS_SIM READY",
        timeout=120,
    )
    spawn_process(
        server_command(
            "--torch-threads",
            "1",
            profile=str(profile_path),
            preset="motus-small",
            default_steps=1,
            chunk_request_threshold=10,
        ),
        ready_line="MOTUS SERVER READY",
        timeout=120,
    )
    client = MotusClient(node_name="sim_compressed_client")
    states: list[np.ndarray] = []
    commands: list[np.ndarray] = []

    def on_state(message: JointState) -> None:
        order = [list(message.name).index(name) for name in profile.joint_names]
        states.append(np.asarray(message.position)[order])

    client.node.create_subscription(JointState, profile.joint_state_topics[0], on_state, 50)
    client.node.create_subscription(
        Float64MultiArray, profile.command_topics[0], lambda message: commands.append(np.asarray(message.data)), 1000
    )
    try:
        assert client.wait_for_server(60)
        for camera in profile.cameras:  # only the compressed topics exist
            assert client.node.count_publishers(camera.transport_topic) == 1, camera.transport_topic
            assert client.node.count_publishers(camera.topic) == 0, camera.topic
        client.spin(15.0, until=lambda: len(states) > 20)
        before = states[-1].copy()
        wait_until_serving(client, 60.0)
        assert client.run_policy("pick", max_duration_s=4.0)
        while not client.is_task_complete(0.1):
            pass
        result = client.get_result()
        assert client.policy_task.status == GOAL_STATUS_SUCCEEDED, result.error.message
        assert result.termination == "completed" and result.chunks >= 2 and result.moving_steps > 0, result
        client.spin(1.0)
        assert commands, "no commands reached the simulator"
        assert np.abs(states[-1] - before).max() > 1e-3, "the simulated arms did not move"
    finally:
        client.destroy()
