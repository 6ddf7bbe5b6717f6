"""What the nodes of one server process share: the model, the robot profile, the latest observation, and the one
sensor intake that feeds it.

- `SharedModel`: the one `MotusEngine` of the process, loaded on the first `configure` of any node and reused by
  the others (the model loads once); closed by the server at exit.
- `SharedProfile`: the robot profile, loaded once.
- `SharedObservations`: the latest synchronised camera + joint-state observation of the robot, read by every node
  when a request leaves its observation empty ("use the latest").
- `ServerContext`: the three above, and the bound on requests waiting for the model.
- `SensorIntake`: a plain node (`sensors`) that the server creates before the lifecycle nodes. It subscribes the
  profile's cameras (sensor_msgs/Image, or CompressedImage on `<topic>/compressed` for a camera declared
  `transport: compressed`, decoded here once) and joint-state topics once, checks and converts each message
  (encoding, size, joint names,
  NaN, future stamps, a joint state outside the profile's physical range) and keeps the latest synchronised
  observation in the shared `ObservationBuffer`, with the reason of the last rejected message per topic. The
  policy, world-model, IDM and imagination nodes only read it, so any of them works alone.

Parameters of `sensors` (config/motus_server.yaml): `max_skew_s`, `max_age_s`, `joint_state_max_age_periods`,
`future_tolerance_s`, `stamp_source`, and the global `profile`. Its callbacks run in their own mutually exclusive
group: they never wait on inference.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image, JointState

from motus_model.embodiment import RobotProfile
from motus_ros import conversions
from motus_ros.observation_buffer import ObservationBuffer, make_observation_buffer
from motus_ros.parameters import COMMON_PARAMETERS, float_descriptor, text_descriptor
from motus_ros.safety import physical_range_problem


@dataclass(frozen=True)
class ModelSpec:
    """Which model the server runs: a checkpoint folder, or a preset with random weights (development only)."""

    checkpoint: str
    preset: str
    device: str
    seed: int
    max_batch: int

    def describe(self) -> str:
        return f"checkpoint {self.checkpoint!r}" if self.checkpoint else f"preset {self.preset!r} (random weights)"


class SharedModel:
    """The process's one MotusEngine: loaded by the first node that configures, attached to by the others."""

    def __init__(self, build_engine: Callable[[ModelSpec], Any]) -> None:
        self._build_engine = build_engine
        self._lock = threading.Lock()
        self._engine: Any = None
        self._spec: ModelSpec | None = None

    def attach(self, spec: ModelSpec, profile: RobotProfile | None = None) -> Any:
        """The engine for `spec`, loading it on first use; a node asking for a different model is an error, and so
        is a `profile` whose camera roles are not the model's camera layout (its config.cameras)."""
        with self._lock:
            if self._engine is None:
                self._engine = self._build_engine(spec)
                self._spec = spec
            elif spec != self._spec:
                raise ValueError(
                    f"all nodes of one server share one model: this node asks for {spec} but the server "
                    f"already runs {self._spec}; give every node the same checkpoint/preset parameters"
                )
            if profile is not None:
                cameras = self._engine.config.cameras
                if cameras.mismatch(profile.camera_roles):
                    raise ValueError(
                        f"robot profile {profile.name!r} has cameras {profile.camera_roles} but {spec.describe()} "
                        f"takes {cameras.roles} (tiling {cameras.tiling}): give the profile exactly these camera "
                        "roles, or serve a checkpoint trained on the profile's cameras"
                    )
            return self._engine

    @property
    def engine(self) -> Any:
        return self._engine

    def close(self) -> None:
        with self._lock:
            if self._engine is not None:
                self._engine.close()
                self._engine = None


class SharedObservations:
    """The latest robot observation, written by the server's SensorIntake, read by every node."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buffer: ObservationBuffer | None = None
        self.rejected: dict[str, str] = {}  # topic -> reason of the last rejected message (bad encoding, NaN...)

    def set_buffer(self, buffer: ObservationBuffer | None) -> None:
        with self._lock:
            self._buffer = buffer
            self.rejected = {}

    @property
    def buffer(self) -> ObservationBuffer | None:
        return self._buffer

    def latest(self, now_s: float):
        """(SyncedObservation, "") or (None, reason) when there is no usable observation."""
        buffer = self._buffer
        if buffer is None:
            return None, "no sensor intake: the server has not subscribed the robot's sensors"
        ok, reason = buffer.status(now_s)
        if not ok:
            return None, reason
        observation = buffer.latest(now_s)
        if observation is None:
            return None, "no synchronised observation yet"
        return observation, ""


class SharedProfile:
    """The robot profile of the server, loaded and validated by the first node that configures."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._profile: RobotProfile | None = None
        self._name = ""

    def attach(self, name: str) -> RobotProfile:
        from motus_ros.profiles import load_profile

        with self._lock:
            if self._profile is None:
                self._profile = load_profile(name)  # raises with the list of known profiles on a bad name
                self._name = name
            elif name != self._name:
                raise ValueError(
                    f"all nodes of one server drive one robot: this node asks for profile {name!r}, "
                    f"the server uses {self._name!r}"
                )
            return self._profile


@dataclass
class ServerContext:
    """What the four nodes of a server share: the model, the robot profile and the latest observation."""

    model: SharedModel
    profile: SharedProfile = field(default_factory=SharedProfile)
    observations: SharedObservations = field(default_factory=SharedObservations)
    # Requests that may wait on the model at once (each holds an executor thread while it waits); more get BUSY,
    # so the control timer and the sensor callbacks always find a free thread.
    max_waiting_requests: int = 4
    request_slots: threading.BoundedSemaphore = field(init=False)
    # Set when the server shuts down: waiting requests cancel their model work and return at once.
    closing: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.request_slots = threading.BoundedSemaphore(self.max_waiting_requests)


