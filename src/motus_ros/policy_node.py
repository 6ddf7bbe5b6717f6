"""The policy node: drives the robot with the VLA mode p(a | o, l) at the control rate.

Data flow:
  cameras + joint states -> the server's SensorIntake (server_context.py) -> ObservationBuffer (shared by all nodes)
  control timer (control rate, its own group): latest observation -> MotusPolicy (motus_model.policy: chunk
      requests, upsampling, blending, late chunks; the runtime `motus eval` drives too) -> SafetyFilter
      -> command adapter
  RunPolicy action (request group): starts/stops a run, publishes feedback, terminates on limits/cancel/e-stop.

The robot never waits for the model: commands (or hold commands) go out every control tick while the next chunk
is being computed on the engine's worker thread (the runtime's timing rule is in motus_model/policy.py).

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
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.parameter import Parameter
from std_srvs.srv import SetBool
from trajectory_msgs.msg import JointTrajectory

from motus_model.policy import HOLD_FIRST_CHUNK, MotusPolicy, PolicyChunk, PolicyConfig
from motus_msgs.action import RunPolicy
from motus_msgs.msg import ErrorCode
from motus_msgs.srv import PredictActions
from motus_ros import conversions
from motus_ros.command_adapters import make_command_adapter
from motus_ros.frame_publishing import FramePublisher, video_frame_rate
from motus_ros.lifecycle_base import MotusLifecycleNode
from motus_ros.parameters import float_descriptor, int_descriptor, text_descriptor
from motus_ros.reasons import ReasonTally
from motus_ros.requests import REQUEST_QOS, RequestError, action_server_options, request_error_of
from motus_ros.safety import MeasuredState, SafetyFilter
from motus_ros.server_context import ServerContext

# The termination vocabulary is declared in RunPolicy.action (one home; test_server_policy pins it).
TERMINATION_COMPLETED = RunPolicy.Result.TERMINATION_COMPLETED
TERMINATION_HELD_THROUGHOUT = RunPolicy.Result.TERMINATION_HELD_THROUGHOUT
TERMINATION_NO_OBSERVATION = RunPolicy.Result.TERMINATION_NO_OBSERVATION
TERMINATION_CANCELLED = RunPolicy.Result.TERMINATION_CANCELLED
TERMINATION_ESTOP = RunPolicy.Result.TERMINATION_ESTOP
TERMINATION_PREEMPTED = RunPolicy.Result.TERMINATION_PREEMPTED
TERMINATION_ERROR = RunPolicy.Result.TERMINATION_ERROR
MAIN_HOLD_REASONS = 3  # how many hold reasons a result lists
# how long deactivation waits for subscribers to acknowledge the last hold (the process may exit next)
HOLD_DELIVERY_TIMEOUT_S = 0.5


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
    policy: MotusPolicy  # the runtime: chunk requests, upsampling, blending, late chunks, timings
    started_s: float
    max_steps: int = 0  # 0 = no limit
    step: int = 0  # control ticks since the run started
    published: int = 0  # commands computed (sent, or planned in dry run)
    moving_steps: int = 0  # ticks that commanded a policy action
    observed_ticks: int = 0  # ticks with a usable observation
    held_ticks: int = 0
    holds: ReasonTally = field(default_factory=ReasonTally)  # held ticks per kind of hold reason
    holding: bool = True
    hold_reason: str = HOLD_FIRST_CHUNK
    error: str = ""  # a failure that ends the run
    error_code: int = ErrorCode.INTERNAL  # its ErrorCode (INVALID_REQUEST when the model refused the request)
    preempted: bool = False
    stopped: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def chunks(self) -> int:
        return self.policy.stats.chunks


class PolicyNode(MotusLifecycleNode):
    """Lifecycle node `policy`: RunPolicy action, predict_actions service, e-stop, commands at the control rate."""

    def __init__(self, context: ServerContext, node_name: str = "policy", **kwargs: Any) -> None:
        super().__init__(node_name, context, **kwargs)
        self.declare_parameter(
            "control_rate_hz", 0.0, float_descriptor("command rate; 0 = the robot profile's control rate", 0.0, 1000.0)
        )
        self.declare_parameter(
            "blending_mode",
            "temporal_ensemble",
            text_descriptor("how overlapping chunks combine: temporal_ensemble | replace"),
        )
        self.declare_parameter(
            "ensemble_decay",
            0.01,
            float_descriptor("temporal ensembling weight exp(-decay * i), i = chunk age order (ACT: 0.01)", 0.0, 10.0),
        )
        self.declare_parameter(
            "chunk_request_threshold",
            8,
            int_descriptor("request the next chunk when this many planned control steps remain", 0, 10000),
        )
        self.declare_parameter("max_instruction_chars", 512, int_descriptor("longest instruction accepted", 1, 100000))
        self.declare_parameter("feedback_rate_hz", 10.0, float_descriptor("RunPolicy feedback rate", 0.1, 100.0))
        self.declare_parameter(
            "policy_seed", -1, int_descriptor("noise seed of each chunk request; -1 = nondeterministic", -1, 2**31 - 1)
        )
        self.declare_parameter(
            "preview",
            False,
            text_descriptor(
                "for each chunk about to run, ask the world model for the frames it leads to and publish them on "
                "~/preview/<camera> (read at configure; costs engine time: a chunk request may wait behind a preview)"
            ),
        )
        self.declare_parameter(
            "preview_steps",
            1,
            int_descriptor("Euler steps of each preview request (0 = the node's default_steps)", 0, 1000),
        )
        self.declare_optional_bool(
            "dry_run",
            "compute and publish the plan on ~/planned_trajectory but send no commands; "
            "unset = the robot profile's default",
        )

        self._run: PolicyRun | None = None
        self._run_lock = threading.Lock()
        self._accepted_goals = 0  # valid goals accepted so far: the newest accepted goal wins
        self._goal_sequence: dict[bytes, int] = {}  # goal id -> its acceptance number, until it starts
        self._rate = RateMeter()
        self._last_inference_ms = 0.0
        self._resources: list[Any] = []
        self.safety: SafetyFilter | None = None
        self._kept_command: np.ndarray | None = None  # the last command sent, across cleanup/configure
        self._kept_estop = ""  # the e-stop reason when it was engaged at cleanup
        self.adapter: Any = None
        self.dry_run = False
        self.preview: FramePublisher | None = None  # ~/preview/<camera>, when the preview parameter is set
        self._preview_future: Any = None  # the preview request in flight (at most one: never a backlog)
        self.previews = {"requested": 0, "published": 0, "skipped_busy": 0, "failed": 0}

        # Interfaces exist from the start so requests while unconfigured get NOT_READY instead of silence.
        self.create_service(
            PredictActions,
            "~/predict_actions",
            self._predict_actions,
            qos_profile=REQUEST_QOS,
            callback_group=self.request_group,
        )
        self.create_service(SetBool, "~/estop", self._estop, qos_profile=REQUEST_QOS, callback_group=self.request_group)
        self._action_server = ActionServer(
            self,
            RunPolicy,
            "~/run_policy",
            self._execute_run,
            goal_callback=lambda goal: GoalResponse.ACCEPT,
            handle_accepted_callback=self._accept_run,
            cancel_callback=lambda handle: CancelResponse.ACCEPT,
            **action_server_options(self.request_group),
        )
        self._planned_publisher = self.create_publisher(JointTrajectory, "~/planned_trajectory", 10)

    # --- lifecycle ----------------------------------------------------------------------------------------------

    def _setup(self) -> None:
        profile = self.profile
        action_dim = int(self.engine.config.action.action_dim)
        if len(profile.joint_names) != action_dim:
            raise ValueError(
                f"robot profile {profile.name!r} has {len(profile.joint_names)} joints, "
                f"the model's actions have {action_dim}"
            )
        mode = str(self.param("blending_mode"))
        if mode not in ("temporal_ensemble", "replace"):
            raise ValueError(f"blending_mode must be temporal_ensemble or replace, got {mode!r}")
        self.control_rate_hz = float(self.param("control_rate_hz")) or float(profile.control_rate_hz)
        self.dry_run = bool(self.optional_param("dry_run", profile.dry_run_default))
        # The effective value, visible to `ros2 param get /policy dry_run` (unset meant: the profile's default).
        self.set_parameters([Parameter("dry_run", Parameter.Type.BOOL, self.dry_run)])
        self.adapter = make_command_adapter(self, profile, dry_run=self.dry_run)
        buffer = self.shared.observations.buffer
        if buffer is None:
            raise ValueError("no sensor intake: the server subscribes the robot's sensors before configuring nodes")
        # The safety filter judges a measured state by the same bounds as the shared observation buffer.
        max_state_age_s, future_tolerance_s = buffer.max_state_age_s, buffer.future_tolerance_s
        # The filter sends through the adapter itself and remembers what it sent: the only way to the robot.
        self.safety = SafetyFilter(
            profile,
            send=self._send,
            max_state_age_s=max_state_age_s,
            future_tolerance_s=future_tolerance_s,
            last_command=self._kept_command,
        )
        if self._kept_estop:  # a cleanup never releases the e-stop
            self.safety.estop(self._kept_estop)

        if bool(self.param("preview")):
            self.preview = FramePublisher(self, self.camera_roles(), "~/preview", callback_group=self.timer_group)

        # The control tick has a group of its own: nothing else ever delays it.
        self._control_timer = self.create_timer(
            1.0 / self.control_rate_hz, self._control_tick, callback_group=MutuallyExclusiveCallbackGroup()
        )
        self._resources += [self._control_timer]
        self.get_logger().info(
            f"robot {profile.name!r}: {len(profile.cameras)} cameras, control at {self.control_rate_hz:g} Hz via "
            f"{profile.command_interface}{' (DRY RUN: no commands are sent)' if self.dry_run else ''}"
        )

    def _teardown(self) -> None:
        self._stop_run(None)
        for resource in self._resources:
            if hasattr(resource, "cancel"):
                resource.cancel()
                self.destroy_timer(resource)
            else:
                self.destroy_subscription(resource)
        self._resources = []
        if self.adapter is not None:
            self.adapter.destroy()
        self.adapter = None
        if self._preview_future is not None:
            self._preview_future.cancel()
            self._preview_future = None
        if self.preview is not None:
            self.preview.destroy()
            self.preview = None
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
        if self._send_hold("deactivated") and not self.adapter.wait_for_delivery(HOLD_DELIVERY_TIMEOUT_S):
            self.get_logger().warning(
                f"the hold command sent on deactivation was not acknowledged within {HOLD_DELIVERY_TIMEOUT_S} s"
            )

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
            observation, reason = self.shared.observations.latest(now)
            if self.safety.engaged:
                reason = "e-stop engaged"
            elif observation is None:
                rejected = "; ".join(f"{topic}: {why}" for topic, why in self.shared.observations.rejected.items())
                reason = f"{reason} (rejected: {rejected})" if rejected else reason
            elif problem := self.safety.state_problem(observation.state):
                reason, observation = problem, None  # out of the limits: refused as input, hold
            if observation is not None:
                run.observed_ticks += 1
            if observation is None or self.safety.engaged:
                run.policy.poll()
                self._check_policy_error(run)
                self._hold(run, reason)
                return
            run.policy.observe(run.step, observation.images, observation.state)
            decision = run.policy.action_for(run.step)
            if self._check_policy_error(run):
                self._hold(run, run.error)
                return
            if decision.action is None:
                self._hold(run, decision.hold_reason)
                return
            command, clamped = self.safety.apply(
                decision.action, self._measured()
            )  # bounded against the last command sent
            if command is None:
                self._hold(run, self.safety.refusal)
                return
            if clamped:
                self.get_logger().warning("command clamped to the joint/delta limits", throttle_duration_sec=2.0)
            run.holding, run.hold_reason = False, ""
            run.published += 1
            run.moving_steps += 1

    def _check_policy_error(self, run: PolicyRun) -> bool:
        """A failed chunk request ends the run (the execute loop reports it); True when it did."""
        exc = run.policy.error
        if exc is None:
            return False
        if not run.error:
            error = request_error_of(exc, self.get_logger())
            run.error, run.error_code = f"chunk request failed: {error.message}", error.code
            self.get_logger().error(run.error)
        return True

    def _hold(self, run: PolicyRun, reason: str) -> None:
        if not run.holding or run.hold_reason != reason:
            self.get_logger().info(f"holding: {reason}", throttle_duration_sec=1.0)
        run.holding, run.hold_reason = True, reason
        run.held_ticks += 1
        run.holds.add(reason)
        if self.safety.hold(self._measured()) is not None:  # the last command sent; nothing without a reference
            run.published += 1

    def _on_chunk(self, chunk: PolicyChunk) -> None:
        self._last_inference_ms = chunk.inference_ms
        self._publish_plan(chunk.actions_robot)
        if self.preview is not None:
            try:
                self._request_preview(chunk)
            except Exception as exc:  # e.g. preview_steps above max_denoising_steps: the run goes on without it
                self.previews["failed"] += 1
                self.get_logger().warning(f"preview not requested: {exc}", throttle_duration_sec=5.0)

    # --- preview: what the chunk about to run leads to ---------------------------------------------------------------

    def _request_preview(self, chunk: PolicyChunk) -> None:
        """Ask the world model for the frames `chunk` leads to, from the observation it was predicted from.

        At most one preview is in flight: while one runs, newer chunks get none (skipped_busy), so previews never
        build a queue in front of the chunk requests that drive the robot."""
        from motus_model.engine import MotusRequest
        from motus_model.flow_matching import Mode

        if self._preview_future is not None and not self._preview_future.done():
            self.previews["skipped_busy"] += 1
            return
        run = self._run
        # The observation's time: obs_step control steps into the run, `run.step` is now.
        steps_ago = max(0, run.step - chunk.obs_step) if run is not None else 0
        observed_s = self.now_s() - steps_ago / self.control_rate_hz
        fps = video_frame_rate(self.control_rate_hz, self.engine.config.temporal)
        request = MotusRequest(
            mode=Mode.WORLD_MODEL,
            images=dict(chunk.images),
            state=self.profile.robot_to_model(np.asarray(chunk.state, dtype=np.float64)),
            actions=chunk.actions_model,
            steps=self.steps_for(int(self.param("preview_steps"))),
            decode_video=True,
        )
        self.previews["requested"] += 1
        future = self.engine.submit(request)
        self._preview_future = future
        future.add_done_callback(lambda done: self._publish_preview(done, observed_s + 1.0 / fps, fps))

    def _publish_preview(self, future: Any, start_s: float, fps: float) -> None:
        """Engine worker thread: replay the predicted frames on ~/preview/<camera>, frame i stamped with the time it
        predicts (one video frame after the chunk's observation, then one per 1/fps)."""
        preview = self.preview
        if preview is None or future.cancelled():
            return
        try:
            frames = future.result().frames
        except Exception as exc:  # a failed preview never touches the run
            self.previews["failed"] += 1
            self.get_logger().warning(f"preview failed: {exc!r}", throttle_duration_sec=5.0)
            return
        preview.replay(self.split_frames(frames), start_s, fps)
        self.previews["published"] += 1

    def _publish_plan(self, actions_robot: np.ndarray) -> None:
        trajectory = conversions.actions_to_trajectory(
            actions_robot, self.profile.joint_names, 1.0 / self.control_rate_hz, self.get_clock().now().to_msg()
        )
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
                raise RequestError(
                    ErrorCode.INVALID_REQUEST, f"max_duration_s must be >= 0 seconds (0 = no limit), got {duration}"
                )
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

    def _policy_config(self) -> PolicyConfig:
        seed = int(self.param("policy_seed"))
        return PolicyConfig(
            blending=str(self.param("blending_mode")),
            ensemble_decay=float(self.param("ensemble_decay")),
            chunk_request_threshold=int(self.param("chunk_request_threshold")),
            steps=self.steps_for(0),
            seed=None if seed < 0 else seed,
        )

    def _new_run(self, instruction: str, max_steps: int) -> PolicyRun:
        policy = MotusPolicy(self.engine, self._policy_config(), transforms=self.profile, on_chunk=self._on_chunk)
        policy.reset(instruction)
        return PolicyRun(instruction=instruction, policy=policy, started_s=time.monotonic(), max_steps=int(max_steps))

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
        with run.lock:
            run.policy.cancel()
        self._send_hold("run ended")

    def _execute_run(self, goal_handle) -> RunPolicy.Result:
        """Run the policy until the step/time limit, cancel, e-stop, preemption or a failure."""
        goal = goal_handle.request
        result = RunPolicy.Result()

        def finish(code: int, message: str, termination: str, run: PolicyRun | None) -> RunPolicy.Result:
            result.error = ErrorCode(code=code, message=message)
            result.termination = termination
            if run is not None:
                with run.lock:
                    result.steps, result.chunks, result.moving_steps = run.published, run.chunks, run.moving_steps
                    result.held_fraction = float(run.held_ticks / run.step) if run.step else 1.0
                    result.hold_reasons = run.holds.main(MAIN_HOLD_REASONS)
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
            return finish(
                refused.code,
                refused.message,
                TERMINATION_ESTOP if refused.code == ErrorCode.ESTOP else TERMINATION_ERROR,
                None,
            )

        run = self._new_run(goal.instruction, goal.max_steps)
        with self._run_lock:
            if sequence < self._accepted_goals:
                run.preempted = True  # a newer goal was accepted before this one started: it wins
            else:
                if self._run is not None:
                    self._run.preempted = True
                self._run = run
        self.get_logger().info(
            f"run started: {goal.instruction!r} (max {goal.max_steps} steps, {goal.max_duration_s:g} s)"
        )
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
            if (goal.max_steps and run.step >= goal.max_steps) or (
                goal.max_duration_s > 0 and elapsed >= goal.max_duration_s
            ):
                self._stop_run(run)
                return finish(*self._outcome(run), run)
            feedback.step, feedback.chunks = run.step, run.chunks
            feedback.last_inference_ms = float(run.policy.stats.last_inference_ms)
            feedback.control_rate_hz = float(self._rate.rate(self.now_s()))
            feedback.holding, feedback.hold_reason = bool(run.holding), str(run.hold_reason)
            goal_handle.publish_feedback(feedback)
            time.sleep(period)

    @staticmethod
    def _outcome(run: PolicyRun) -> tuple[int, str, str]:
        """(code, message, termination) of a run that reached its limit: it completed only if the robot moved."""
        if run.moving_steps:
            return ErrorCode.NONE, "", TERMINATION_COMPLETED
        reasons = "; ".join(run.holds.main(2))
        if not run.observed_ticks:
            return (
                ErrorCode.NO_OBSERVATION,
                f"no usable observation during the run ({reasons})",
                TERMINATION_NO_OBSERVATION,
            )
        return ErrorCode.HELD, f"the robot held throughout ({reasons})", TERMINATION_HELD_THROUGHOUT

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

    def _predict_actions(
        self, request: PredictActions.Request, response: PredictActions.Response
    ) -> PredictActions.Response:
        """One-shot VLA (or joint) query on the given or latest observation, through the policy runtime's transforms."""
        started = time.monotonic()
        try:
            self.require_active()
            if request.mode not in (PredictActions.Request.MODE_VLA, PredictActions.Request.MODE_JOINT):
                raise RequestError(
                    ErrorCode.INVALID_REQUEST, f"mode must be MODE_VLA (0) or MODE_JOINT (1), got {request.mode}"
                )
            self.check_instruction(request.instruction)
            images, state = self.observation_inputs(request.observation)
            joint = request.mode == PredictActions.Request.MODE_JOINT
            policy = MotusPolicy(self.engine, self._policy_config(), transforms=self.profile)
            policy.reset(request.instruction)
            engine_request = policy.chunk_request(
                images,
                state,
                mode="joint" if joint else "vla",
                steps=self.steps_for(request.steps),
                seed=self.seed_for(request.seed),
                decode_video=bool(joint and request.return_frames),
            )
            result = self.run_request(engine_request)
            actions_robot = policy.chunk_to_robot(result.actions, state)
            response.trajectory = self.trajectory_of(actions_robot)
            if joint and request.return_frames and result.frames is not None:
                response.imagined_frames = self.composite_images(result.frames)
            response.timing = self.timing_of(result, (time.monotonic() - started) * 1e3)
            response.error = ErrorCode(code=ErrorCode.NONE, message="")
        except Exception as exc:  # every failure becomes an error code; the node stays up
            response.error = self.error_of(exc)
        return response

    # --- diagnostics -------------------------------------------------------------------------------------------------

    def diagnostic_status(self) -> DiagnosticStatus:
        """The common values (model, engine queue, latency) and the control loop's: rate, holding, input, e-stop."""
        status = super().diagnostic_status()
        now = self.now_s()
        run = self._run
        ok, reason = (False, "no sensor intake")
        if self.shared.observations.buffer is not None:
            ok, reason = self.shared.observations.buffer.status(now)
        holding = run.holding if run is not None else False
        hold_reason = run.hold_reason if run is not None else ""
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
            "preview": str(self.preview is not None).lower(),
            **{f"previews_{key}": str(value) for key, value in self.previews.items()},
        }
        status.values += [KeyValue(key=key, value=value) for key, value in values.items()]
        return status
