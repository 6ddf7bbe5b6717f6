"""The recorder node: episodes from the live robot topics straight into a LeRobot dataset (`~/record_episode`).

A `RecordEpisode` goal (motus_msgs/action/RecordEpisode.action) starts one episode: instruction = the task string,
optional dataset folder (else the `dataset` parameter), max duration and fps. While it runs, a timer at `fps` (the
profile's control rate by default) on the node's clock takes one frame per tick from the server's shared
observation (the SensorIntake's buffer: the latest image of every camera and the latest joint state, with its
missing/stale/skew checks) and the latest command heard on the profile's command topics:

- observation.state: the joint state, action: the command, both in model space (profile.robot_to_model), decoded
  by motus_model.data.bag_converter.CommandDecoder (the one decoder of every command interface, `motus
  convert-bag` uses it too) from the topics and message types motus_ros.command_adapters publishes;
- a frame before the first command takes the next frame's state as its action (the last frame its own state),
  and the result counts them (frames_without_command): with nothing commanding the robot on the profile's
  command topics (a policy in dry run, a teleoperation that drives the arms another way) the action is where the
  arm went next;
- a tick without a usable observation records no frame (no guessed frame): it is counted with its reason
  (dropped_frames, drop_reasons), as is a tick the timer missed (a busy CPU).

Frames are spooled to disk (a hidden folder beside the dataset, one raw file per camera) rather than held in
memory, and written when the episode ends through LeRobotDatasetWriter, which works on a hidden copy and renames
it into place: the dataset is appended to atomically, an interrupted recording leaves it as it was. Ending: the
max duration (saved, `completed`), a cancel (saved, `stopped`; `discarded` with discard_on_cancel), deactivation or
server shutdown (`aborted`, nothing written). One recording at a time: another goal meanwhile is answered BUSY.
"""

from __future__ import annotations

import math
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.qos import QoSProfile, ReliabilityPolicy

from motus_model.data.bag_converter import CommandDecoder, camera_key
from motus_model.data.lerobot import LeRobotDatasetWriter
from motus_msgs.action import RecordEpisode
from motus_msgs.msg import ErrorCode
from motus_ros.command_adapters import command_message_types
from motus_ros.lifecycle_base import MotusLifecycleNode
from motus_ros.parameters import float_descriptor, text_descriptor
from motus_ros.reasons import ReasonTally
from motus_ros.requests import RequestError, action_server_options
from motus_ros.server_context import ServerContext

TERMINATION_COMPLETED = RecordEpisode.Result.TERMINATION_COMPLETED
TERMINATION_STOPPED = RecordEpisode.Result.TERMINATION_STOPPED
TERMINATION_DISCARDED = RecordEpisode.Result.TERMINATION_DISCARDED
TERMINATION_NO_FRAMES = RecordEpisode.Result.TERMINATION_NO_FRAMES
TERMINATION_ABORTED = RecordEpisode.Result.TERMINATION_ABORTED
TERMINATION_ERROR = RecordEpisode.Result.TERMINATION_ERROR

MAIN_DROP_REASONS = 3
MISSED_TICK = "missed tick: the recorder's timer ran late (a busy CPU)"
# Best effort: matches reliable and best-effort command publishers alike; only the latest command matters.
COMMAND_SUBSCRIPTION_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)


def _type_name(message_class: type) -> str:
    """`std_msgs/msg/Float64MultiArray` for the class (the form CommandDecoder and rosbags use)."""
    return f"{message_class.__module__.split('.')[0]}/msg/{message_class.__name__}"