STAMP_SOURCES = ("header", "receive")


class SensorIntake(Node):
    """Node `sensors`: subscribes the robot profile's sensors once and feeds the server's shared observation."""

    def __init__(self, context: ServerContext, node_name: str = "sensors", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.shared = context
        default, descriptor = COMMON_PARAMETERS["profile"]
        self.declare_parameter("profile", default, descriptor)
        self.declare_parameter(
            "max_skew_s",
            0.3,
            float_descriptor(
                "largest stamp difference between the cameras and joint states of one observation", 0.0, 10.0
            ),
        )
        self.declare_parameter(
            "max_age_s", 0.5, float_descriptor("hold when the newest observation is older than this", 0.01, 60.0)
        )
        # Joint states arrive at the control rate: a driver loss must hold within a few control periods.
        self.declare_parameter(
            "joint_state_max_age_periods",
            3.0,
            float_descriptor(
                "hold when the joint state is older than this many control periods "
                "(its own bound, apart from max_age_s)",
                1.0,
                1000.0,
            ),
        )
        self.declare_parameter(
            "future_tolerance_s",
            0.05,
            float_descriptor(
                "largest lead of a message stamp over this node's clock (stamp_source header); "
                "beyond it the message is refused",
                0.0,
                10.0,
            ),
        )
        self.declare_parameter(
            "stamp_source",
            "receive",
            text_descriptor(
                "observation time: header (message stamps) | receive (arrival time at this node)", read_only=True
            ),
        )
        self.stamp_source = str(self.get_parameter("stamp_source").value)
        if self.stamp_source not in STAMP_SOURCES:
            raise ValueError(
                f"parameter sensors.stamp_source must be one of {STAMP_SOURCES}, got {self.stamp_source!r}"
            )
        self.profile = context.profile.attach(str(self.get_parameter("profile").value))
        self._joint_messages: dict[str, JointState] = {}
        self.buffer = make_observation_buffer(
            self.profile.camera_roles,
            float(self.get_parameter("max_skew_s").value),
            float(self.get_parameter("max_age_s").value),
            max_state_age_s=float(self.get_parameter("joint_state_max_age_periods").value)
            / float(self.profile.control_rate_hz),
            future_tolerance_s=float(self.get_parameter("future_tolerance_s").value),
        )
        context.observations.set_buffer(self.buffer)
        group = MutuallyExclusiveCallbackGroup()
        for camera in self.profile.cameras:
            compressed = camera.transport == "compressed"
            self.create_subscription(
                CompressedImage if compressed else Image,
                camera.transport_topic,
                lambda msg, camera=camera: self._on_image(camera, msg),
                qos_profile_sensor_data,
                callback_group=group,
            )
        for topic in self.profile.joint_state_topics:
            self.create_subscription(
                JointState,
                topic,
                lambda msg, topic=topic: self._on_joint_state(topic, msg),
                qos_profile_sensor_data,
                callback_group=group,
            )
        self.get_logger().info(
            f"robot {self.profile.name!r}: subscribed {len(self.profile.cameras)} cameras "
            f"({', '.join(camera.transport_topic for camera in self.profile.cameras)}) "
            f"and {', '.join(self.profile.joint_state_topics)}"
        )

    def now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _stamp_s(self, header: Any) -> float:
        if self.stamp_source == "header":
            return header.stamp.sec + header.stamp.nanosec * 1e-9
        return self.now_s()

    def _on_image(self, camera: Any, msg: Image | CompressedImage) -> None:
        shape = (int(camera.height), int(camera.width))
        try:
            if isinstance(msg, CompressedImage):  # decoded once, here: every node reads the decoded array
                image = conversions.compressed_to_numpy(msg, expected_shape=shape)
            else:
                image = conversions.image_to_numpy(msg, expected_encoding=camera.encoding, expected_shape=shape)
            self.buffer.update_image(camera.role, image, self._stamp_s(msg.header), received_s=self.now_s())
        except ValueError as exc:  # wrong encoding or size, undecodable, or stamped in the future
            self._reject(camera.transport_topic, str(exc))
            return
        self.shared.observations.rejected.pop(camera.transport_topic, None)

    def _on_joint_state(self, topic: str, msg: JointState) -> None:
        self._joint_messages[topic] = msg
        if len(self._joint_messages) < len(self.profile.joint_state_topics):
            return  # per-arm topics: wait until every arm has reported once
        messages = [self._joint_messages[name] for name in self.profile.joint_state_topics]
        try:
            q = conversions.joint_state_to_vector(
                messages, self.profile.joint_names, prefixes=self.profile.joint_name_prefixes
            )
            problem = physical_range_problem(self.profile, q)  # finite but absurd (1e30) is bad input too
            if problem:
                raise ValueError(problem)
            self.buffer.update_joint_state(q, self._stamp_s(msg.header), received_s=self.now_s())
        except ValueError as exc:
            self._reject(topic, str(exc))
            return
        self.shared.observations.rejected.pop(topic, None)

    def _reject(self, topic: str, reason: str) -> None:
        self.shared.observations.rejected[topic] = reason
        self.get_logger().warning(f"rejected a message on {topic}: {reason}", throttle_duration_sec=2.0)
