"""motus_server in a child process (tiny random-weight model, aloha_sim profile); this process plays the robot's
drivers (FakeSensors) and calls every service and action through MotusClient: each returns a well-formed result,
feedback arrives per denoising step, imagined frames are published, and cancel works mid-denoising."""

from __future__ import annotations

import numpy as np
import pytest
from ros_helpers import SensorThread, server_command, start_process, stop_process, wait_until_serving
from sensor_msgs.msg import Image

from motus_msgs.msg import ErrorCode
from motus_ros.client import GOAL_STATUS_CANCELED, GOAL_STATUS_SUCCEEDED, MotusClient
from motus_ros.conversions import image_to_numpy, trajectory_to_actions
from motus_ros.profiles import load_profile

pytestmark = pytest.mark.timeout(240)

PROFILE = load_profile("aloha_sim")
ROLES = [camera.role for camera in PROFILE.cameras]


@pytest.fixture(scope="module")
def server():
    """One server for the module (starting it costs seconds); stopped at the end."""
    process = start_process(
        server_command("--max-waiting-requests", "2", max_denoising_steps=100000), "MOTUS SERVER READY"
    )
    yield process
    stop_process(process)


@pytest.fixture(scope="module")
def robot(ros_context, server):
    drivers = SensorThread(PROFILE)
    client = MotusClient(node_name="services_test_client")
    node = client.node
    assert client.wait_for_server(60), "the server's services/actions did not appear"
    client.spin(10.0, until=lambda: drivers.sensors.step > 15)
    wait_until_serving(client)
    yield client, drivers.sensors, node
    client.destroy()
    drivers.close()


def assert_trajectory(trajectory, expected_points: int) -> np.ndarray:
    assert list(trajectory.joint_names) == PROFILE.joint_names
    actions = trajectory_to_actions(trajectory, PROFILE.joint_names)
    assert actions.shape == (expected_points, len(PROFILE.joint_names)) and np.all(np.isfinite(actions))
    dt = 1.0 / PROFILE.control_rate_hz
    times = [point.time_from_start.sec + point.time_from_start.nanosec * 1e-9 for point in trajectory.points]
    assert np.allclose(times, dt * np.arange(1, expected_points + 1), atol=1e-6)
    return actions


def assert_frames(observations, expected_frames: int) -> None:
    assert len(observations) == expected_frames
    for observation in observations:
        assert sorted(observation.camera_names) == sorted(ROLES)
        for image in observation.images:
            array = image_to_numpy(image)
            assert array.dtype == np.uint8 and array.ndim == 3 and array.shape[0] > 0


CHUNK = 4  # motus-tiny: action_chunk 4, downsample_rate 1 -> 4 control steps
FRAMES = 2  # motus-tiny: num_video_frames 2


def test_predict_actions_vla_on_latest_and_given_observation(robot, server):
    client, sensors, _ = robot
    response = client.predict_actions("pick", steps=2, seed=1)
    assert response.error.code == ErrorCode.NONE, response.error.message
    first = assert_trajectory(response.trajectory, CHUNK)
    assert response.timing.denoising_steps == 2 and response.timing.total_ms > 0
    assert response.imagined_frames == []
    # Same seed, explicit observation with the same content as the live one -> a well-formed answer too.
    explicit = client.predict_actions("pick", observation=sensors.observation(), steps=2, seed=1)
    assert explicit.error.code == ErrorCode.NONE, explicit.error.message
    assert_trajectory(explicit.trajectory, CHUNK)
    assert np.abs(first).max() < 10.0  # robot units (rad), not normalised garbage
    assert server.poll() is None


def test_predict_actions_joint_mode_returns_frames(robot):
    client, _, _ = robot
    response = client.predict_actions("stack", mode="joint", steps=2, seed=3, return_frames=True)
    assert response.error.code == ErrorCode.NONE, response.error.message
    assert_trajectory(response.trajectory, CHUNK)
    assert len(response.imagined_frames) >= FRAMES
    composite = image_to_numpy(response.imagined_frames[0])
    assert composite.shape == (32, 32, 3)  # motus-tiny composite


def test_infer_actions_from_future_frames(robot):
    client, sensors, _ = robot
    future = [sensors.observation(step=10 * (i + 1)) for i in range(FRAMES)]
    for observation in future:  # future frames need no joint state
        observation.joint_state.name, observation.joint_state.position = [], []
    response = client.infer_actions(future, observation=sensors.observation(), steps=2, seed=0)
    assert response.error.code == ErrorCode.NONE, response.error.message
    assert_trajectory(response.trajectory, CHUNK)
    assert response.timing.decode_ms == 0.0  # no video decode in IDM mode