class EpisodeSpool:
    """The frames of the episode being recorded, on disk: one raw uint8 file per camera plus state and command rows
    in memory (a minute of three 240x320 cameras at 50 Hz is 2 GB: too much to hold in RAM)."""

    def __init__(self, folder: Path, roles: list[str]) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=False)
        self.roles = list(roles)
        self._files = {role: open(folder / f"{role}.raw", "wb") for role in self.roles}  # noqa: SIM115
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.states: list[np.ndarray] = []
        self.commands: list[np.ndarray | None] = []

    def __len__(self) -> int:
        return len(self.states)

    def add(self, images: dict[str, np.ndarray], state: np.ndarray, command: np.ndarray | None) -> str:
        """Append one frame; returns "" or why it was refused (an image size that changed mid-episode)."""
        for role in self.roles:
            shape = self.shapes.setdefault(role, tuple(images[role].shape))
            if tuple(images[role].shape) != shape:
                return f"camera {role} changed size mid-episode: {shape} then {tuple(images[role].shape)}"
        for role in self.roles:
            self._files[role].write(np.ascontiguousarray(images[role], dtype=np.uint8).tobytes())
        self.states.append(np.asarray(state, dtype=np.float64).copy())
        self.commands.append(None if command is None else command.copy())
        return ""

    def frames(self) -> dict[str, np.ndarray]:
        """role -> uint8 [T, H, W, 3], read from the spool files (memory-mapped, not loaded)."""
        for handle in self._files.values():
            handle.flush()
        return {
            role: np.memmap(
                self.folder / f"{role}.raw", dtype=np.uint8, mode="r", shape=(len(self), *self.shapes[role])
            )
            for role in self.roles
        }

    def remove(self) -> None:
        for handle in self._files.values():
            handle.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def actions_with_fallback(states: np.ndarray, commands: list[np.ndarray | None]) -> tuple[np.ndarray, int]:
    """Each frame's action: its command, or (no command seen yet) the next frame's state, the last frame's own.
    Returns (actions [T, J], frames without a command)."""
    actions = np.empty_like(states)
    missing = 0
    for index, command in enumerate(commands):
        if command is None:
            missing += 1
            actions[index] = states[min(index + 1, len(states) - 1)]
        else:
            actions[index] = command
    return actions, missing


@dataclass
class Recording:
    """One episode being recorded (shared by the goal's thread and the sampling timer)."""

    goal_id: bytes
    instruction: str
    fps: float
    max_duration_s: float
    spool: EpisodeSpool
    writer: LeRobotDatasetWriter
    started_s: float  # node clock
    started_wall_s: float = field(default_factory=time.monotonic)
    last_tick: int = -1
    dropped: int = 0
    drops: ReasonTally = field(default_factory=ReasonTally)  # dropped ticks per kind of reason
    last_drop_reason: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopped: bool = False

    def drop(self, reason: str, ticks: int = 1) -> None:
        self.dropped += ticks
        self.drops.add(reason, ticks)
        self.last_drop_reason = reason

    def drop_reasons(self) -> list[str]:
        return self.drops.main(MAIN_DROP_REASONS)


