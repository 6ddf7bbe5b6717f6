"""The policy node: drives the robot with the VLA mode p(a | o, l) at the control rate.

Data flow:
  cameras + joint states (sensor group) -> ObservationBuffer (shared with the other nodes)
  control timer (control rate, its own group): latest observation -> async chunk request to the engine (mode VLA)
      when the blender runs low -> ChunkBlender (temporal ensembling or replace) -> SafetyFilter -> command adapter
  RunPolicy action (request group): starts/stops a run, publishes feedback, terminates on limits/cancel/e-stop.

The robot never waits for the model: commands (or hold commands) go out every control tick while the next chunk
is being computed on the engine's worker thread. A chunk's action i is meant for control step
obs_step + (i + 1) * downsample_rate (the model's chunk is sparser than the control loop when downsample_rate > 1;
it is linearly upsampled from the observed state); actions already in the past when the chunk arrives are dropped
by the blender, which is how the inference delay is accounted for.

Safety: every command goes out through the SafetyFilter, which clamps it to the joint limits and to one per-step
delta from the last command it sent (kept across goals and reconfigures), or, before the first, from a fresh,
in-limit measured state; without either it sends nothing. Stale (joint states: joint_state_max_age_periods control
periods), future-stamped, missing or out-of-limit input, the e-stop, cancel and deactivate all hold the robot at the
last command sent. Goals are validated before they may preempt the running one.
"""
from __future__ import annotations

import collections
import math
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_srvs.srv import SetBool
from trajectory_msgs.msg import JointTrajectory

from motus_msgs.action import RunPolicy
from motus_msgs.msg import ErrorCode
from motus_msgs.srv import PredictActions

from motus_ros import conversions
from motus_model.action_chunks import ChunkBlender, upsample_chunk
from motus_ros.command_adapters import make_command_adapter
from motus_ros.lifecycle_base import (
    REQUEST_QOS,
    MotusLifecycleNode,
    RequestError,
    ServerContext,
    action_server_options,
    float_descriptor,
    int_descriptor,
    text_descriptor,
)
from motus_ros.observation_buffer import make_observation_buffer
from motus_ros.safety import MeasuredState, SafetyFilter, physical_range_problem

TERMINATION_COMPLETED = "completed"
TERMINATION_CANCELLED = "cancelled"
TERMINATION_ESTOP = "estop"
TERMINATION_PREEMPTED = "preempted"
TERMINATION_ERROR = "error"


class RateMeter:
    """Events per second over a sliding window (the measured control rate)."""

    def __init__(self, window_s: float = 1.0) -> None:
        self.window_s = window_s
        self._times: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()

    def tick(self, now_s: float) -> None:
        with self._lock:
            self._times.append(now_s)
            while self._times and now_s - self._times[0] > self.window_s:
                self._times.popleft()

    def rate(self, now_s: float) -> float:
        with self._lock:
            while self._times and now_s - self._times[0] > self.window_s:
                self._times.popleft()
            return len(self._times) / self.window_s


@dataclass
class PolicyRun:
    """The state of one RunPolicy goal. Written by the control timer, read by the action's execute loop."""

    instruction: str
    blender: ChunkBlender
    started_s: float
    max_steps: int = 0  # 0 = no limit
    step: int = 0  # control ticks since the run started
    published: int = 0  # commands computed (sent, or planned in dry run)
    chunks: int = 0
    pending: Any = None  # engine future of the chunk being computed
    pending_obs_step: int = 0
    pending_state: np.ndarray | None = None
    pending_submitted_s: float = 0.0
    last_inference_ms: float = 0.0
    holding: bool = True
    hold_reason: str = "waiting for the first action chunk"
    error: str = ""  # a failure that ends the run
    error_code: int = ErrorCode.INTERNAL  # its ErrorCode (INVALID_REQUEST when the model refused the request)
    preempted: bool = False
    stopped: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


