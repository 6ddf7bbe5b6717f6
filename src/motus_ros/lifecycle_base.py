"""The lifecycle base the four Motus nodes share, and the state they share inside one server process.

What lives here:
- `SharedModel`: the one `MotusEngine` of the process, loaded on the first `configure` of any node and reused by
  the others (the model loads once); closed by the server at exit.
- `SharedObservations`: the latest synchronised camera + joint-state observation of the robot, fed by the server's
  one set of subscriptions (`server_context.SensorIntake`) and read by every node when a request leaves its
  observation empty ("use the latest").
- `MotusLifecycleNode`: a `LifecycleNode` that asks subclasses for `_setup()` (raises on failure), `_teardown()`
  (copes with partial state), `_on_activated()` / `_on_deactivated()`; it logs tracebacks itself because rclpy
  swallows exceptions raised in transition callbacks, and it provides the helpers every node needs (parameter
  declaration with descriptors, the request -> engine inputs conversion, error codes, frames -> messages).

Threading: services and actions run in a `ReentrantCallbackGroup` (`self.request_group`) and only submit to the
engine and wait on futures; the engine's single worker thread runs the model. Sensor callbacks run in their own
mutually exclusive group (`self.sensor_group`) so they never wait behind inference.
"""
from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from motus_model.embodiment import RobotProfile
from motus_msgs.msg import ErrorCode, Observation, Timing

from motus_ros import conversions
from motus_ros.observation_buffer import ObservationBuffer

logger = logging.getLogger(__name__)