class RecorderNode(MotusLifecycleNode):
    """Lifecycle node `recorder`: the RecordEpisode action (see the module docstring)."""

    def __init__(self, context: ServerContext, node_name: str = "recorder", **kwargs: Any) -> None:
        super().__init__(node_name, context, **kwargs)
        self.declare_parameter(
            "dataset",
            "",
            text_descriptor(
                "dataset folder a goal records into when it names none (created, or appended to); "
                "empty = every goal must name one"
            ),
        )
        self.declare_parameter(
            "max_episode_s",
            300.0,
            float_descriptor("longest recording when a goal's max_duration_s is 0 (seconds)", 0.1, 86400.0),
        )
        self.declare_parameter(
            "feedback_rate_hz", 2.0, float_descriptor("rate of the RecordEpisode feedback", 0.1, 50.0)
        )
        self._recording: Recording | None = None
        self._busy = threading.Lock()  # held from a goal's start until its episode is written or dropped
        self._command_lock = threading.Lock()
        self._latest_command: np.ndarray | None = None  # robot units, profile order
        self._command_seen_s = -math.inf  # node clock time of the latest complete command
        self._decoder: CommandDecoder | None = None
        self._subscriptions: list[Any] = []
        self._timer: Any = None
        self._sample_group = MutuallyExclusiveCallbackGroup()
        self._command_group = MutuallyExclusiveCallbackGroup()
        self._action_server = ActionServer(
            self,
            RecordEpisode,
            "~/record_episode",
            self._execute,
            goal_callback=lambda goal: GoalResponse.ACCEPT,
            cancel_callback=lambda handle: CancelResponse.ACCEPT,
            **action_server_options(self.request_group),
        )

    # --- lifecycle -------------------------------------------------------------------------------------------

    def _setup(self) -> None:
        if self.shared.observations.buffer is None:
            raise ValueError("no sensor intake: the server subscribes the robot's sensors before configuring nodes")
        try:
            classes = command_message_types(self.profile)
        except ImportError as error:  # e.g. interbotix without interbotix_xs_msgs: record, actions = next states
            self.get_logger().warning(f"commands cannot be heard ({error}); recorded actions will be next states")
            return
        self._decoder = CommandDecoder(self.profile, {topic: _type_name(cls) for topic, cls in classes.items()})
        for topic, cls in classes.items():
            self._subscriptions.append(
                self.create_subscription(
                    cls,
                    topic,
                    lambda message, topic=topic: self._on_command(topic, message),
                    COMMAND_SUBSCRIPTION_QOS,
                    callback_group=self._command_group,
                )
            )
        self.get_logger().info(f"listening for commands on {sorted(classes)}")

    def _teardown(self) -> None:
        for subscription in self._subscriptions:
            self.destroy_subscription(subscription)
        self._subscriptions = []
        self._decoder = None
        with self._command_lock:
            self._latest_command = None

    # --- commands --------------------------------------------------------------------------------------------

    def _on_command(self, topic: str, message: Any) -> None:
        decoder = self._decoder
        if decoder is None:
            return
        try:
            command = decoder.update(topic, message)
        except ValueError as error:  # not a command of this robot: ignored, never recorded
            self.get_logger().warning(f"ignored a command on {topic}: {error}", throttle_duration_sec=2.0)
            return
        if command is not None and np.all(np.isfinite(command)):
            with self._command_lock:
                self._latest_command = command
                self._command_seen_s = self.now_s()

    # --- the action ------------------------------------------------------------------------------------------

    def _check_goal(self, goal: Any) -> tuple[Path, float, float]:
        """(dataset folder, fps, max duration) of a valid goal, else RequestError."""
        if not goal.instruction.strip():
            raise RequestError(ErrorCode.INVALID_REQUEST, "instruction is empty: it becomes the episode's task")
        for name in ("max_duration_s", "fps"):
            value = float(getattr(goal, name))
            if not math.isfinite(value) or value < 0:
                raise RequestError(ErrorCode.INVALID_REQUEST, f"{name} must be finite and >= 0, got {value}")
        folder = goal.dataset or str(self.param("dataset"))
        if not folder:
            raise RequestError(
                ErrorCode.INVALID_REQUEST, "no dataset folder: name one in the goal or set the recorder's `dataset`"
            )
        fps = float(goal.fps) or float(self.profile.control_rate_hz)
        max_duration_s = float(goal.max_duration_s) or float(self.param("max_episode_s"))
        return Path(folder).expanduser().resolve(), fps, max_duration_s

    def _open_writer(self, root: Path, fps: float) -> LeRobotDatasetWriter:
        """The writer for `root` (new or appended to), refusing at once a dataset the episode could not join."""
        try:
            writer = LeRobotDatasetWriter(
                root,
                fps=fps,
                camera_keys=tuple(camera_key(role) for role in self.profile.camera_roles),
                robot_type=self.profile.name,
                state_dim=len(self.profile.joint_names),
                action_dim=len(self.profile.joint_names),
                append=True,
            )
        except (ValueError, FileExistsError) as error:
            raise RequestError(ErrorCode.INVALID_REQUEST, f"dataset {root}: {error}") from None
        for camera in self.profile.cameras:
            shape = writer.frame_shapes.get(camera_key(camera.role))
            if shape is not None and shape != (camera.height, camera.width, 3):
                writer.abort()
                raise RequestError(
                    ErrorCode.INVALID_REQUEST,
                    f"dataset {root}: its {camera.role} frames are {shape[:2]}, the robot's {camera.height}x"
                    f"{camera.width}; record into another dataset",
                )
        return writer

    def _execute(self, goal_handle: Any) -> RecordEpisode.Result:
        goal = goal_handle.request
        result = RecordEpisode.Result(episode_index=-1)

        def finish(code: int, message: str, termination: str) -> RecordEpisode.Result:
            result.error = ErrorCode(code=code, message=message)
            result.termination = termination
            if termination == TERMINATION_COMPLETED:
                goal_handle.succeed()
            elif termination in (TERMINATION_STOPPED, TERMINATION_DISCARDED):
                goal_handle.canceled()
            else:
                goal_handle.abort()
            self.get_logger().info(
                f"recording ended: {termination} ({result.frames} frames, {result.dropped_frames} dropped) {message}"
            )
            return result

        if not self._busy.acquire(blocking=False):
            return finish(ErrorCode.BUSY, "another episode is being recorded: stop it first", TERMINATION_ERROR)
        try:
            try:
                self.require_active()
                root, fps, max_duration_s = self._check_goal(goal)
                result.dataset = str(root)
                writer = self._open_writer(root, fps)
            except RequestError as error:
                return finish(error.code, error.message, TERMINATION_ERROR)
            spool_folder = root.parent / f".{root.name}.recording-{uuid.uuid4().hex[:8]}"
            recording = Recording(
                bytes(goal_handle.goal_id.uuid),
                goal.instruction,
                fps,
                max_duration_s,
                EpisodeSpool(spool_folder, self.profile.camera_roles),
                writer,
                started_s=self.now_s(),
            )
            try:
                termination, code, message = self._record(goal_handle, goal, recording)
                result.frames = len(recording.spool)
                result.dropped_frames = recording.dropped
                result.drop_reasons = recording.drop_reasons()
                result.duration_s = float(time.monotonic() - recording.started_wall_s)
                if termination in (TERMINATION_COMPLETED, TERMINATION_STOPPED):
                    if not len(recording.spool):
                        reasons = "; ".join(result.drop_reasons) or "no tick"
                        termination, code = TERMINATION_NO_FRAMES, ErrorCode.NO_OBSERVATION
                        message = f"no usable observation during the recording ({reasons}); nothing was written"
                    else:
                        try:
                            result.episode_index, result.frames_without_command = self._save(recording)
                        except Exception as error:  # the writer left the dataset as it was
                            self.get_logger().error(f"writing the episode into {root} failed: {error!r}")
                            termination, code = TERMINATION_ERROR, ErrorCode.INTERNAL
                            message = f"writing the episode into {root} failed: {error}; the dataset is as before"
                return finish(code, message, termination)
            finally:
                recording.writer.abort()  # no-op after finalize; drops the hidden copy otherwise
                recording.spool.remove()
        finally:
            self._recording = None
            self._busy.release()

    def _record(self, goal_handle: Any, goal: Any, recording: Recording) -> tuple[str, int, str]:
        """Sample until the limit, a cancel or deactivation; returns (termination, error code, message)."""
        self._recording = recording
        self._timer = self.create_timer(1.0 / recording.fps, self._tick, callback_group=self._sample_group)
        self.get_logger().info(
            f"recording {goal.instruction!r} into {recording.writer.root} at {recording.fps:g} fps "
            f"(at most {recording.max_duration_s:g} s)"
        )
        feedback = RecordEpisode.Feedback()
        period = 1.0 / float(self.param("feedback_rate_hz"))
        try:
            while True:
                if not self.is_active or self.shared.closing.is_set():
                    return TERMINATION_ABORTED, ErrorCode.NOT_READY, "the recorder stopped: nothing was written"
                if goal_handle.is_cancel_requested:
                    if goal.discard_on_cancel:
                        return TERMINATION_DISCARDED, ErrorCode.CANCELLED, "cancelled: the episode was discarded"
                    return TERMINATION_STOPPED, ErrorCode.CANCELLED, "stopped by a cancel: the episode is saved"
                elapsed = self.now_s() - recording.started_s
                if elapsed >= recording.max_duration_s:
                    return TERMINATION_COMPLETED, ErrorCode.NONE, ""
                with recording.lock:
                    feedback.frames, feedback.dropped_frames = len(recording.spool), recording.dropped
                    feedback.last_drop_reason = recording.last_drop_reason
                feedback.elapsed_s = float(elapsed)
                goal_handle.publish_feedback(feedback)
                time.sleep(min(period, max(recording.max_duration_s - elapsed, 0.001)))
        finally:
            self.destroy_timer(self._timer)
            self._timer = None
            with recording.lock:  # a tick in flight finishes first; none starts after
                recording.stopped = True

    def _tick(self) -> None:
        recording = self._recording
        if recording is None:
            return
        with recording.lock:
            if recording.stopped:
                return
            now = self.now_s()
            if now - recording.started_s >= recording.max_duration_s:
                return  # the episode's time is up; the goal's thread ends it
            tick = max(int(round((now - recording.started_s) * recording.fps)), recording.last_tick + 1)
            if tick > recording.last_tick + 1 and recording.last_tick >= 0:
                recording.drop(MISSED_TICK, tick - recording.last_tick - 1)
            recording.last_tick = tick
            observation, reason = self.shared.observations.latest(now)
            if observation is None:
                recording.drop(reason)
                return
            with self._command_lock:
                command = self._latest_command
            refused = recording.spool.add(observation.images, observation.state, command)
            if refused:
                recording.drop(refused)

    def _save(self, recording: Recording) -> tuple[int, int]:
        """Write the spooled episode (model space) and move the dataset into place; (episode index, frames
        without a command)."""
        spool = recording.spool
        states = self.profile.robot_to_model(np.stack(spool.states))
        commands = [None if c is None else self.profile.robot_to_model(c) for c in spool.commands]
        actions, without_command = actions_with_fallback(states, commands)
        frames = {camera_key(role): clip for role, clip in spool.frames().items()}
        index = recording.writer.add_episode(frames, states, actions, recording.instruction)
        recording.writer.finalize()
        return index, without_command