class PolicyNode(MotusLifecycleNode):
    """Lifecycle node `policy`: RunPolicy action, predict_actions service, e-stop, commands at the control rate."""

    def __init__(self, context: ServerContext, node_name: str = "policy", **kwargs: Any) -> None:
        super().__init__(node_name, context, **kwargs)
        self.declare_parameter("control_rate_hz", 0.0, float_descriptor("command rate; 0 = the robot profile's control rate", 0.0, 1000.0))
        self.declare_parameter("blending_mode", "temporal_ensemble", text_descriptor("how overlapping chunks combine: temporal_ensemble | replace"))
        self.declare_parameter("ensemble_decay", 0.01, float_descriptor("temporal ensembling weight exp(-decay * i), i = chunk age order (ACT: 0.01)", 0.0, 10.0))
        self.declare_parameter("chunk_request_threshold", 8, int_descriptor("request the next chunk when this many planned control steps remain", 0, 10000))
        self.declare_parameter("max_skew_s", 0.3, float_descriptor("largest stamp difference between the cameras and joint states of one observation", 0.0, 10.0))
        self.declare_parameter("max_age_s", 0.5, float_descriptor("hold when the newest observation is older than this", 0.01, 60.0))
        # Joint states arrive at the control rate: a driver loss must hold within a few control periods.
        self.declare_parameter("joint_state_max_age_periods", 3.0, float_descriptor(
            "hold when the joint state is older than this many control periods (its own bound, apart from max_age_s)", 1.0, 1000.0))
        self.declare_parameter("future_tolerance_s", 0.05, float_descriptor(
            "largest lead of a message stamp over this node's clock (stamp_source header); beyond it the message is refused", 0.0, 10.0))
        self.declare_parameter("stamp_source", "receive", text_descriptor("observation time: header (message stamps) | receive (arrival time at this node)"))
        self.declare_parameter("max_instruction_chars", 512, int_descriptor("longest instruction accepted", 1, 100000))
        self.declare_parameter("feedback_rate_hz", 10.0, float_descriptor("RunPolicy feedback rate", 0.1, 100.0))
        self.declare_parameter("diagnostics_rate_hz", 1.0, float_descriptor("rate of /diagnostics messages", 0.1, 50.0))
        self.declare_parameter("policy_seed", -1, int_descriptor("noise seed of each chunk request; -1 = nondeterministic", -1, 2**31 - 1))
        self.declare_optional_bool("dry_run", "compute and publish the plan on ~/planned_trajectory but send no commands; unset = the robot profile's default")

        self._run: PolicyRun | None = None
        self._run_lock = threading.Lock()
        self._accepted_goals = 0  # valid goals accepted so far: the newest accepted goal wins
        self._goal_sequence: dict[bytes, int] = {}  # goal id -> its acceptance number, until it starts
        self._joint_messages: dict[str, JointState] = {}
        self._rate = RateMeter()
        self._last_inference_ms = 0.0
        self._resources: list[Any] = []
        self.safety: SafetyFilter | None = None
        self._kept_command: np.ndarray | None = None  # the last command sent, across cleanup/configure
        self._kept_estop = ""  # the e-stop reason when it was engaged at cleanup
        self.adapter: Any = None
        self.dry_run = False

        # Interfaces exist from the start so requests while unconfigured get NOT_READY instead of silence.
        self.create_service(PredictActions, "~/predict_actions", self._predict_actions, qos_profile=REQUEST_QOS, callback_group=self.request_group)
        self.create_service(SetBool, "~/estop", self._estop, qos_profile=REQUEST_QOS, callback_group=self.request_group)
        self._action_server = ActionServer(
            self, RunPolicy, "~/run_policy", self._execute_run,
            goal_callback=lambda goal: GoalResponse.ACCEPT,
            handle_accepted_callback=self._accept_run,
            cancel_callback=lambda handle: CancelResponse.ACCEPT,
            **action_server_options(self.request_group),
        )
        self._planned_publisher = self.create_publisher(JointTrajectory, "~/planned_trajectory", 10)
        self._diagnostics_publisher = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

    # --- lifecycle ----------------------------------------------------------------------------------------------

    def _setup(self) -> None:
        profile = self.profile
        action_dim = int(self.engine.config.action.action_dim)
        if len(profile.joint_names) != action_dim:
            raise ValueError(f"robot profile {profile.name!r} has {len(profile.joint_names)} joints, the model's actions have {action_dim}")
        mode = str(self.param("blending_mode"))
        if mode not in ("temporal_ensemble", "replace"):
            raise ValueError(f"blending_mode must be temporal_ensemble or replace, got {mode!r}")
        if self.param("stamp_source") not in ("header", "receive"):
            raise ValueError(f"stamp_source must be header or receive, got {self.param('stamp_source')!r}")
        self.control_rate_hz = float(self.param("control_rate_hz")) or float(profile.control_rate_hz)
        self.dry_run = bool(self.optional_param("dry_run", profile.dry_run_default))
        self.adapter = make_command_adapter(self, profile, dry_run=self.dry_run)
        max_state_age_s = float(self.param("joint_state_max_age_periods")) / self.control_rate_hz
        future_tolerance_s = float(self.param("future_tolerance_s"))
        # The filter sends through the adapter itself and remembers what it sent: the only way to the robot.
        self.safety = SafetyFilter(profile, send=self._send, max_state_age_s=max_state_age_s, future_tolerance_s=future_tolerance_s,
                                   last_command=self._kept_command)
        if self._kept_estop:  # a cleanup never releases the e-stop
            self.safety.estop(self._kept_estop)

        buffer = make_observation_buffer([camera.role for camera in profile.cameras], float(self.param("max_skew_s")), float(self.param("max_age_s")),
                                         max_state_age_s=max_state_age_s, future_tolerance_s=future_tolerance_s)
        self.shared.observations.set_buffer(buffer)
        for camera in profile.cameras:
            self._resources.append(self.create_subscription(
                Image, camera.topic, lambda msg, camera=camera: self._on_image(camera, msg),
                qos_profile_sensor_data, callback_group=self.sensor_group))
        for topic in profile.joint_state_topics:
            self._resources.append(self.create_subscription(
                JointState, topic, lambda msg, topic=topic: self._on_joint_state(topic, msg),
                qos_profile_sensor_data, callback_group=self.sensor_group))
        # The control tick has a group of its own: nothing else ever delays it.
        self._control_timer = self.create_timer(1.0 / self.control_rate_hz, self._control_tick, callback_group=MutuallyExclusiveCallbackGroup())
        self._diagnostics_timer = self.create_timer(1.0 / float(self.param("diagnostics_rate_hz")), self._publish_diagnostics, callback_group=self.timer_group)
        self._resources += [self._control_timer, self._diagnostics_timer]
        self.get_logger().info(
            f"robot {profile.name!r}: {len(profile.cameras)} cameras, control at {self.control_rate_hz:g} Hz via "
            f"{profile.command_interface}{' (DRY RUN: no commands are sent)' if self.dry_run else ''}")

    def _teardown(self) -> None:
        self._stop_run(None)
        for resource in self._resources:
            if hasattr(resource, "cancel"):
                resource.cancel()
                self.destroy_timer(resource)
            else:
                self.destroy_subscription(resource)
        self._resources = []
        self.shared.observations.set_buffer(None)
        if self.adapter is not None:
            self.adapter.destroy()
        self.adapter = None
        if self.safety is not None:  # kept for the next configure: the same robot, the same reference and latch
            self._kept_command = self.safety.last_command
            self._kept_estop = self.safety.estop_reason if self.safety.engaged else ""
        self.safety = None

    def _on_deactivated(self) -> None:
        """Stop the run and hold the robot where it is."""
        run = self._run
        if run is not None:
            run.error = "node deactivated"
        self._stop_run(run)
        self._send_hold("deactivated")

    # --- sensors ---------------------------------------------------------------------------------------------

    def _stamp_s(self, header) -> float:
        if self.param("stamp_source") == "header":
            return header.stamp.sec + header.stamp.nanosec * 1e-9
        return self.now_s()

    def _on_image(self, camera, msg: Image) -> None:
        buffer = self.shared.observations.buffer
        if buffer is None:
            return
        try:
            image = conversions.image_to_numpy(msg, expected_encoding=camera.encoding, expected_shape=(int(camera.height), int(camera.width)))
        except ValueError as exc:
            self._reject(camera.topic, str(exc))
            return
        try:
            buffer.update_image(camera.role, image, self._stamp_s(msg.header), received_s=self.now_s())
        except ValueError as exc:  # stamped in the future
            self._reject(camera.topic, str(exc))
            return
        self.shared.observations.rejected.pop(camera.topic, None)

    def _on_joint_state(self, topic: str, msg: JointState) -> None:
        buffer = self.shared.observations.buffer
        if buffer is None:
            return
        self._joint_messages[topic] = msg
        if len(self._joint_messages) < len(self.profile.joint_state_topics):
            return  # per-arm topics: wait until every arm has reported once
        messages = [self._joint_messages[name] for name in self.profile.joint_state_topics]
        try:
            q = conversions.joint_state_to_vector(messages, self.profile.joint_names, prefixes=self.profile.joint_name_prefixes)
            problem = physical_range_problem(self.profile, q)  # finite but absurd (1e30) is bad input too
            if problem:
                raise ValueError(problem)
            buffer.update_joint_state(q, self._stamp_s(msg.header), received_s=self.now_s())
        except ValueError as exc:
            self._reject(topic, str(exc))
            return
        self.shared.observations.rejected.pop(topic, None)

    def _reject(self, topic: str, reason: str) -> None:
        self.shared.observations.rejected[topic] = reason
        self.get_logger().warning(f"rejected a message on {topic}: {reason}", throttle_duration_sec=2.0)

    # --- control loop --------------------------------------------------------------------------------------------

    def _measured(self) -> MeasuredState | None:
        """The newest joint state with its age (the SafetyFilter decides whether it may serve as a reference)."""
        buffer = self.shared.observations.buffer
        latest = None if buffer is None else buffer.latest_joint_state_stamped()
        return None if latest is None else MeasuredState(latest[0], self.now_s() - latest[1])

    def _send(self, command: np.ndarray) -> None:
        """The SafetyFilter's sink: only the filter calls this."""
        adapter = self.adapter
        if adapter is None:
            raise RuntimeError("no command adapter (the node is not configured)")
        adapter.send(command, self.get_clock().now().to_msg())  # in dry run the adapter withholds it

    def _send_hold(self, reason: str) -> bool:
        """Send one command holding the last commanded (else a fresh measured) position; False when neither."""
        safety = self.safety
        if safety is None or self.adapter is None:
            return False
        return safety.hold(self._measured()) is not None

    def _control_tick(self) -> None:
        if not self.is_active:
            return
        run = self._run
        if run is None or run.stopped:
            return
        try:
            self._control_step(run)
        except Exception as exc:  # never let the control timer die: end the run, hold, report
            run.error = f"control step failed: {exc!r}"
            self.get_logger().error(f"{run.error}\n{traceback.format_exc()}")
            self._send_hold("control step failed")

    def _control_step(self, run: PolicyRun) -> None:
        now = self.now_s()
        with run.lock:
            if run.max_steps and run.step >= run.max_steps:
                return  # the execute loop ends the run at its next check
            self._rate.tick(now)
            run.step += 1
            self._collect_chunk(run)
            observation, reason = self.shared.observations.latest(now)
            if self.safety.engaged:
                reason = "e-stop engaged"
            elif observation is None:
                rejected = "; ".join(f"{topic}: {why}" for topic, why in self.shared.observations.rejected.items())
                reason = f"{reason} (rejected: {rejected})" if rejected else reason
            elif (problem := self.safety.state_problem(observation.state)):
                reason, observation = problem, None  # out of the limits: refused as input, hold
            if observation is None or self.safety.engaged:
                self._hold(run, reason)
                return
            if run.pending is None and run.blender.remaining(run.step) <= int(self.param("chunk_request_threshold")):
                self._request_chunk(run, observation)
            target = run.blender.action_for(run.step)
            if target is None:
                self._hold(run, "waiting for the first action chunk" if run.chunks == 0 else "waiting for the next action chunk (inference slower than the chunk)")
                return
            command, clamped = self.safety.apply(target, self._measured())  # bounded against the last command sent
            if command is None:
                self._hold(run, self.safety.refusal)
                return
            if clamped:
                self.get_logger().warning("command clamped to the joint/delta limits", throttle_duration_sec=2.0)
            run.holding, run.hold_reason = False, ""
            run.published += 1

    def _hold(self, run: PolicyRun, reason: str) -> None:
        if not run.holding or run.hold_reason != reason:
            self.get_logger().info(f"holding: {reason}", throttle_duration_sec=1.0)
        run.holding, run.hold_reason = True, reason
        if self.safety.hold(self._measured()) is not None:  # the last command sent; nothing without a reference
            run.published += 1

    def _request_chunk(self, run: PolicyRun, observation) -> None:
        from motus_model.engine import MotusRequest
        from motus_model.flow_matching import Mode

        state_robot = np.asarray(observation.state, dtype=np.float64)
        request = MotusRequest(
            mode=Mode.VLA, images=dict(observation.images), state=self.profile.robot_to_model(state_robot),
            instruction=run.instruction, steps=self.steps_for(0), seed=self.seed_for(int(self.param("policy_seed"))),
            decode_video=False,
        )
        run.pending = self.engine.submit(request)
        run.pending_obs_step = run.step
        run.pending_state = state_robot
        run.pending_submitted_s = time.monotonic()

    def _collect_chunk(self, run: PolicyRun) -> None:
        """Move a finished chunk from the engine into the blender (called with run.lock held)."""
        future = run.pending
        if future is None or not future.done():
            return
        run.pending = None
        run.last_inference_ms = self._last_inference_ms = (time.monotonic() - run.pending_submitted_s) * 1e3
        try:
            result = self.result_of(future)
        except RequestError as exc:
            run.error, run.error_code = f"chunk request failed: {exc.message}", exc.code
            self.get_logger().error(run.error)
            return
        actions_robot = self.actions_to_robot(result.actions)
        rate = int(self.engine.config.temporal.downsample_rate)
        per_step = upsample_chunk(actions_robot, run.pending_state, rate)
        run.blender.add_chunk(per_step, run.pending_obs_step)
        run.chunks += 1
        self._publish_plan(per_step)

    def _publish_plan(self, actions_robot: np.ndarray) -> None:
        trajectory = conversions.actions_to_trajectory(
            actions_robot, self.profile.joint_names, 1.0 / self.control_rate_hz, self.get_clock().now().to_msg())
        self._planned_publisher.publish(trajectory)

    # --- RunPolicy action ------------------------------------------------------------------------------------------

    def _goal_error(self, goal) -> RequestError | None:
        """Why a RunPolicy goal is refused (not active, e-stop, instruction, duration), or None when valid."""
        try:
            self.require_active()
            safety = self.safety
            if safety is None or safety.engaged:
                raise RequestError(ErrorCode.ESTOP, "the e-stop is engaged: release it with ~/estop false")
            duration = float(goal.max_duration_s)
            if not math.isfinite(duration) or duration < 0:
                raise RequestError(ErrorCode.INVALID_REQUEST, f"max_duration_s must be >= 0 seconds (0 = no limit), got {duration}")
            self.check_instruction(goal.instruction)
        except RequestError as exc:
            return exc
        return None

    def _accept_run(self, goal_handle) -> None:
        """A new VALID goal preempts the running one (single-goal server); an invalid one runs only to fail, and
        leaves the running goal alone."""
        with self._run_lock:
            if self._goal_error(goal_handle.request) is None:
                self._accepted_goals += 1
                self._goal_sequence[bytes(goal_handle.goal_id.uuid)] = self._accepted_goals
                if self._run is not None:
                    self._run.preempted = True
        goal_handle.execute()

    def _new_run(self, instruction: str, max_steps: int) -> PolicyRun:
        blender = ChunkBlender(mode=str(self.param("blending_mode")), ensemble_decay=float(self.param("ensemble_decay")))
        return PolicyRun(instruction=instruction, blender=blender, started_s=time.monotonic(), max_steps=int(max_steps))

    def _stop_run(self, run: PolicyRun | None) -> None:
        """End `run` (or whatever runs when None): drop its pending chunk, send one hold command."""
        with self._run_lock:
            current = self._run
            if run is None:
                run = current
            if run is None:
                return
            run.stopped = True
            if current is run:
                self._run = None
        if run.pending is not None:
            run.pending.cancel()
        self._send_hold("run ended")

    def _execute_run(self, goal_handle) -> RunPolicy.Result:
        """Run the policy until the step/time limit, cancel, e-stop, preemption or a failure."""
        goal = goal_handle.request
        result = RunPolicy.Result()

        def finish(code: int, message: str, termination: str, run: PolicyRun | None) -> RunPolicy.Result:
            result.error = ErrorCode(code=code, message=message)
            result.termination = termination
            if run is not None:
                result.steps, result.chunks = run.published, run.chunks
                result.duration_s = float(time.monotonic() - run.started_s)
            if termination == TERMINATION_COMPLETED:
                goal_handle.succeed()
            elif termination == TERMINATION_CANCELLED:
                goal_handle.canceled()
            else:
                goal_handle.abort()
            self.get_logger().info(f"run ended: {termination} {message}")
            return result

        with self._run_lock:
            sequence = self._goal_sequence.pop(bytes(goal_handle.goal_id.uuid), 0)
        refused = self._goal_error(goal)  # the same checks as _accept_run: an invalid goal never preempts
        if refused is not None:
            return finish(refused.code, refused.message, TERMINATION_ESTOP if refused.code == ErrorCode.ESTOP else TERMINATION_ERROR, None)

        run = self._new_run(goal.instruction, goal.max_steps)
        with self._run_lock:
            if sequence < self._accepted_goals:
                run.preempted = True  # a newer goal was accepted before this one started: it wins
            else:
                if self._run is not None:
                    self._run.preempted = True
                self._run = run
        self.get_logger().info(f"run started: {goal.instruction!r} (max {goal.max_steps} steps, {goal.max_duration_s:g} s)")
        period = 1.0 / float(self.param("feedback_rate_hz"))
        feedback = RunPolicy.Feedback()
        while True:
            if run.preempted:
                self._stop_run(run)
                return finish(ErrorCode.BUSY, "preempted by a newer goal", TERMINATION_PREEMPTED, run)
            if goal_handle.is_cancel_requested:
                self._stop_run(run)
                return finish(ErrorCode.CANCELLED, "cancelled: holding", TERMINATION_CANCELLED, run)
            safety = self.safety  # None once the node is cleaned up (read once: teardown runs on another thread)
            if run.error or not self.is_active or safety is None:
                self._stop_run(run)
                if self.is_active and safety is not None:
                    return finish(run.error_code, run.error, TERMINATION_ERROR, run)
                return finish(ErrorCode.NOT_READY, "the policy node was deactivated: holding", TERMINATION_ERROR, run)
            if safety.engaged:
                self._stop_run(run)
                return finish(ErrorCode.ESTOP, "stopped by the e-stop: holding", TERMINATION_ESTOP, run)
            elapsed = time.monotonic() - run.started_s
            if (goal.max_steps and run.step >= goal.max_steps) or (goal.max_duration_s > 0 and elapsed >= goal.max_duration_s):
                self._stop_run(run)
                return finish(ErrorCode.NONE, "", TERMINATION_COMPLETED, run)
            feedback.step, feedback.chunks = run.step, run.chunks
            feedback.last_inference_ms = float(run.last_inference_ms)
            feedback.control_rate_hz = float(self._rate.rate(self.now_s()))
            feedback.holding, feedback.hold_reason = bool(run.holding), str(run.hold_reason)
            goal_handle.publish_feedback(feedback)
            time.sleep(period)

    # --- services --------------------------------------------------------------------------------------------------

    def _estop(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        """true: engage the e-stop and hold now; false: release it (a new RunPolicy goal is needed to move)."""
        if self.safety is None:
            response.success, response.message = False, "not configured"
            return response
        if request.data:
            self.safety.estop()
            held = self._send_hold("e-stop")
            self.get_logger().warning("E-STOP engaged" + ("" if held else " (no joint state yet: nothing to hold)"))
            response.message = "e-stop engaged: holding"
        else:
            self.safety.release()
            self.get_logger().info("e-stop released")
            response.message = "e-stop released"
        response.success = True
        return response

    def _predict_actions(self, request: PredictActions.Request, response: PredictActions.Response) -> PredictActions.Response:
        """One-shot VLA (or joint) query on the given or latest observation."""
        from motus_model.engine import MotusRequest
        from motus_model.flow_matching import Mode

        started = time.monotonic()
        try:
            self.require_active()
            if request.mode not in (PredictActions.Request.MODE_VLA, PredictActions.Request.MODE_JOINT):
                raise RequestError(ErrorCode.INVALID_REQUEST, f"mode must be MODE_VLA (0) or MODE_JOINT (1), got {request.mode}")
            self.check_instruction(request.instruction)
            images, state = self.observation_inputs(request.observation)
            joint = request.mode == PredictActions.Request.MODE_JOINT
            engine_request = MotusRequest(
                mode=Mode.JOINT if joint else Mode.VLA, images=images, state=self.profile.robot_to_model(state), instruction=request.instruction,
                steps=self.steps_for(request.steps), seed=self.seed_for(request.seed),
                decode_video=bool(joint and request.return_frames),
            )
            result = self.run_request(engine_request)
            actions_robot = upsample_chunk(self.actions_to_robot(result.actions), state, int(self.engine.config.temporal.downsample_rate))
            response.trajectory = self.trajectory_of(actions_robot)
            if joint and request.return_frames and result.frames is not None:
                response.imagined_frames = self.composite_images(result.frames)
            response.timing = self.timing_of(result, (time.monotonic() - started) * 1e3)
            response.error = ErrorCode(code=ErrorCode.NONE, message="")
        except Exception as exc:  # every failure becomes an error code; the node stays up
            response.error = self.error_of(exc)
        return response

    # --- diagnostics -------------------------------------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        if not self.is_active:
            return
        now = self.now_s()
        run = self._run
        ok, reason = (False, "not configured")
        if self.shared.observations.buffer is not None:
            ok, reason = self.shared.observations.buffer.status(now)
        holding = run.holding if run is not None else False
        hold_reason = run.hold_reason if run is not None else ""
        status = DiagnosticStatus(name=f"motus_server: {self.get_name()}", hardware_id=self.profile.name)
        if self.safety is not None and self.safety.engaged:
            status.level, status.message = DiagnosticStatus.ERROR, "e-stop engaged"
        elif not ok:
            status.level, status.message = DiagnosticStatus.WARN, f"input: {reason}"
        elif holding:
            status.level, status.message = DiagnosticStatus.WARN, f"holding: {hold_reason}"
        else:
            status.level, status.message = DiagnosticStatus.OK, "running" if run is not None else "idle"
        values = {
            "control_rate_hz": f"{self._rate.rate(now):.1f}",
            "target_control_rate_hz": f"{self.control_rate_hz:g}",
            "inference_latency_ms": f"{self._last_inference_ms:.1f}",
            "holding": str(holding).lower(),
            "hold_reason": hold_reason,
            "input_ok": str(ok).lower(),
            "input_status": reason,
            "estop": str(bool(self.safety is not None and self.safety.engaged)).lower(),
            "dry_run": str(self.dry_run).lower(),
            "commands_sent": str(self.adapter.published if self.adapter is not None else 0),
            "commands_withheld_dry_run": str(self.adapter.suppressed if self.adapter is not None else 0),
            "running": str(run is not None).lower(),
        }
        status.values = [KeyValue(key=key, value=value) for key, value in values.items()]
        message = DiagnosticArray(status=[status])
        message.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics_publisher.publish(message)