class RequestError(Exception):
    """A request the node refuses, with the motus_msgs/ErrorCode to answer it with."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# ---------------------------------------------------------------------------------------------------------------
# State shared by the nodes of one process
# ---------------------------------------------------------------------------------------------------------------


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

    def attach(self, spec: ModelSpec) -> Any:
        """The engine for `spec`, loading it on first use; a node asking for a different model is an error."""
        with self._lock:
            if self._engine is None:
                self._engine = self._build_engine(spec)
                self._spec = spec
            elif spec != self._spec:
                raise ValueError(
                    f"all nodes of one server share one model: this node asks for {spec} but the server "
                    f"already runs {self._spec}; give every node the same checkpoint/preset parameters"
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
                raise ValueError(f"all nodes of one server drive one robot: this node asks for profile {name!r}, the server uses {self._name!r}")
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


# ---------------------------------------------------------------------------------------------------------------
# Request interfaces
# ---------------------------------------------------------------------------------------------------------------

# Services and action goal/result/cancel services: the default depth of 10 silently dropped the 11th and later
# requests of a burst (30 predict_actions -> 10 answers). With 1000 every request of a burst reaches its callback,
# which answers it (BUSY beyond `max_waiting_requests`).
REQUEST_QOS = QoSProfile(
    depth=1000, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
# How long an action server keeps a finished goal's result for late clients. rclpy's default is 900 s: with
# back-to-back requests whose results hold frames, that is hundreds of MB of results kept (memory growth in a soak).
RESULT_TIMEOUT_S = 60


def action_server_options(callback_group: Any) -> dict[str, Any]:
    """Keyword arguments of every ActionServer of the server: deep request queues, bounded result keeping."""
    return {
        "callback_group": callback_group, "goal_service_qos_profile": REQUEST_QOS, "result_service_qos_profile": REQUEST_QOS,
        "cancel_service_qos_profile": REQUEST_QOS, "result_timeout": RESULT_TIMEOUT_S}


# ---------------------------------------------------------------------------------------------------------------
# Parameter descriptors
# ---------------------------------------------------------------------------------------------------------------


def float_descriptor(description: str, low: float, high: float, read_only: bool = False) -> ParameterDescriptor:
    return ParameterDescriptor(
        description=description,
        read_only=read_only,
        floating_point_range=[FloatingPointRange(from_value=float(low), to_value=float(high), step=0.0)],
    )


def int_descriptor(description: str, low: int, high: int, read_only: bool = False) -> ParameterDescriptor:
    return ParameterDescriptor(
        description=description,
        read_only=read_only,
        integer_range=[IntegerRange(from_value=int(low), to_value=int(high), step=1)],
    )


def text_descriptor(description: str, read_only: bool = False) -> ParameterDescriptor:
    return ParameterDescriptor(description=description, read_only=read_only)


# Parameters every node declares (a params file sets them once for all nodes under `/**:`).
COMMON_PARAMETERS = {
    "profile": ("aloha_sim", text_descriptor("robot profile: a name under config/robots/ or a path to a profile YAML", read_only=True)),
    "autostart": (True, text_descriptor("configure and activate the node when the server starts", read_only=True)),
    "checkpoint": ("", text_descriptor("checkpoint folder (config.json + model.safetensors); empty = use `preset` with random weights", read_only=True)),
    "preset": ("motus-small", text_descriptor("model preset used when `checkpoint` is empty (development only: random weights)", read_only=True)),
    "device": ("cpu", text_descriptor("torch device of the model, e.g. cpu or cuda:0", read_only=True)),
    "seed": (0, int_descriptor("seed of the random initialisation when running a preset", 0, 2**31 - 1, read_only=True)),
    "max_batch": (4, int_descriptor("largest batch of same-mode requests the engine runs at once", 1, 64, read_only=True)),
    "default_steps": (0, int_descriptor("denoising steps when a request says 0; 0 = the model's default", 0, 1000)),
    # One request with 65,535 steps held the model for minutes (and the policy in hold): requests above the cap
    # are refused INVALID_REQUEST before they are queued.
    "max_denoising_steps": (100, int_descriptor("largest number of denoising steps a request may ask for", 1, 100000)),
    "request_timeout_s": (120.0, float_descriptor("how long a service waits for the model before answering INTERNAL", 1.0, 3600.0)),
}


# ---------------------------------------------------------------------------------------------------------------
# The base node
# ---------------------------------------------------------------------------------------------------------------


class MotusLifecycleNode(LifecycleNode):
    """A managed node of the Motus server. Subclasses implement `_setup`, `_teardown` and optionally the
    `_on_activated` / `_on_deactivated` hooks; they answer requests only while active (NOT_READY otherwise)."""

    def __init__(self, node_name: str, context: ServerContext, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self.shared = context
        self.profile: RobotProfile | None = None  # set by configure
        self.engine: Any = None
        self._active = threading.Event()
        self.last_error = ""  # the reason of the last failed transition (the server prints it when it gives up)
        self.request_group = ReentrantCallbackGroup()  # services/actions: submit + wait on engine futures
        self.sensor_group = MutuallyExclusiveCallbackGroup()  # camera/joint-state callbacks: never wait
        self.timer_group = MutuallyExclusiveCallbackGroup()  # periodic publishing
        for name, (default, descriptor) in COMMON_PARAMETERS.items():
            self.declare_parameter(name, default, descriptor)

    # --- lifecycle -------------------------------------------------------------------------------------------

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Attach to the shared model, validate the profile, create resources -> inactive (or unconfigured on failure)."""
        try:
            if int(self.param("default_steps")) > int(self.param("max_denoising_steps")):
                raise ValueError(f"default_steps ({self.param('default_steps')}) exceeds max_denoising_steps "
                                 f"({self.param('max_denoising_steps')}): lower default_steps or raise the cap")
            self.profile = self.shared.profile.attach(str(self.param("profile")))
            self.engine = self.shared.model.attach(self.model_spec())
            self._setup()
        except Exception as exc:  # rclpy would swallow it: log the reason and the traceback, then undo
            self.last_error = f"{self.get_name()}: configure failed: {exc}"
            self.get_logger().error(f"configure failed: {exc}\n{traceback.format_exc()}")
            self._safe_teardown()
            self.engine = None
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info("configured")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Start publishing and answering requests -> active."""
        try:
            self._on_activated()
        except Exception as exc:
            self.last_error = f"{self.get_name()}: activate failed: {exc}"
            self.get_logger().error(f"activate failed: {exc}\n{traceback.format_exc()}")
            return TransitionCallbackReturn.FAILURE
        self._active.set()
        self.get_logger().info("active")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop answering requests; the policy node holds the robot -> inactive."""
        self._active.clear()
        try:
            self._on_deactivated()
        except Exception as exc:
            self.get_logger().error(f"deactivate failed: {exc}\n{traceback.format_exc()}")
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info("inactive")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release what configure created -> unconfigured."""
        self._active.clear()
        self._safe_teardown()
        self.engine = None
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release everything -> finalized."""
        if self._active.is_set():
            self._active.clear()
            try:
                self._on_deactivated()
            except Exception as exc:
                self.get_logger().error(f"deactivate during shutdown failed: {exc}")
        self._safe_teardown()
        self.engine = None
        return super().on_shutdown(state)

    def _safe_teardown(self) -> None:
        try:
            self._teardown()
        except Exception as exc:
            self.get_logger().error(f"teardown failed: {exc}\n{traceback.format_exc()}")

    # Hooks for subclasses.
    def _setup(self) -> None:
        """Create subscriptions/publishers/timers and validate parameters; raise on any failure."""

    def _teardown(self) -> None:
        """Destroy what `_setup` created; must cope with `_setup` having failed half-way."""

    def _on_activated(self) -> None:
        """Called on activate, before requests are accepted."""

    def _on_deactivated(self) -> None:
        """Called on deactivate and shutdown, after requests stop being accepted."""

    @property
    def is_active(self) -> bool:
        return self._active.is_set()

    # --- parameters --------------------------------------------------------------------------------------------

    def model_spec(self) -> ModelSpec:
        return ModelSpec(
            checkpoint=str(self.get_parameter("checkpoint").value),
            preset=str(self.get_parameter("preset").value),
            device=str(self.get_parameter("device").value),
            seed=int(self.get_parameter("seed").value),
            max_batch=int(self.get_parameter("max_batch").value),
        )

    def param(self, name: str) -> Any:
        return self.get_parameter(name).value

    def declare_optional_bool(self, name: str, description: str) -> None:
        """A bool parameter whose absence means "use the default from the robot profile"."""
        self.declare_parameter(name, Parameter.Type.BOOL, ParameterDescriptor(description=description))

    def optional_param(self, name: str, default: Any) -> Any:
        from rclpy.exceptions import ParameterUninitializedException

        try:
            value = self.get_parameter(name).value
        except ParameterUninitializedException:
            return default
        return default if value is None else value

    # --- requests --------------------------------------------------------------------------------------------

    def now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def require_active(self) -> None:
        if not self.is_active or self.engine is None:
            raise RequestError(ErrorCode.NOT_READY, f"node {self.get_name()} is not active (configure and activate it first)")

    def steps_for(self, requested: int) -> int | None:
        """Denoising steps for a request: the request's, else the node parameter's, else the model default (None).
        More than `max_denoising_steps` is refused (INVALID_REQUEST)."""
        steps = int(requested) or int(self.param("default_steps"))
        cap = int(self.param("max_denoising_steps"))
        if steps > cap:
            raise RequestError(ErrorCode.INVALID_REQUEST, f"steps: at most {cap} denoising steps (parameter "
                               f"max_denoising_steps), got {steps}")
        return steps if steps > 0 else None

    def check_instruction(self, instruction: str) -> str:
        """The instruction, or RequestError INVALID_REQUEST when it is longer than `max_instruction_chars` or than
        the model's text encoder takes (its token limit, checked with the tokenizer only)."""
        return check_instruction(instruction, int(self.param("max_instruction_chars")), self.engine)

    def check_joint_state(self, state: np.ndarray, what: str = "observation") -> np.ndarray:
        """`state` [D] robot units, or RequestError INVALID_REQUEST when outside the profile's physical range."""
        from motus_ros.safety import physical_range_problem

        problem = physical_range_problem(self.profile, state)
        if problem:
            raise RequestError(ErrorCode.INVALID_REQUEST, f"bad {what}: {problem}")
        return state

    @staticmethod
    def seed_for(requested: int) -> int | None:
        return None if int(requested) < 0 else int(requested)

    def observation_inputs(self, msg: Observation | None) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """(images role -> HxWx3 uint8 RGB, state in ROBOT units) from a request's observation, or the latest one
        the server holds when the message has no images. Map the state with profile.robot_to_model for the model."""
        if msg is None or len(msg.images) == 0:
            latest, reason = self.shared.observations.latest(self.now_s())
            if latest is None:
                raise RequestError(ErrorCode.NO_OBSERVATION, f"no usable latest observation: {reason}")
            return dict(latest.images), self.check_joint_state(np.asarray(latest.state, dtype=np.float64), "latest observation")
        try:
            images, state = conversions.observation_to_inputs(msg, self.profile)
        except ValueError as exc:
            raise RequestError(ErrorCode.INVALID_REQUEST, f"bad observation: {exc}") from exc
        return images, self.check_joint_state(np.asarray(state, dtype=np.float64))

    def images_of(self, msg: Observation, what: str) -> dict[str, np.ndarray]:
        """Camera role -> HxWx3 uint8 RGB of an observation that must hold every camera of the profile (no joint
        state needed: future frames)."""
        roles = list(msg.camera_names)
        if len(roles) != len(msg.images):
            raise RequestError(ErrorCode.INVALID_REQUEST, f"{what}: one camera name per image expected, got {len(roles)} names and {len(msg.images)} images")
        if sorted(roles) != sorted(self.profile.camera_roles):
            raise RequestError(ErrorCode.INVALID_REQUEST, f"{what}: expected cameras {self.profile.camera_roles}, got {roles}")
        images = {}
        for role, image in zip(roles, msg.images):
            try:
                images[role] = conversions.image_to_numpy(image)
            except ValueError as exc:
                raise RequestError(ErrorCode.INVALID_REQUEST, f"{what}: camera {role!r}: {exc}") from exc
        return images

    def run_request(self, request: Any, progress: Callable[[int, int], None] | None = None,
                    should_cancel: Callable[[], bool] | None = None):
        """Submit `request` to the engine and wait for it (from a service/action callback); at most
        `max_waiting_requests` wait at once across the server, the others are answered BUSY."""
        slots = self.shared.request_slots
        if not slots.acquire(blocking=False):
            raise RequestError(ErrorCode.BUSY, f"{self.shared.max_waiting_requests} requests are already waiting for the model; retry later")
        try:
            return self.wait_result(self.engine.submit(request, progress=progress), should_cancel)
        finally:
            slots.release()

    def wait_result(self, future: Future, should_cancel: Callable[[], bool] | None = None, poll_s: float = 0.02):
        """Wait for an engine future from a request callback; cancels it when `should_cancel()` turns true.
        Returns the MotusResult or raises RequestError with the matching error code."""
        deadline = time.monotonic() + float(self.param("request_timeout_s"))
        while not future.done():
            if self.shared.closing.is_set() or not self.is_active:
                future.cancel()  # MotusFuture: also stops a running request between denoising steps
                raise RequestError(ErrorCode.NOT_READY, "the node was deactivated or the server is shutting down")
            if should_cancel is not None and should_cancel():
                future.cancel()  # MotusFuture: also stops a running request between denoising steps
                # The worker stops between denoising steps; wait for it to let go of the request.
                try:
                    future.result(timeout=float(self.param("request_timeout_s")))
                except BaseException:
                    pass
                raise RequestError(ErrorCode.CANCELLED, "cancelled")
            if time.monotonic() > deadline:
                future.cancel()  # MotusFuture: also stops a running request between denoising steps
                raise RequestError(ErrorCode.INTERNAL, f"the model did not answer within {self.param('request_timeout_s')} s")
            time.sleep(poll_s)
        return self.result_of(future)

    def result_of(self, future: Future):
        try:
            return future.result()
        except Exception as exc:
            raise request_error_of(exc, self.get_logger()) from exc

    def error_of(self, exc: BaseException) -> ErrorCode:
        """The ErrorCode message for an exception raised while serving a request (never re-raised: the node stays up)."""
        if isinstance(exc, RequestError):
            return ErrorCode(code=exc.code, message=exc.message)
        self.get_logger().error(f"unexpected failure: {exc!r}\n{''.join(traceback.format_exception(exc))}")
        return ErrorCode(code=ErrorCode.INTERNAL, message=f"unexpected failure: {exc!r} (see the server log)")

    @staticmethod
    def timing_of(result: Any, total_ms: float) -> Timing:
        timing_ms = dict(getattr(result, "timing_ms", {}) or {})
        return Timing(
            queue_ms=float(timing_ms.get("queue", 0.0)),
            preprocess_ms=float(timing_ms.get("preprocess", 0.0)),
            conditioning_ms=float(timing_ms.get("conditioning", 0.0)),
            sampling_ms=float(timing_ms.get("sampling", 0.0)),
            decode_ms=float(timing_ms.get("decode", 0.0)),
            total_ms=float(total_ms),
            denoising_steps=int(getattr(result, "steps", 0) or 0),
        )

    # --- model outputs -> messages -------------------------------------------------------------------------------

    def chunk_to_robot(self, actions_model: np.ndarray, state_robot: np.ndarray) -> np.ndarray:
        """[N, D] model-space chunk -> robot units, one action per control step (motus_model.policy.chunk_to_robot)."""
        from motus_model.policy import chunk_to_robot

        return chunk_to_robot(actions_model, state_robot, self.profile, int(self.engine.config.temporal.downsample_rate))

    def trajectory_of(self, actions_robot: np.ndarray):
        return conversions.actions_to_trajectory(
            actions_robot, self.profile.joint_names, 1.0 / float(self.profile.control_rate_hz), self.get_clock().now().to_msg()
        )

    def camera_roles(self) -> list[str]:
        return [camera.role for camera in self.profile.cameras]

    def split_frames(self, frames: np.ndarray) -> list[dict[str, np.ndarray]]:
        """[T, H, W, 3] uint8 composites -> per frame, camera role -> HxWx3 uint8 view."""
        from motus_model import preprocessing

        layout = preprocessing.CompositeLayout.from_config(self.engine.config)
        return [preprocessing.split_composite(np.ascontiguousarray(frame), layout) for frame in np.asarray(frames)]

    def frames_to_observations(self, frames: np.ndarray) -> list[Observation]:
        """Imagined composites -> one Observation per future frame with one image per camera role."""
        stamp = self.get_clock().now().to_msg()
        observations = []
        for views in self.split_frames(frames):
            msg = Observation()
            msg.header.stamp = stamp
            msg.camera_names = list(views)
            msg.images = [conversions.numpy_to_image(view, stamp, role) for role, view in views.items()]
            observations.append(msg)
        return observations

    def composite_images(self, frames: np.ndarray) -> list[Image]:
        stamp = self.get_clock().now().to_msg()
        return [conversions.numpy_to_image(np.ascontiguousarray(frame), stamp, "motus_composite") for frame in np.asarray(frames)]


