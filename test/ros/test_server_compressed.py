"""Compressed transport through motus_server (tiny random-weight model): a profile whose cameras are declared
`transport: compressed` is served from sensor_msgs/CompressedImage on `<topic>/compressed`; a bad compressed frame
(undecodable, wrong size) is rejected with its reason, the server holds (NO_OBSERVATION naming the camera) and stays
up; predicted frames are replayed on `~/imagined/<camera>` and `~/imagined/<camera>/compressed`, one per 1/fps with
the stamps of the times they predict, in order."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from ros_helpers import (
    TEST_PARAMETERS,
    SensorThread,
    compressed_profile,
    server_command,
    start_process,
    stop_process,
    wait_until_serving,
)
from sensor_msgs.msg import CompressedImage, Image

from motus_msgs.msg import ErrorCode
from motus_ros.client import GOAL_STATUS_SUCCEEDED, MotusClient
from motus_ros.conversions import compressed_to_numpy, image_to_numpy, stamp_to_seconds
from motus_ros.profiles import load_profile

pytestmark = pytest.mark.timeout(240)

CHUNK, FRAMES = 4, 2  # motus-tiny: action_chunk 4, num_video_frames 2


@pytest.fixture(scope="module")
def profile_path(tmp_path_factory):
    return compressed_profile(tmp_path_factory.mktemp("profiles") / "aloha_sim_compressed.yaml")


@pytest.fixture(scope="module")
def server(profile_path):
    process = start_process(server_command(profile=str(profile_path)), "MOTUS SERVER READY")
    yield process
    stop_process(process)


@pytest.fixture(scope="module")
def robot(ros_context, server, profile_path):
    profile = load_profile(profile_path)
    drivers = SensorThread(profile, node_name="compressed_drivers")
    client = MotusClient(node_name="compressed_client")
    assert client.wait_for_server(60)
    client.spin(10.0, until=lambda: drivers.sensors.step > 15)
    wait_until_serving(client)  # the latest observation exists: made of the compressed frames alone
    yield client, drivers.sensors, profile
    client.destroy()
    drivers.close()


def wait_for_code(client: MotusClient, code: int, attempts: int = 40):
    response = None
    for _ in range(attempts):
        response = client.predict_actions("pick", steps=1)
        if response.error.code == code:
            return response
        client.spin(0.25)
    return response


def test_the_server_subscribes_compressed_cameras_only(robot):
    client, _, profile = robot
    for camera in profile.cameras:
        assert client.node.count_subscribers(camera.transport_topic) >= 1, camera.transport_topic
        assert client.node.count_subscribers(camera.topic) == 0, f"{camera.topic}: the raw topic is not read"


def test_bad_compressed_frames_are_rejected_and_the_server_holds_then_recovers(robot, server):
    client, sensors, _ = robot
    cases = [
        ("undecodable jpeg", lambda: sensors.garbage.add("high"), "high"),
        ("wrong size", lambda: sensors.size.update(left_wrist=(120, 160)), "left_wrist"),
    ]
    for label, break_stream, role in cases:
        sensors.reset()
        assert wait_for_code(client, ErrorCode.NONE).error.code == ErrorCode.NONE, f"{label}: no good start"
        break_stream()
        response = wait_for_code(client, ErrorCode.NO_OBSERVATION)
        assert response.error.code == ErrorCode.NO_OBSERVATION, f"{label}: {response.error.message}"
        assert role in response.error.message, f"{label}: {response.error.message}"
        assert server.poll() is None, f"{label}: the server died"
    sensors.reset()
    assert wait_for_code(client, ErrorCode.NONE).error.code == ErrorCode.NONE  # good frames serve again
    assert server.poll() is None


def test_predicted_frames_are_replayed_raw_and_compressed_at_the_video_rate(robot):
    client, sensors, profile = robot
    sensors.reset()
    lock = threading.Lock()
    raw: list[Image] = []
    compressed: list[CompressedImage] = []

    def keep(store):
        def append(message) -> None:
            with lock:
                store.append(message)

        return append

    node = client.node
    subscriptions = [
        node.create_subscription(Image, "/world_model/imagined/high", keep(raw), 10),
        node.create_subscription(CompressedImage, "/world_model/imagined/high/compressed", keep(compressed), 10),
    ]
    try:
        actions = np.tile(sensors.position, (CHUNK, 1))
        task = client.start_predict_future(actions, profile.joint_names, steps=2, seed=0, publish=True)
        result = task.result(120)
        assert task.status == GOAL_STATUS_SUCCEEDED and result.error.code == ErrorCode.NONE, result.error.message
        client.spin(10.0, until=lambda: len(raw) >= FRAMES and len(compressed) >= FRAMES)
        assert len(raw) == FRAMES and len(compressed) == FRAMES, (len(raw), len(compressed))
        stamps = [stamp_to_seconds(message.header.stamp) for message in raw]
        # One video frame apart (replay_fps of the test parameters), in the order of the prediction.
        assert np.allclose(np.diff(stamps), 1.0 / TEST_PARAMETERS["replay_fps"], atol=1e-6), stamps
        assert [m.header.stamp for m in compressed] == [m.header.stamp for m in raw]
        for frame, (message, twin) in enumerate(zip(raw, compressed)):
            views = dict(zip(result.frames[frame].camera_names, result.frames[frame].images))
            expected = image_to_numpy(views["high"])
            assert np.array_equal(image_to_numpy(message), expected), f"frame {frame} out of order"
            decoded = compressed_to_numpy(twin, expected_shape=expected.shape[:2])
            # The same picture: random weights imagine noise, which jpeg blurs, but keeps each channel's mean.
            assert np.allclose(decoded.mean(axis=(0, 1)), expected.mean(axis=(0, 1)), atol=4.0), frame
    finally:
        for subscription in subscriptions:
            node.destroy_subscription(subscription)
