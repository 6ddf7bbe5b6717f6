"""Small helpers shared by the ROS tests: spinning until a condition, stand-in sensor drivers, server processes."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image, JointState

from motus_msgs.msg import Observation


def spin_until(node: Node, predicate: Callable[[], bool], timeout: float) -> bool:
    """Spin `node` until predicate() is true or `timeout` seconds pass; returns the predicate's last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        rclpy.spin_once(node, timeout_sec=0.05)
    return predicate()


def wait_future(node: Node, future: Any, timeout: float) -> Any:
    """Spin `node` until the rclpy future is done; its result (AssertionError on timeout)."""
    assert spin_until(node, future.done, timeout), "timed out waiting for a ROS future"
    return future.result()


# ---------------------------------------------------------------------------------------------------------------
# A stand-in for the robot's drivers: publishes the profile's cameras and joint states from the test process.
# ---------------------------------------------------------------------------------------------------------------


ROOT = Path(__file__).resolve().parents[2]
SERVER_PARAMS = ROOT / "config" / "motus_server.yaml"
# Test settings on top of config/motus_server.yaml, written as a second params file (see server_command).
TEST_PARAMETERS = {
    "profile": "aloha_sim",
    "preset": "motus-tiny",
    "default_steps": 2,
    "request_timeout_s": 60.0,
    "max_age_s": 1.0,
    "max_skew_s": 0.5,
    "stamp_source": "receive",
    "max_instruction_chars": 64,
    "chunk_request_threshold": 4,
    "replay_fps": 10.0,
    # FakeSensors publish joint states at 15 Hz, not at the 50 Hz control rate the default bound (3 control
    # periods) assumes; the driver-loss test (test_faults.py) runs the simulator with the default.
    "joint_state_max_age_periods": 50.0,
}