def request_error_of(exc: BaseException, log: Any) -> RequestError:
    """The RequestError that answers a failed engine request (`log`: where an unexpected failure is reported)."""
    if isinstance(exc, RequestError):
        return exc
    if isinstance(exc, CancelledError):
        return RequestError(ErrorCode.CANCELLED, "cancelled")
    if isinstance(exc, ValueError):
        return RequestError(ErrorCode.INVALID_REQUEST, str(exc))
    if type(exc).__name__ == "SamplingCancelled":
        return RequestError(ErrorCode.CANCELLED, "cancelled between denoising steps")
    log.error(f"model failure: {exc!r}\n{''.join(traceback.format_exception(exc))}")
    return RequestError(ErrorCode.INTERNAL, f"model failure: {exc!r} (see the server log)")


def check_instruction(instruction: str, max_chars: int, engine: Any = None) -> str:
    """Reject instructions the model cannot take before they reach the queue: more than `max_chars` characters, or
    (with the engine) more tokens than its text encoder takes (TextConditioner.check: the tokenizer only)."""
    if len(instruction) > max_chars:
        raise RequestError(
            ErrorCode.INVALID_REQUEST, f"instruction too long: expected at most {max_chars} characters, got {len(instruction)}"
        )
    check = getattr(getattr(engine, "text", None), "check", None)
    if check is not None:
        try:
            check(instruction)
        except ValueError as exc:
            raise RequestError(ErrorCode.INVALID_REQUEST, str(exc)) from exc
    return instruction

