"""How a node answers a request with the model: validation, the engine call and its error vocabulary, and the
conversions between messages and the engine's inputs and outputs.

- `RequestError`: a refused request with the motus_msgs/ErrorCode to answer it with; `request_error_of` maps an
  engine failure onto that vocabulary.
- `REQUEST_QOS`, `action_server_options`: deep request queues, so every request of a burst gets an answer.
- `ModelRequests`: the mixin of every Motus node (steps and seed rules, instruction and joint-state checks, the
  latest observation or the request's own, waiting on the engine with a bound on waiting requests, results ->
  trajectories and images). It expects `param`, `engine`, `profile`, `shared`, `is_active` and `now_s` from the
  lifecycle base.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from typing import Any

import numpy as np
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from motus_msgs.msg import ErrorCode, Observation, Timing
from motus_ros import conversions


class RequestError(Exception):
    """A request the node refuses, with the motus_msgs/ErrorCode to answer it with."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# Services and action goal/result/cancel services: the default depth of 10 silently dropped the 11th and later
# requests of a burst (30 predict_actions -> 10 answers). With 1000 every request of a burst reaches its callback,
# which answers it (BUSY beyond `max_waiting_requests`).
REQUEST_QOS = QoSProfile(
    depth=1000,
    history=HistoryPolicy.KEEP_LAST,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)
# How long an action server keeps a finished goal's result for late clients. rclpy's default is 900 s: with
# back-to-back requests whose results hold frames, that is hundreds of MB of results kept (memory growth in a soak).
RESULT_TIMEOUT_S = 60


def action_server_options(callback_group: Any) -> dict[str, Any]:
    """Keyword arguments of every ActionServer of the server: deep request queues, bounded result keeping."""
    return {
        "callback_group": callback_group,
        "goal_service_qos_profile": REQUEST_QOS,
        "result_service_qos_profile": REQUEST_QOS,
        "cancel_service_qos_profile": REQUEST_QOS,
        "result_timeout": RESULT_TIMEOUT_S,
    }


class ModelRequests:
    """Request helpers of the Motus nodes (see the module docstring)."""

    last_request_ms = 0.0  # wall time of the last request this node waited for (diagnostics)

    def steps_for(self, requested: int) -> int | None:
        """Denoising steps for a request: the request's, else the node parameter's, else the model default (None).
        More than `max_denoising_steps` is refused (INVALID_REQUEST)."""
        steps = int(requested) or int(self.param("default_steps"))
        cap = int(self.param("max_denoising_steps"))
        if steps > cap:
            raise RequestError(
                ErrorCode.INVALID_REQUEST,
                f"steps: at most {cap} denoising steps (parameter max_denoising_steps), got {steps}",
            )
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
            return dict(latest.images), self.check_joint_state(
                np.asarray(latest.state, dtype=np.float64), "latest observation"
            )
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
            raise RequestError(
                ErrorCode.INVALID_REQUEST,
                f"{what}: one camera name per image expected, got {len(roles)} names and {len(msg.images)} images",
            )
        if sorted(roles) != sorted(self.profile.camera_roles):
            raise RequestError(
                ErrorCode.INVALID_REQUEST, f"{what}: expected cameras {self.profile.camera_roles}, got {roles}"
            )
        images = {}
        for role, image in zip(roles, msg.images):
            try:
                images[role] = conversions.image_to_numpy(image)
            except ValueError as exc:
                raise RequestError(ErrorCode.INVALID_REQUEST, f"{what}: camera {role!r}: {exc}") from exc
        return images

    def run_request(
        self,
        request: Any,
        progress: Callable[[int, int], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ):
        """Submit `request` to the engine and wait for it (from a service/action callback); at most
        `max_waiting_requests` wait at once across the server, the others are answered BUSY."""
        slots = self.shared.request_slots
        if not slots.acquire(blocking=False):
            raise RequestError(
                ErrorCode.BUSY,
                f"{self.shared.max_waiting_requests} requests are already waiting for the model; retry later",
            )
        started = time.monotonic()
        try:
            return self.wait_result(self.engine.submit(request, progress=progress), should_cancel)
        finally:
            slots.release()
            self.last_request_ms = (time.monotonic() - started) * 1e3

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
                raise RequestError(
                    ErrorCode.INTERNAL, f"the model did not answer within {self.param('request_timeout_s')} s"
                )
            time.sleep(poll_s)
        return self.result_of(future)

    def result_of(self, future: Future):
        try:
            return future.result()
        except Exception as exc:
            raise request_error_of(exc, self.get_logger()) from exc

    def error_of(self, exc: BaseException) -> ErrorCode:
        """The ErrorCode message for an exception raised while serving a request (never re-raised: the node stays
        up)."""
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

        return chunk_to_robot(
            actions_model, state_robot, self.profile, int(self.engine.config.temporal.downsample_rate)
        )

    def trajectory_of(self, actions_robot: np.ndarray):
        return conversions.actions_to_trajectory(
            actions_robot,
            self.profile.joint_names,
            1.0 / float(self.profile.control_rate_hz),
            self.get_clock().now().to_msg(),
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
        return [
            conversions.numpy_to_image(np.ascontiguousarray(frame), stamp, "motus_composite")
            for frame in np.asarray(frames)
        ]


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
            ErrorCode.INVALID_REQUEST,
            f"instruction too long: expected at most {max_chars} characters, got {len(instruction)}",
        )
    check = getattr(getattr(engine, "text", None), "check", None)
    if check is not None:
        try:
            check(instruction)
        except ValueError as exc:
            raise RequestError(ErrorCode.INVALID_REQUEST, str(exc)) from exc
    return instruction