def camera_frame(role: str, height: int, width: int, step: int = 0) -> np.ndarray:
    """A deterministic uint8 RGB frame that differs per camera role and step."""
    colours = {"high": (200, 40, 40), "left_wrist": (40, 200, 40), "right_wrist": (40, 40, 200)}
    frame = np.zeros((height, width, 3), dtype=np.uint8)
    frame[:] = colours.get(role, (128, 128, 128))
    frame[: height // 4, : (step * 7) % width] = 255
    return frame


def image_msg(array: np.ndarray, stamp, encoding: str = "rgb8") -> Image:
    from motus_ros.conversions import numpy_to_image

    return numpy_to_image(array, stamp, "camera", encoding=encoding)


class FakeSensors:
    """Publishes every camera and the joint state of a robot profile at `rate_hz` from a node of the test process.

    Cameras the profile declares `transport: compressed` go out as jpeg CompressedImage on `<topic>/compressed`.
    Knobs for the bad-input tests: `encoding` (per role), `size` (per role), `skip` (roles not published),
    `garbage` (compressed roles whose payload is not an image), `joint_names` (replaces the profile's),
    `nan_joint` (index set to NaN), `paused` (publish nothing).
    """

    def __init__(self, node: Node, profile, rate_hz: float = 15.0) -> None:
        self.node = node
        self.profile = profile
        self.encoding: dict[str, str] = {}
        self.size: dict[str, tuple[int, int]] = {}
        self.skip: set[str] = set()
        self.garbage: set[str] = set()
        self.joint_names: list[str] | None = None
        self.nan_joint: int | None = None
        self.paused = False
        self.position = np.clip(np.zeros(len(profile.joint_names)), profile.lower_limits, profile.upper_limits)
        self.step = 0
        self.image_publishers = {
            camera.role: node.create_publisher(
                CompressedImage if camera.transport == "compressed" else Image,
                camera.transport_topic,
                qos_profile_sensor_data,
            )
            for camera in profile.cameras
        }
        self.joint_publishers = [
            node.create_publisher(JointState, topic, qos_profile_sensor_data) for topic in profile.joint_state_topics
        ]
        self.timer = node.create_timer(1.0 / rate_hz, self.publish)

    def reset(self) -> None:
        self.encoding, self.size, self.skip, self.garbage = {}, {}, set(), set()
        self.joint_names, self.nan_joint, self.paused = None, None, False

    def publish(self) -> None:
        if self.paused:
            return
        self.step += 1
        stamp = self.node.get_clock().now().to_msg()
        for camera in self.profile.cameras:
            if camera.role in self.skip:
                continue
            height, width = self.size.get(camera.role, (camera.height, camera.width))
            frame = camera_frame(camera.role, height, width, self.step)
            if camera.transport == "compressed":
                from motus_ros.conversions import numpy_to_compressed

                message = numpy_to_compressed(frame, stamp, "camera")
                if camera.role in self.garbage:
                    message.data = b"\xff\xd8 not a jpeg any more"
            else:
                message = image_msg(frame, stamp, self.encoding.get(camera.role, camera.encoding))
            self.image_publishers[camera.role].publish(message)
        position = self.position.copy()
        if self.nan_joint is not None:
            position[self.nan_joint] = np.nan
        names = self.joint_names or list(self.profile.joint_names)
        for publisher in self.joint_publishers:
            message = JointState(name=names, position=position.tolist())
            message.header.stamp = stamp
            publisher.publish(message)

    def observation(self, step: int = 0) -> Observation:
        """An explicit motus_msgs/Observation with every camera and the joint state (profile order, named)."""
        stamp = self.node.get_clock().now().to_msg()
        message = Observation()
        message.header.stamp = stamp
        for camera in self.profile.cameras:
            message.camera_names.append(camera.role)
            message.images.append(
                image_msg(camera_frame(camera.role, camera.height, camera.width, step), stamp, camera.encoding)
            )
        message.joint_state = JointState(name=list(self.profile.joint_names), position=self.position.tolist())
        return message


def compressed_profile(path: Path, size: tuple[int, int] | None = None) -> Path:
    """aloha_sim with every camera `transport: compressed` (optionally resized), written to `path` (a YAML file)."""
    import yaml

    from motus_ros.profiles import load_profile

    data = load_profile("aloha_sim").to_dict()
    data["name"] = "aloha_sim_compressed"
    for camera in data["cameras"]:
        camera["transport"] = "compressed"
        if size is not None:
            camera.update(height=size[0], width=size[1])
    path.write_text(yaml.safe_dump(data))
    return path


def server_command(*extra: str, ros_args: tuple[str, ...] = (), **overrides) -> list[str]:
    """Arguments for spawn_process that start motus_server from the source tree with the test parameters
    (keyword arguments override TEST_PARAMETERS; extra = server options such as --no-autostart).

    The test values go into a second params file with one section per node: node-specific entries of
    config/motus_server.yaml would win over global `-p` arguments."""
    import hashlib
    import tempfile

    import yaml

    from motus_ros.server import PARAMETER_SECTIONS

    parameters = {**TEST_PARAMETERS, **overrides}
    sections = {f"/**/{name}": {"ros__parameters": dict(parameters)} for name in PARAMETER_SECTIONS}
    # rclpy ignores overrides a node does not declare, so every node can get the whole set.
    text = yaml.safe_dump(sections)
    folder = Path(tempfile.gettempdir()) / "motus_test_params"
    folder.mkdir(exist_ok=True)
    params = folder / f"{hashlib.sha1(text.encode()).hexdigest()[:16]}.yaml"  # one file per distinct setting
    partial = params.with_suffix(f".{os.getpid()}.partial")
    partial.write_text(text)
    os.replace(partial, params)  # atomic: a concurrent test run never reads a half-written file
    return [
        "-m",
        "motus_ros.server",
        *extra,
        "--ros-args",
        "--params-file",
        str(SERVER_PARAMS),
        "--params-file",
        str(params),
        *ros_args,
    ]


def sim_command(*ros_args: str) -> list[str]:
    return ["-m", "motus_ros.sim.aloha_sim_node", *(["--ros-args", *ros_args] if ros_args else [])]


class Spinner:
    """A node spun by its own executor on a background thread (drivers, recorders), so its callbacks keep running
    while the test blocks on calls."""

    def __init__(self, name: str, period_s: float = 0.02) -> None:
        import threading

        from rclpy.executors import SingleThreadedExecutor

        self.node = Node(name)
        self.period_s = period_s
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set():
            self.executor.spin_once(timeout_sec=self.period_s)

    def close(self) -> None:
        self._stop.set()
        self.thread.join(timeout=5)
        self.executor.remove_node(self.node)
        self.node.destroy_node()


class SensorThread(Spinner):
    """Runs FakeSensors on their own node and executor in a background thread, so the streams keep flowing while
    the test blocks on calls."""

    def __init__(self, profile, rate_hz: float = 15.0, node_name: str = "fake_robot_drivers") -> None:
        super().__init__(node_name, period_s=0.05)
        self.sensors = FakeSensors(self.node, profile, rate_hz)


def start_process(args: list[str], ready_line: str, timeout: float = 120.0):
    """Start `python args...` (stdout+stderr piped) and wait for `ready_line`; for module-scoped fixtures (the
    conftest's spawn_process is per test). Raises RuntimeError with the child's output when it does not come."""
    import subprocess
    import threading

    process = subprocess.Popen(
        [sys.executable, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    seen: list[str] = []
    ready = threading.Event()

    def read() -> None:  # keep draining the pipe for the child's whole life (a full pipe would block it)
        for line in process.stdout:
            seen.append(line)
            if ready_line in line:
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not ready.wait(0.1):
        if process.poll() is not None or time.monotonic() > deadline:
            stop_process(process)
            raise RuntimeError(f"{args} did not print {ready_line!r}; output:\n{''.join(seen)}")
    process.output = seen  # type: ignore[attr-defined]
    return process


def stop_process(process, timeout: float = 20.0) -> int | None:
    """SIGTERM (a clean shutdown: nodes deactivate and hold), then SIGKILL if it hangs. Returns the exit code."""
    import subprocess

    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def wait_until_serving(client, timeout_s: float = 30.0, instruction: str = "pick") -> None:
    """Block until the server answers predict_actions on its latest observation (its sensor streams arrived)."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = client.predict_actions(instruction, steps=1)
        if response.error.code == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the server never had a usable observation: {response.error.message}")
        client.spin(0.3)