def test_predict_future_feedback_frames_and_published_images(robot):
    client, sensors, node = robot
    received: list[Image] = []
    subscription = node.create_subscription(Image, "/world_model/imagined/high", received.append, 10)
    actions = np.tile(sensors.position, (CHUNK, 1))
    task = client.start_predict_future(actions, PROFILE.joint_names, steps=3, seed=0, publish=True)
    result = task.result(120)
    assert task.status == GOAL_STATUS_SUCCEEDED and result.error.code == ErrorCode.NONE, result.error.message
    assert_frames(result.frames, FRAMES)
    steps = [feedback.step for feedback in task.feedback]
    assert steps == sorted(steps) and steps[-1] == 3 and all(f.total_steps == 3 for f in task.feedback)
    client.spin(10.0, until=lambda: len(received) >= FRAMES)
    assert len(received) >= FRAMES, "the predicted frames were not published on ~/imagined/<camera>"
    assert image_to_numpy(received[0]).shape[2] == 3
    node.destroy_subscription(subscription)


def test_imagine_with_actions_and_replay(robot):
    client, _, node = robot
    received: list[Image] = []
    subscription = node.create_subscription(Image, "/imagination/imagined/left_wrist", received.append, 10)
    result = client.imagine("open", with_actions=True, steps=2, seed=5, publish=True)
    assert result.error.code == ErrorCode.NONE, result.error.message
    assert_frames(result.frames, FRAMES)
    assert_trajectory(result.trajectory, CHUNK)
    client.spin(5.0, until=lambda: len(received) >= FRAMES)
    assert len(received) >= FRAMES, "the imagined clip was not replayed on ~/imagined/<camera>"
    plain = client.imagine("open", steps=2, seed=5)
    assert plain.error.code == ErrorCode.NONE and len(plain.trajectory.points) == 0
    node.destroy_subscription(subscription)


def test_cancel_mid_denoising(robot, server):
    client, sensors, _ = robot
    actions = np.tile(sensors.position, (CHUNK, 1))
    task = client.start_predict_future(actions, PROFILE.joint_names, steps=400, seed=0)
    assert task.wait_for_feedback(2, timeout_s=60), "no denoising feedback"
    task.cancel()
    result = task.result(60)
    assert task.status == GOAL_STATUS_CANCELED
    assert result.error.code == ErrorCode.CANCELLED
    assert task.feedback[-1].step < 400
    # The server keeps serving after the cancel.
    response = client.predict_actions("again", steps=1)
    assert response.error.code == ErrorCode.NONE and server.poll() is None


def test_requests_beyond_the_waiting_limit_get_busy(robot, server):
    """The server was started with --max-waiting-requests 2: a third concurrent request is answered BUSY at once
    (executor threads stay free for the control loop and the sensors); the first two still complete."""
    client, sensors, _ = robot
    actions = np.tile(sensors.position, (CHUNK, 1))
    first = client.start_predict_future(actions, PROFILE.joint_names, steps=20000, seed=0)
    second = client.start_predict_future(actions, PROFILE.joint_names, steps=20000, seed=1)
    assert first.wait_for_feedback(1, 60)
    client.spin(1.0)  # the second is accepted and waits (queued behind the first: the engine has one worker)
    assert not second.done()
    third = client.start_predict_future(actions, PROFILE.joint_names, steps=2, seed=2)
    result = third.result(30)
    assert result.error.code == ErrorCode.BUSY and "already waiting" in result.error.message
    for task in (first, second):
        task.cancel()
        assert task.result(60).error.code == ErrorCode.CANCELLED
    response = client.predict_actions("again", steps=1)
    assert response.error.code == ErrorCode.NONE and server.poll() is None


def test_every_node_reports_on_diagnostics_and_the_effective_dry_run(robot):
    """Each of the four nodes publishes its status (model, engine queue, last latency) on /diagnostics; the
    policy's effective dry_run (unset: the profile's default, false for the sim) is a readable parameter."""
    from diagnostic_msgs.msg import DiagnosticArray
    from rcl_interfaces.srv import GetParameters

    client, _, node = robot
    seen: dict[str, set[str]] = {}

    def record(message: DiagnosticArray) -> None:
        for status in message.status:
            seen[status.name] = {value.key for value in status.values}

    subscription = node.create_subscription(DiagnosticArray, "/diagnostics", record, 50)
    try:
        names = {f"motus_server: {name}" for name in ("policy", "world_model", "idm", "imagination")}
        client.spin(15.0, until=lambda: names <= set(seen))
        assert names <= set(seen), f"diagnostics only from {sorted(seen)}"
        for name in names:
            assert {"model", "engine_pending_requests", "last_request_latency_ms"} <= seen[name], name
        assert "control_rate_hz" in seen["motus_server: policy"]
    finally:
        node.destroy_subscription(subscription)
    parameters = node.create_client(GetParameters, "/policy/get_parameters")
    try:
        assert parameters.wait_for_service(timeout_sec=10)
        value = client.spin_until(parameters.call_async(GetParameters.Request(names=["dry_run"])), 10).values[0]
        assert value.type == 1 and value.bool_value is False  # PARAMETER_BOOL, the sim profile's default
    finally:
        node.destroy_client(parameters)
